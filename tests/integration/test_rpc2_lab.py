"""lavacli 3.1.0 managing the lab over /RPC2: device types, devices, dictionaries, tags, workers,
and system maintenance/active. Output is compared with what lavacli prints against LAVA."""

from __future__ import annotations

import json

import pytest
import yaml
from test_lavacli import QEMU_DICT, FakeWorker, cli, submit  # noqa: F401 - cli is a fixture

HEALTH_CHECK = """\
job_name: custom health check
device_type: qemu
visibility: public
timeouts:
  job: {minutes: 5}
context: {arch: amd64}
actions:
- boot: {method: qemu, media: tmpfs, prompts: ['# ']}
"""


@pytest.fixture
def admin(cli, lab_server):  # noqa: F811 - the imported fixture
    """lavacli as admin, with device type qemu and worker w1 made through lavacli itself."""
    cli.run("device-types", "add", "qemu", "--description", "QEMU guests")
    cli.run("workers", "add", "w1", "--description", "first")
    return cli


def history(lab, hostname: str) -> list[dict]:
    body = lab.api("GET", f"/api/v1/devices/{hostname}/health-history").json()
    return body["results"]


def test_device_types(admin, lab_server, tmp_path):
    lavacli = admin
    assert lavacli.run("device-types", "list").stdout == "Device-Types:\n* qemu (0)\n"
    assert lavacli.run("device-types", "show", "qemu").stdout.splitlines() == [
        "name            : qemu", "description     : QEMU guests", "display         : True",
        "health disabled : False", "aliases         : []", "devices         : []"]
    lavacli.run("device-types", "update", "qemu", "--health-frequency", "12", "--health-denominator", "jobs",
            "--health-disabled")
    data = yaml.safe_load(lavacli.run("device-types", "show", "qemu", "--yaml").stdout)
    assert data == {"name": "qemu", "description": "QEMU guests", "display": True, "health_disabled": True,
                    "health_denominator": "jobs", "health_frequency": 12, "aliases": [], "devices": [],
                    "default_template": True, "permissions": []}
    err = lavacli.fails("device-types", "add", "qemu")
    assert err.startswith("Unable to call 'device-types.add': <Fault 400: \"Bad request:"), err
    lavacli.run("device-types", "add", "hidden", "--hide")
    assert json.loads(lavacli.run("device-types", "list", "--json").stdout) == [
        {"name": "qemu", "devices": 0, "installed": True, "template": True}]
    listed = json.loads(lavacli.run("device-types", "list", "--all", "--json").stdout)
    assert {"name": "hidden", "devices": 0, "installed": True, "template": False} in listed

    # templates: the shipped one, an admin override, and back
    shipped = lavacli.run("device-types", "template", "get", "qemu").stdout
    assert "{% extends 'base.jinja2' %}" in shipped
    override = tmp_path / "qemu.jinja2"
    override.write_text(shipped.replace("{% block body %}", "{# site override #}\n{% block body %}"))
    lavacli.run("device-types", "template", "set", "qemu", str(override))
    assert "site override" in lavacli.run("device-types", "template", "get", "qemu").stdout
    assert yaml.safe_load(lavacli.run("device-types", "show", "qemu", "--yaml").stdout)["default_template"] is False
    broken = tmp_path / "broken.jinja2"
    broken.write_text("{% if %}")
    assert "not valid jinja2" in lavacli.fails("device-types", "template", "set", "qemu", str(broken))
    lavacli.run("device-types", "template", "delete", "qemu")
    assert lavacli.run("device-types", "template", "get", "qemu").stdout == shipped
    assert "<Fault 404:" in lavacli.fails("device-types", "template", "get", "hidden")

    # health checks: the shipped file, the type's own (validated like a job), and back
    shipped_hc = lavacli.run("device-types", "health-check", "get", "qemu").stdout
    assert "job_name" in shipped_hc
    hc = tmp_path / "hc.yaml"
    hc.write_text(HEALTH_CHECK)
    lavacli.run("device-types", "health-check", "set", "qemu", str(hc))
    assert lavacli.run("device-types", "health-check", "get", "qemu").stdout == HEALTH_CHECK
    hc.write_text(HEALTH_CHECK.replace("method: qemu", "method: u-boot"))
    assert "<Fault 400:" in lavacli.fails("device-types", "health-check", "set", "qemu", str(hc))
    lavacli.run("device-types", "health-check", "delete", "qemu")
    assert lavacli.run("device-types", "health-check", "get", "qemu").stdout == shipped_hc
    assert lavacli.fails("device-types", "show", "nope") == \
        "Unable to call 'device-types.show': <Fault 404: \"Device-type 'nope' was not found.\">"


