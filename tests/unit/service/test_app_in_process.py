"""Handlers called in process through the `app` fixture: the OpenAPI document, the one JSON
shape each front end answers from, and the worker protocol's routes."""

from __future__ import annotations

import datetime as dt
import json
import xmlrpc.client

import factories
from dutlab.dispatcher import protocol
from dutlab.dispatcher.protocol import JobResult
from dutlab.service import scheduler
from dutlab.service.lab import job_views
from dutlab.service.models import JobViewingGroup, TestJob

JOB = factories.job_text("in process", extra="context: {arch: amd64}")


def rpc(app, method: str, *params: object) -> object:
    r = app.api("POST", "/RPC2", xmlrpc.client.dumps(params, method, allow_none=True),
                headers={"Content-Type": "text/xml"})
    return xmlrpc.client.loads(r.body, use_builtin_types=True)[0][0]


def qemu_lab() -> None:
    dtype = factories.device_type("qemu")
    factories.device("qemu01", dtype, factories.worker("w1"))


def submit(app) -> int:
    r = app.api("POST", "/api/v1/jobs", {"definition": JOB})
    assert r.status == 201, r.text
    return r.json()["job_ids"][0]


def test_openapi_lists_every_route_with_who_may_call_it(app):
    doc = app.api("GET", "/api/v1/openapi.json").json()
    ops = {(path, method): op for path, methods in doc["paths"].items() for method, op in methods.items()}
    assert ops[("/api/v1/devices/{hostname}", "patch")]["x-dutlab-auth"] == "admin"
    assert ops[("/api/v1/jobs", "post")]["x-dutlab-auth"] == "user"
    # a job number, or a MultiNode sub-id such as 12.1
    assert ops[("/api/v1/jobs/{job_id}", "get")]["parameters"][0]["schema"] == {"type": "string"}
    routes = {(r.rule, r.method) for r in app.wsgi.routes if r.rule.startswith("/api/v1")}
    assert len(ops) == len(routes)
    assert not any(p.startswith("/internal") for p, _ in ops)  # the worker API is documented apart


def test_rest_and_xmlrpc_answer_from_the_one_job_shape(app, db):
    qemu_lab()
    team = factories.group("team", factories.user("carol"))
    job_id = submit(app)
    TestJob.update(visibility="group").where(TestJob.id == job_id).execute()
    JobViewingGroup.create(job=job_id, group=team)
    rest = app.api("GET", f"/api/v1/jobs/{job_id}").json()
    assert rest == job_views.job_json(TestJob.get_by_id(job_id))
    assert rest["submit_time"].endswith("Z") and rest["viewing_groups"] == ["team"]
    shown = rpc(app, "scheduler.jobs.show", str(job_id))
    assert shown["visibility"] == "Group (team)" and shown["device"] is None
    assert isinstance(shown["submit_time"], dt.datetime)
    assert rest["submit_time"].startswith(shown["submit_time"].isoformat())  # XML-RPC: whole seconds
    for lava, ours in (("description", "description"), ("device_type", "device_type"), ("state", "state"),
                       ("health", "health"), ("submitter", "submitter"), ("tags", "tags")):
        assert shown[lava] == rest[ours], lava
    [listed] = rpc(app, "scheduler.jobs.list", None, None, 0, 10, 0, True)
    assert listed["id"] == job_id and listed["actual_device"] is None and listed["start_time"] is None


def test_xmlrpc_device_and_worker_answers_pick_from_the_domain_shapes(app, db):
    qemu_lab()
    device = app.api("GET", "/api/v1/devices/qemu01").json()
    [entry] = rpc(app, "scheduler.devices.list")
    assert entry == {"hostname": "qemu01", "type": device["device_type"], "health": device["health"],
                     "state": device["state"], "current_job": None, "pipeline": True}
    worker = app.api("GET", "/api/v1/workers/w1").json()
    shown = rpc(app, "scheduler.workers.show", "w1")
    assert worker["last_ping"].startswith(shown["last_ping"].isoformat())
    assert (shown["devices"], shown["health"], shown["state"]) == (worker["devices"], worker["health"],
                                                                    worker["state"])


def test_the_worker_protocol_routes(app, db, settings):
    qemu_lab()
    job_id = submit(app)
    assert job_id in scheduler.run_pass(settings).scheduled
    worker = "Worker tok-w1"
    body = {"protocol": protocol.PROTOCOL, "version": "test", "running": [], "wait": 0}
    too_new = app.api("POST", protocol.poll_path("w1"), {**body, "protocol": protocol.PROTOCOL + 1}, token=None,
                      auth=worker)
    assert too_new.status == 409 and too_new.json()["path"] == "protocol" and "upgrade" in too_new.json()["error"]
    [start] = app.api("POST", protocol.poll_path("w1"), body, token=None, auth=worker).json()["start"]
    job = f"Job {start['token']}"
    fetched = app.api("GET", protocol.job_path(job_id), token=None, auth=job).json()
    assert fetched["protocol"] == protocol.PROTOCOL and "qemu" in fetched["device"]
    running = app.api("POST", protocol.job_path(job_id, "state"), {"state": "Running"}, token=None, auth=job)
    assert running.json() == {"id": job_id, "state": "Running"}
    line = json.dumps({"dt": "2026-01-01T00:00:00", "lvl": "target", "msg": "hello"})
    logged = app.api("POST", protocol.job_path(job_id, "logs"), {"index": 0, "lines": [line]}, token=None, auth=job)
    assert logged.json() == {"line_count": 1}
    finish = protocol.job_path(job_id, "finish")
    early = app.api("POST", finish, JobResult("pass").finish_body("", 2), token=None, auth=job)
    assert early.status == 409 and early.json()["line_count"] == 1  # a log line is missing
    bad = app.api("POST", finish, {"result": "maybe"}, token=None, auth=job)
    assert bad.status == 400 and bad.json()["path"] == "result"
    failed = JobResult.failed("Infrastructure", "power on failed").finish_body("steps: []", 1)
    assert app.api("POST", finish, failed, token=None, auth=job).json() == {"id": job_id, "state": "Finished"}
    # a second report of the same end is refused and changes nothing (protocol 1: a 200, as before)
    again = app.api("POST", finish, JobResult("pass").finish_body("", 1), token=None, auth=job)
    assert again.status == 409 and again.json()["state"] == "Finished"
    assert app.api("POST", finish, JobResult("pass").finish_body("", 1), token=None, auth=job,
                   headers={"Dutlab-Protocol": "1"}).status == 200
    late = app.api("POST", protocol.job_path(job_id, "logs"), {"index": 1, "lines": [line]}, token=None, auth=job)
    assert late.status == 409 and "already Finished (Incomplete)" in late.json()["error"]
    assert app.api("POST", protocol.job_path(job_id, "state"), {"state": "Running"}, token=None,
                   auth=job).status == 409
    done = app.api("GET", f"/api/v1/jobs/{job_id}").json()
    assert (done["health"], done["error_type"], done["error_msg"]) == ("Incomplete", "Infrastructure",
                                                                       "power on failed")
    assert app.api("GET", f"/api/v1/jobs/{job_id}/description").text == "steps: []"
    assert app.api("GET", "/api/v1/devices/qemu01").json()["health"] == "Unknown"  # infrastructure: re-check
