"""What is particular to each dutlab.lab module: dictionaries, owners, health reasons, secrets
shown once, passwords, job validation and submission, the info modules. Real server, real Ansible."""

from __future__ import annotations

import pytest
from ansible_harness import Unsafe, api_play, play

from labkit import http

pytestmark = pytest.mark.ansible

DICT_256 = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
DICT_512 = "{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n"
JOB = """\
job_name: ansible module test
device_type: qemu
visibility: public
timeouts:
  job: {minutes: 5}
context: {arch: amd64}
actions:
- boot: {method: qemu, media: tmpfs, prompts: ['# ']}
"""


def run_tasks(lab, tmp_path, tasks):
    return play(api_play(tasks, url=lab.url, token=lab.admin_token), tmp_path)


def test_device_dictionary_owners_health_and_errors(lab_server, tmp_path):
    lab_server.manage("users", "add", "alice", "--passwd", "pw-alice")
    lab_server.manage("groups", "add", "team")
    dev = "dutlab.lab.device"
    run = run_tasks(lab_server, tmp_path, [
        {"name": "type", "dutlab.lab.device_type": {"name": "qemu", "health_checks_disabled": True}},
        {"name": "worker", "dutlab.lab.worker": {"name": "w1"}},
        {"name": "create", dev: {"hostname": "d1", "device_type": "qemu", "worker": "w1",
                                 "dictionary": Unsafe(DICT_256), "owner": "alice"}},
        {"name": "same dictionary", dev: {"hostname": "d1", "dictionary": Unsafe(DICT_256)}},
        {"name": "new dictionary", dev: {"hostname": "d1", "dictionary": Unsafe(DICT_512)}, "diff": True},
        {"name": "group owns it", dev: {"hostname": "d1", "owner_group": "team"}, "diff": True},
        {"name": "group owns it again", dev: {"hostname": "d1", "owner_group": "team"}},
        {"name": "maintenance", dev: {"hostname": "d1", "health": "Maintenance", "reason": "new SD card"}},
        {"name": "maintenance again", dev: {"hostname": "d1", "health": "Maintenance", "reason": "other"}},
        {"name": "detach", dev: {"hostname": "d1", "worker": ""}, "diff": True},
        {"name": "bad dictionary", dev: {"hostname": "d1", "dictionary": Unsafe("{% extends 'nope.jinja2' %}")},
         "ignore_errors": True},
        {"name": "unknown type", dev: {"hostname": "d2", "device_type": "nope"}, "ignore_errors": True},
        {"name": "info", "dutlab.lab.device_info": {"hostname": "d1", "dictionary": True}},
        {"name": "info by type", "dutlab.lab.device_info": {"device_type": "qemu"}},
        {"name": "info of a missing device", "dutlab.lab.device_info": {"hostname": "d9"}, "ignore_errors": True},
    ])
    assert run["create"]["changed"] and run["create"]["device"]["owner_user"] == "alice"
    assert not run["same dictionary"]["changed"]
    diff = run["new dictionary"]["diff"]
    assert diff["before"]["dictionary"] == DICT_256 and diff["after"]["dictionary"] == DICT_512
    owner = run["group owns it"]
    assert owner["changed"] and owner["device"]["owner_group"] == "team" and owner["device"]["owner_user"] is None
    assert owner["diff"]["before"]["owner_user"] == "alice" and owner["diff"]["after"]["owner_user"] is None
    assert not run["group owns it again"]["changed"]
    assert run["maintenance"]["changed"] and not run["maintenance again"]["changed"]
    history = lab_server.api("GET", "/api/v1/devices/d1/health-history").json()["results"]
    assert history[0]["new_health"] == "Maintenance" and history[0]["reason"] == "new SD card"
    assert run["detach"]["device"]["worker"] is None and run["detach"]["diff"]["before"]["worker"] == "w1"
    bad = run["bad dictionary"]
    assert bad["failed"] and bad["status"] == 400 and "PATCH /api/v1/devices/d1: 400" in bad["msg"], bad["msg"]
    assert "dictionary" in bad["msg"]
    unknown = run["unknown type"]
    assert unknown["status"] == 400 and unknown["msg"].startswith("POST /api/v1/devices: 400 "), unknown["msg"]
    assert "'nope'" in unknown["msg"] and "device 'd2'" in unknown["msg"], unknown["msg"]
    [info] = run["info"]["devices"]
    assert info["hostname"] == "d1" and info["dictionary"] == DICT_512 and not run["info"]["changed"]
    assert [d["hostname"] for d in run["info by type"]["devices"]] == ["d1"]
    missing = run["info of a missing device"]
    assert missing["status"] == 404 and "GET /api/v1/devices/d9: 404" in missing["msg"]