def test_devices_dictionaries_and_tags(admin, lab_server, tmp_path):
    lavacli = admin
    lavacli.run("devices", "add", "qemu01", "--type", "qemu", "--worker", "w1", "--description", "first qemu")
    assert lavacli.run("devices", "list").stdout == "Devices:\n* qemu01 (qemu): Idle,Unknown\n"
    assert lavacli.run("devices", "show", "qemu01").stdout.splitlines() == [
        "name        : qemu01", "device-type : qemu", "state       : Idle", "health      : Unknown",
        "health job  : True", "description : first qemu", "pipeline    : True", "device-dict : False",
        "worker      : w1", "current job : None", "tags        : []"]
    assert json.loads(lavacli.run("devices", "list", "--json").stdout) == [
        {"hostname": "qemu01", "type": "qemu", "health": "Unknown", "state": "Idle", "current_job": None,
         "pipeline": True}]
    err = lavacli.fails("devices", "add", "qemu01", "--type", "qemu", "--worker", "w1")
    assert err.startswith("Unable to call 'devices.add': <Fault 400: \"Bad request:"), err
    assert lavacli.fails("devices", "add", "qemu02", "--type", "nope", "--worker", "w1") == \
        "Unable to call 'devices.add': <Fault 404: \"Device-type 'nope' was not found.\">"

    # dictionaries: set, get, one field, rendered with a job context, delete
    path = tmp_path / "qemu01.jinja2"
    path.write_text(QEMU_DICT)
    lavacli.run("devices", "dict", "set", "qemu01", str(path))
    assert lavacli.run("devices", "dict", "get", "qemu01").stdout == QEMU_DICT
    assert lavacli.run("devices", "dict", "get", "qemu01", "memory").stdout == "256\n"
    rendered = lavacli.run("devices", "dict", "get", "qemu01", "--render", "--context", "{arch: arm64}").stdout
    config = yaml.safe_load(rendered)
    assert config["hostname"] == "qemu01" and "-m 256" in config["actions"]["boot"]["methods"]["qemu"][
        "parameters"]["options"]
    field = "actions.boot.methods.qemu.parameters.command"
    assert lavacli.run("devices", "dict", "get", "qemu01", field, "--render", "--context", "arch: arm64").stdout == \
        "qemu-system-aarch64\n"
    assert lavacli.run("devices", "dict", "get", "qemu01", field, "--render", "--context", "arch: amd64").stdout == \
        "qemu-system-x86_64\n"
    assert "device-dict : True" in lavacli.run("devices", "show", "qemu01").stdout
    assert lavacli.run("device-types", "devices", "qemu").stdout == "Devices:\n* qemu01 : Idle,Unknown\n"
    assert lavacli.run("device-types", "devices", "qemu", "--health", "GOOD").stdout == "Devices:\n"
    path.write_text("{% extends 'qemu.jinja2' %}\n{% set memory = %}\n")
    assert "<Fault 400:" in lavacli.fails("devices", "dict", "set", "qemu01", str(path))
    lavacli.run("devices", "dict", "delete", "qemu01")
    assert lavacli.fails("devices", "dict", "get", "qemu01") == \
        "Unable to call 'devices.dict': <Fault 404: \"Device 'qemu01' does not have a configuration\">"

    # update: the 9-argument form of a 2025.12 server, with a reason kept in the health history
    lavacli.run("devices", "update", "qemu01", "--description", "renamed", "--health", "GOOD", "--reason",
            "checked by hand")
    info = yaml.safe_load(lavacli.run("devices", "show", "qemu01", "--yaml").stdout)
    assert (info["description"], info["health"]) == ("renamed", "Good")
    assert history(lab_server, "qemu01")[0]["reason"] == "checked by hand"
    lavacli.run("workers", "add", "w2")
    lavacli.run("devices", "update", "qemu01", "--worker", "w2", "--type", "qemu")
    assert yaml.safe_load(lavacli.run("devices", "show", "qemu01", "--yaml").stdout)["worker"] == "w2"
    lavacli.run("devices", "maintenance", "qemu01", "--reason", "new cable")
    assert "health      : Maintenance" in lavacli.run("devices", "show", "qemu01").stdout
    assert history(lab_server, "qemu01")[0]["reason"] == "new cable"
    lavacli.run("devices", "update", "qemu01", "--health", "RETIRED")
    assert lavacli.run("devices", "list").stdout == "Devices:\n"
    assert lavacli.run("devices", "list", "--all").stdout == "Devices:\n* qemu01 (qemu): Idle,Retired\n"

    # device tags: created on first use
    lavacli.run("devices", "tags", "add", "qemu01", "fast")
    lavacli.run("devices", "tags", "add", "qemu01", "arm")
    assert lavacli.run("devices", "tags", "list", "qemu01").stdout == "Tags:\n* arm\n* fast\n"
    assert json.loads(lavacli.run("devices", "tags", "list", "qemu01", "--json").stdout) == ["arm", "fast"]
    lavacli.run("devices", "tags", "delete", "qemu01", "arm")
    assert lavacli.run("devices", "tags", "list", "qemu01").stdout == "Tags:\n* fast\n"
    assert "<Fault 404:" in lavacli.fails("devices", "tags", "delete", "qemu01", "arm")
    assert lavacli.run("tags", "list").stdout == "Tags:\n* arm\n* fast\n"
    assert lavacli.fails("devices", "show", "nope") == \
        "Unable to call 'devices.show': <Fault 404: \"Device 'nope' was not found.\">"


