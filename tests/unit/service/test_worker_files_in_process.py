"""Per-worker files and the pipeline part of the one verdict, in process (the `app` fixture):
REST and XML-RPC over the same rows, checks with paths, the job package, the protocol's advice,
and the submission cache that a template edit on disk invalidates."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path

import factories
from dutlab.dispatcher import protocol
from dutlab.service import auth, devicecfg
from dutlab.service.models import Device, TestJob
from dutlab.service.states import DeviceState, JobState

ENV = "# the lab's proxy\noverrides: {http_proxy: 'http://proxy.lab:3128'}\n"


def rpc(app, method: str, *params: object) -> object:
    r = app.api("POST", "/RPC2", xmlrpc.client.dumps(params, method, allow_none=True),
                headers={"Content-Type": "text/xml"})
    try:
        return xmlrpc.client.loads(r.body, use_builtin_types=True)[0][0]
    except xmlrpc.client.Fault as fault:
        return fault


def test_files_are_stored_as_given_checked_and_shared_by_rest_and_xmlrpc(app, db):
    factories.worker("w1")
    put = app.api("PUT", "/api/v1/workers/w1/files/env", ENV, headers={"Content-Type": "text/plain"})
    assert put.status == 200 and put.json() == {"hostname": "w1", "kind": "env", "text": ENV}
    assert rpc(app, "scheduler.workers.get_env", "w1") == ENV.encode()
    assert rpc(app, "scheduler.workers.show", "w1")["default_env"] is False
    assert rpc(app, "scheduler.workers.set_config", "w1", "dispatcher_tftp_ip: 192.0.2.4\n") is True
    assert app.api("GET", "/api/v1/workers/w1/files/config").json()["text"] == "dispatcher_tftp_ip: 192.0.2.4\n"
    bad = app.api("PUT", "/api/v1/workers/w1/files/config", {"text": "dispatcher_tftp_ipp: x\n"})
    assert bad.status == 400 and bad.json()["path"] == "dispatcher_tftp_ipp"
    assert "LAVA's dispatcher.yaml keys are" in bad.json()["error"]
    assert app.api("PUT", "/api/v1/workers/w1/files/certificate", {"text": ""}).status == 400
    assert app.api("GET", "/api/v1/workers/nope/files/env").status == 404
    fault = rpc(app, "scheduler.workers.set_env_dut", "w1", "purge: true\n")
    assert isinstance(fault, xmlrpc.client.Fault) and fault.faultCode == 400
    assert app.api("PUT", "/api/v1/workers/w1/files/env", {"text": ""}).json()["text"] == ""  # deleted
    fault = rpc(app, "scheduler.workers.get_env", "w1")
    assert (fault.faultCode, fault.faultString) == (404, "Worker 'w1' does not have an environment")


def test_the_job_package_carries_the_workers_files_and_the_compatibility(app, db):
    worker = factories.worker("w1")
    factories.device("qemu01", factories.device_type("qemu"), worker)
    app.api("PUT", "/api/v1/workers/w1/files/env", {"text": ENV})
    job_id = app.api("POST", "/api/v1/jobs", {"definition": factories.job_text()}).json()["job_ids"][0]
    assert TestJob.get_by_id(job_id).pipeline_compatibility == 1
    token = "job-token"
    device = Device.get(Device.hostname == "qemu01")
    TestJob.update(state=JobState.SCHEDULED, actual_device=device, worker=worker,
                   token_hash=auth.hash_secret(token)).where(TestJob.id == job_id).execute()
    Device.update(state=DeviceState.RESERVED, current_job=job_id).where(Device.id == device.id).execute()
    package = app.api("GET", f"/internal/v1/jobs/{job_id}", auth=f"Job {token}").json()
    assert package["env"] == {"purge": False, "removes": [], "overrides": {"http_proxy": "http://proxy.lab:3128"}}
    assert (package["dispatcher"], package["env_dut"]["overrides"]) == ({}, {})
    assert package["compatibility"] == 1 and package["server_version"]


def test_a_worker_speaking_a_newer_protocol_is_told_to_upgrade_the_server(app, db):
    factories.worker("w1")
    newer = app.api("POST", "/internal/v1/workers/w1/poll", {"protocol": protocol.PROTOCOL + 1},
                    auth="Worker tok-w1")
    assert newer.status == 409 and "upgrade dutlab on the server" in newer.json()["error"]
    older = app.api("POST", "/internal/v1/workers/w1/poll", {"protocol": 0}, auth="Worker tok-w1")
    assert older.status == 409 and older.json()["error"].endswith("upgrade dutlab on this worker")


def test_a_template_edited_on_disk_changes_the_verdict(app, db, settings, monkeypatch):
    """Verdicts are cached per definition and rendered configuration; the template folders' state
    is part of the key, so an admin's edit is seen by the submissions after it (at once here:
    the folders are looked at on every submission instead of once a second)."""
    monkeypatch.setattr(devicecfg, "STATE_TTL", 0.0)
    admin_dir = Path(settings.template_dirs[0])
    admin_dir.mkdir(parents=True, exist_ok=True)
    template = admin_dir / "lab.jinja2"
    template.write_text("{% extends 'qemu.jinja2' %}\n")
    device = factories.device("lab01", factories.device_type("lab", template="lab"), factories.worker("w1"))
    device.dictionary = "{% extends 'lab.jinja2' %}\n"
    device.save()
    job = factories.job_text(device_type="lab") + "- command: {name: relay_on}\n"
    refused = app.api("POST", "/api/v1/jobs/validate", {"definition": job}).json()
    assert refused["valid"] is False and refused["path"] == "actions[1].command"
    assert "the device has no user command 'relay_on'" in refused["error"]
    assert app.api("POST", "/api/v1/jobs/validate", {"definition": job}).json() == refused  # from the cache
    before = devicecfg.templates_state([admin_dir])
    template.write_text("{% extends 'qemu.jinja2' %}\n{% set user_commands = {'relay_on': {'do': 'relay 1'}} %}\n")
    assert devicecfg.templates_state([admin_dir]) != before
    assert app.api("POST", "/api/v1/jobs/validate", {"definition": job}).json()["valid"] is True