def test_worker_token_is_returned_once_and_can_be_renewed(lab_server, tmp_path):
    wk = "dutlab.lab.worker"
    run = run_tasks(lab_server, tmp_path, [
        {"name": "create (check)", wk: {"name": "w1"}, "check_mode": True},
        {"name": "create", wk: {"name": "w1", "description": "rack 1"}},
        {"name": "again", wk: {"name": "w1", "description": "rack 1"}},
        {"name": "maintenance", wk: {"name": "w1", "health": "Maintenance", "reason": "UPS"}},
        {"name": "renew (check)", wk: {"name": "w1", "regenerate_token": True}, "check_mode": True},
        {"name": "renew", wk: {"name": "w1", "regenerate_token": True}},
    ])
    assert "token" not in run["create (check)"]
    first = run["create"]["token"]
    assert first and "token" not in run["again"] and not run["again"]["changed"]
    assert run["maintenance"]["worker"]["health"] == "Maintenance"
    assert run["renew (check)"]["changed"] and "token" not in run["renew (check)"]
    second = run["renew"]["token"]
    assert run["renew"]["changed"] and second and second != first
    # the new token is the worker's; the first one stopped working
    poll = {"running": [], "wait": 0, "version": "test"}
    ok = http("POST", f"{lab_server.url}/internal/v1/workers/w1/poll", poll, auth=f"Worker {second}")
    old = http("POST", f"{lab_server.url}/internal/v1/workers/w1/poll", poll, auth=f"Worker {first}")
    assert old.status == 403 and ok.status != 403, (ok.status, ok.text, old.text)


def test_user_password_groups_and_staff(lab_server, tmp_path):
    lab_server.manage("groups", "add", "team")
    us = "dutlab.lab.user"
    run = run_tasks(lab_server, tmp_path, [
        {"name": "create", us: {"username": "carol", "password": "first-pw", "groups": ["team"], "staff": True}},
        {"name": "again on_create", us: {"username": "carol", "password": "other-pw", "groups": ["team"],
                                         "staff": True}},
        {"name": "same password always", us: {"username": "carol", "password": "first-pw",
                                              "update_password": "always"}},
        {"name": "new password always (check)", us: {"username": "carol", "password": "second-pw",
                                                     "update_password": "always"}, "check_mode": True, "diff": True},
        {"name": "new password always", us: {"username": "carol", "password": "second-pw",
                                             "update_password": "always"}},
        {"name": "new password again", us: {"username": "carol", "password": "second-pw",
                                            "update_password": "always"}},
        {"name": "log in with it", "ansible.builtin.uri": {
            "url": lab_server.url + "/api/v1/tokens", "method": "POST", "body_format": "json",
            "body": {"username": "carol", "password": "second-pw"}, "status_code": [201, 401]}},
        {"name": "not staff", us: {"username": "carol", "staff": False}},
        {"name": "inactive", us: {"username": "carol", "active": False}},
    ])
    created = run["create"]["user"]
    assert created["groups"] == ["staff", "team"] and created["is_staff"] and "password" not in created
    assert run["create"]["password_changed"]
    assert not run["again on_create"]["changed"]
    assert not run["same password always"]["changed"]
    check = run["new password always (check)"]
    assert check["changed"] and check["password_changed"] and check["diff"]["after"]["password_changed"]
    assert "second-pw" not in str(check["diff"])
    assert run["new password always"]["changed"] and run["new password always"]["password_changed"]
    assert not run["new password again"]["changed"]
    assert run["log in with it"]["status"] == 201, run["log in with it"]
    assert run["not staff"]["user"]["groups"] == ["team"]
    assert run["inactive"]["user"]["is_active"] is False