def test_tags(admin):
    lavacli = admin
    lavacli.run("tags", "add", "usb", "--description", "has a USB hub")
    lavacli.run("tags", "add", "fast")
    assert lavacli.run("tags", "list").stdout == "Tags:\n* fast\n* usb (has a USB hub)\n"
    assert lavacli.run("tags", "show", "usb").stdout == "name       : usb\ndescription: has a USB hub\ndevices    :\n"
    assert json.loads(lavacli.run("tags", "list", "--json").stdout) == [
        {"name": "fast", "description": ""}, {"name": "usb", "description": "has a USB hub"}]
    lavacli.run("tags", "delete", "fast")
    assert lavacli.fails("tags", "show", "fast") == \
        "Unable to call 'tags.show': <Fault 404: \"Tag 'fast' was not found.\">"


def test_workers_and_system_maintenance(admin, lab_server, tmp_path):
    lavacli = admin
    lavacli.run("workers", "add", "w2", "--disabled")
    assert lavacli.run("workers", "list").stdout == "Workers:\n* w1\n"  # w2 is Retired
    assert lavacli.run("workers", "list", "--all").stdout == "Workers:\n* w1\n* w2\n"
    lavacli.run("workers", "update", "w2", "--health", "ACTIVE", "--job-limit", "2", "--description", "second")
    assert lavacli.run("workers", "show", "w2").stdout.splitlines() == [
        "hostname    : w2", "description : second", "state       : Offline", "health      : Active",
        "devices     : ", "last ping   : 19700101T00:00:00", "job limit   : 2", "version     : None"]
    assert "<Fault 400:" in lavacli.fails("workers", "add", "w1")

    # a running job on w1: `workers maintenance --force` cancels it, as against LAVA
    lavacli.run("device-types", "update", "qemu", "--health-disabled")  # no health check before our job
    token = lab_server.manage("workers", "token", "w1").stdout.strip().split()[-1]
    worker = FakeWorker(lab_server, "w1", token)
    path = tmp_path / "qemu01.jinja2"
    path.write_text(QEMU_DICT)
    lavacli.run("devices", "add", "qemu01", "--type", "qemu", "--worker", "w1", "--health", "GOOD")
    lavacli.run("devices", "dict", "set", "qemu01", str(path))
    job_id = submit(lavacli, tmp_path)
    assert worker.start() == job_id
    data = json.loads(lavacli.run("workers", "show", "w1", "--json").stdout)
    assert (data["state"], data["version"], data["devices"]) == ("Online", "fake", ["qemu01"])
    assert data["last_ping"].startswith("20")  # dateTime .value, as lavacli prints it
    out = lavacli.run("workers", "maintenance", "w1", "--force", "--no-wait").stdout
    assert out == f"-> waiting for job {job_id}\n--> canceling\n"
    assert json.loads(lavacli.run("jobs", "show", str(job_id), "--json").stdout)["state"] == "Canceling"
    worker.finish(job_id, "fail", "Canceled", "canceled")
    assert json.loads(lavacli.run("jobs", "show", str(job_id), "--json").stdout)["health"] == "Canceled"
    assert "health      : Maintenance" in lavacli.run("workers", "show", "w1").stdout

    # system maintenance / active go through workers.update for every worker
    out = lavacli.run("system", "maintenance", "--exclude", "w2").stdout
    assert out == "Maintenance workers:\n* w1\n* w2 [SKIP]\nWait for devices:\n* qemu01\n"
    out = lavacli.run("system", "active").stdout
    assert out == "Activate workers:\n* w1\n* w2\n"
    healths = {w: yaml.safe_load(lavacli.run("workers", "show", w, "--yaml").stdout)["health"] for w in ("w1", "w2")}
    assert healths == {"w1": "Active", "w2": "Active"}
    # leaving maintenance makes Good devices Unknown so that a health check proves them again
    assert yaml.safe_load(lavacli.run("devices", "show", "qemu01", "--yaml").stdout)["health"] == "Unknown"
    assert lavacli.fails("workers", "show", "nope") == \
        "Unable to call 'workers.show': <Fault 404: \"Worker 'nope' was not found.\">"


def test_non_admins_may_read_but_not_change(admin, lab_server):
    bob = lab_server.add_user("bob")
    admin.identity("bob", "bob", bob)
    assert admin.run("device-types", "list", identity="bob").stdout == "Device-Types:\n* qemu (0)\n"
    assert admin.run("workers", "list", identity="anonymous").stdout == "Workers:\n* w1\n"
    for args, perm in ((("workers", "update", "w1", "--health", "MAINTENANCE"), "change_worker"),
                       (("device-types", "update", "qemu", "--hide"), "change_devicetype"),
                       (("tags", "add", "x"), "add_tag"),
                       (("system", "active"), "change_worker")):
        err = admin.fails(*args, identity="bob")
        assert err.endswith(f"<Fault 403: \"User 'bob' is missing permission lava_scheduler_app.{perm}.\">"), err
    err = admin.fails("tags", "add", "x", identity="anonymous")
    assert err.endswith("<Fault 401: 'Authentication with user and token required for this API.'>")