def test_token_secret_is_shown_once_and_works(lab_server, tmp_path):
    lab_server.manage("users", "add", "ci-bot", "--passwd", "pw-ci-bot")
    tk = "dutlab.lab.token"
    run = run_tasks(lab_server, tmp_path, [
        {"name": "create (check)", tk: {"user": "ci-bot", "description": "gitlab"}, "check_mode": True},
        {"name": "create", tk: {"user": "ci-bot", "description": "gitlab"}},
        {"name": "again", tk: {"user": "ci-bot", "description": "gitlab"}},
        {"name": "given secret", tk: {"user": "ci-bot", "description": "from-lava", "secret": "lava-token-1234"}},
        {"name": "own token", tk: {"description": "admin laptop"}},
    ])
    assert "secret" not in run["create (check)"]
    secret = run["create"]["secret"]
    assert run["create"]["token"]["user"] == "ci-bot" and "secret" not in run["create"]["token"]
    assert "secret" not in run["again"] and not run["again"]["changed"]
    assert http("GET", lab_server.url + "/api/v1/system/whoami", token=secret).json()["username"] == "ci-bot"
    lava = http("GET", lab_server.url + "/api/v1/system/whoami", token="lava-token-1234").json()
    assert lava["username"] == "ci-bot"
    assert run["own token"]["token"]["user"] == "admin"


def test_job_validate_submit_and_info(lab_server, tmp_path):
    lab_server.manage("device-types", "add", "qemu", "--disable-health-checks")
    lab_server.manage("workers", "add", "w1")
    (tmp_path / "d.jinja2").write_text(DICT_256)
    lab_server.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1",
                      "--dictionary", str(tmp_path / "d.jinja2"))
    (tmp_path / "job.yaml").write_text(JOB)
    job = "dutlab.lab.job"
    run = run_tasks(lab_server, tmp_path, [
        {"name": "validate", job: {"src": str(tmp_path / "job.yaml")}, "check_mode": True},
        {"name": "validate a bad one", job: {"definition": JOB.replace("method: qemu", "method: qemuu")},
         "check_mode": True, "ignore_errors": True},
        {"name": "submit", job: {"src": str(tmp_path / "job.yaml")}},
        {"name": "submit a dict", job: {"definition": {"job_name": "dict", "device_type": "qemu",
                                                       "visibility": "public", "timeouts": {"job": {"minutes": 5}},
                                                       "context": {"arch": "amd64"},
                                                       "actions": [{"boot": {"method": "qemu", "media": "tmpfs",
                                                                             "prompts": ["# "]}}]}}},
        {"name": "submit a bad one", job: {"definition": "job_name: x\n"}, "ignore_errors": True},
        {"name": "wait (no worker runs it)", job: {"src": str(tmp_path / "job.yaml"), "wait": True,
                                                   "wait_timeout": 2, "poll_interval": 1}, "ignore_errors": True},
        {"name": "info one", "dutlab.lab.job_info": {"id": 1, "results": True}},
        {"name": "info list", "dutlab.lab.job_info": {"state": "Submitted"}},
    ])
    assert run["validate"]["valid"] and run["validate"]["changed"] and "id" not in run["validate"]
    bad = run["validate a bad one"]
    assert bad["failed"] and not bad["valid"] and "qemuu" in bad["msg"], bad
    assert "actions[0].boot.method" in bad["msg"], bad["msg"]
    assert lab_server.api("GET", "/api/v1/jobs").json()["count"] == 3  # check mode submitted nothing
    submitted = run["submit"]
    assert submitted["changed"] and submitted["id"] == 1 and submitted["job_ids"] == [1]
    assert submitted["state"] == "Submitted" and submitted["health"] == "Unknown"
    assert run["submit a dict"]["id"] == 2
    rejected = run["submit a bad one"]
    assert rejected["failed"] and rejected["status"] == 400 and "POST /api/v1/jobs: 400" in rejected["msg"]
    waited = run["wait (no worker runs it)"]
    assert waited["failed"] and "not Finished after 2 s" in waited["msg"] and waited["id"] == 3
    [one] = run["info one"]["jobs"]
    assert one["id"] == 1 and one["results"] == [] and not run["info one"]["changed"]
    assert [j["id"] for j in run["info list"]["jobs"]] == [3, 2, 1]
