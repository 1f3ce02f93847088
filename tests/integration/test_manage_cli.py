"""`dutlab-server manage ...` against a real migrated database and a real server on loopback."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess

import pytest

from labkit import BIN, REPO

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
JOB_TEXT = ("job_name: cli\ndevice_type: qemu\nvisibility: public\ntimeouts: {job: {minutes: 5}}\n"
            "context: {arch: amd64}\nactions:\n- boot: {method: qemu, media: tmpfs, prompts: ['# ']}\n")


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def fails(lab, *args: str, contains: str = "") -> str:
    """The verb exits 1 with one line on stderr (no traceback); return that line."""
    proc = lab.manage(*args, check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert contains in lines[0], lines[0]
    return lines[0]


def rows(lab, *args: str) -> list[dict]:
    return json.loads(lab.manage(*args, "--json").stdout)


@pytest.fixture
def lab(lab_server, tmp_path):
    """qemu device type, worker w1 and a dictionary file."""
    lab_server.manage("device-types", "add", "qemu", "--disable-health-checks")
    lab_server.manage("workers", "add", "w1")
    lab_server.dictionary = tmp_path / "qemu.jinja2"
    lab_server.dictionary.write_text(QEMU_DICT)
    return lab_server


def test_users(lab_server):
    lab = lab_server
    out = lab.manage("users", "add", "alice", "--email", "alice@example.org").stdout
    password = out.split()[-1]
    r = lab.api("POST", "/api/v1/tokens", {"description": "login"}, token=None, auth=basic("alice", password))
    assert r.status == 201, r.body
    token = r.json()["secret"]
    assert lab.api("GET", "/api/v1/system/whoami", token=token).json() == {"username": "alice"}
    r = lab.api("POST", "/api/v1/tokens", {"username": "alice", "password": password}, token=None)
    assert r.status == 201 and r.json()["user"] == "alice"

    lab.manage("users", "add", "bob", "--passwd", "pw-bob", "--staff", "--superuser")
    bob = lab.manage("users", "details", "bob").stdout
    assert "is_superuser : True" in bob and "is_staff     : True" in bob
    lab.manage("users", "update", "bob", "--not-superuser", "--not-staff", "--email", "b@x")
    assert {"is_superuser": False, "is_staff": False, "email": "b@x"}.items() <= _user(lab, "bob").items()
    lab.manage("users", "update", "alice", "--not-active")
    r = lab.api("POST", "/api/v1/tokens", {}, token=None, auth=basic("alice", password))
    assert r.status == 401 and r.json()["error"]
    assert lab.api("GET", "/api/v1/system/whoami", token=token).status == 401
    assert [u["username"] for u in rows(lab, "users", "list")] == ["admin", "bob"]
    assert [u["username"] for u in rows(lab, "users", "list", "--all")] == ["admin", "alice", "bob"]
    lab.manage("users", "update", "alice", "--active", "--passwd", "pw-new")
    assert lab.api("POST", "/api/v1/tokens", {}, token=None, auth=basic("alice", "pw-new")).status == 201
    table = list(csv.DictReader(io.StringIO(lab.manage("users", "list", "--csv").stdout)))
    assert table[0]["username"] == "admin" and table[0]["is_superuser"] == "True"
    assert "alice" in lab.manage("users", "list").stdout.splitlines()[2]
    fails(lab, "users", "add", "alice", contains="already exists")
    fails(lab, "users", "details", "nobody", contains="does not exist")
    fails(lab, "users", "add", "bad/name", contains="username")


def _user(lab, name: str) -> dict:
    return lab.api("GET", f"/api/v1/users/{name}").json()


def test_groups(lab_server):
    lab = lab_server
    lab.add_user("alice")
    lab.add_user("bob")
    lab.manage("groups", "add", "team", "--username", "alice", "--submitting")
    lab.manage("groups", "add", "empty")
    lab.manage("groups", "update", "team", "--username", "bob")
    assert rows(lab, "groups", "list") == [
        {"name": "empty", "permissions": [], "members": []},
        {"name": "team", "permissions": ["cancel_resubmit", "submit"], "members": ["alice", "bob"]},
    ]
    assert lab.manage("groups", "list").stdout.split() == ["name", "empty", "team"]
    assert "cancel_resubmit,submit" in lab.manage("groups", "list", "--verbose").stdout
    fails(lab, "groups", "update", "nope", "--username", "bob", contains="group 'nope' does not exist")
    fails(lab, "groups", "add", "team", contains="already exists")
    fails(lab, "groups", "update", "team", "--username", "nobody", contains="user 'nobody'")


def test_permissions_granted_to_a_user_directly(lab, tmp_path):
    """LAVA's per-user permissions: `users update --permission` lets a user with no group cancel
    others' jobs, `--remove-permission` takes it back (the rules in process: test_lab.py)."""
    lab.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", "--dictionary",
               str(lab.dictionary))
    alice, bob = lab.add_user("alice"), lab.add_user("bob")

    def cancel_as_bob() -> int:
        job_id = lab.api("POST", "/api/v1/jobs", {"definition": JOB_TEXT}, token=alice).json()["job_ids"][0]
        return lab.api("POST", f"/api/v1/jobs/{job_id}/cancel", token=bob).status

    assert cancel_as_bob() == 403
    lab.manage("users", "update", "bob", "--permission", "cancel_resubmit")
    assert "permissions  : cancel_resubmit" in lab.manage("users", "details", "bob").stdout
    assert _user(lab, "bob")["groups"] == [] and cancel_as_bob() == 200
    lab.manage("users", "update", "bob", "--remove-permission", "cancel_resubmit")
    assert _user(lab, "bob")["permissions"] == [] and cancel_as_bob() == 403
    lab.manage("groups", "add", "ops", "--username", "alice", "--username", "bob", "--permission", "admin")
    lab.manage("groups", "update", "ops", "--remove-username", "bob", "--remove-permission", "admin",
               "--permission", "submit")
    assert rows(lab, "groups", "list") == [{"name": "ops", "permissions": ["submit"], "members": ["alice"]}]


def test_jobs_rm_removes_finished_jobs_by_age(lab):
    """The CLI wiring of lab/retention.py (ages in days and LAVA's forms; test_retention.py has the rules)."""
    lab.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", "--dictionary",
               str(lab.dictionary))
    ended, queued = (lab.api("POST", "/api/v1/jobs", {"definition": JOB_TEXT}).json()["job_ids"][0] for _ in "ab")
    assert lab.api("POST", f"/api/v1/jobs/{ended}/cancel").json()["state"] == "Finished"
    folder = lab.root / "data" / "jobs" / str(ended)
    assert folder.is_dir()
    assert lab.manage("jobs", "rm", "--older-than", "1").stdout.startswith("removed 0 job(s) finished more than 1")
    dry = lab.manage("jobs", "rm", "--older-than", "0h", "--dry-run").stdout
    assert dry == f"would remove 1 job(s) finished more than 0h ago: {ended} (1 output folder(s))\n"
    assert folder.is_dir() and lab.api("GET", f"/api/v1/jobs/{ended}").status == 200
    out = lab.manage("jobs", "rm", "--older-than", "0").stdout
    assert out == f"removed 1 job(s) finished more than 0 ago: {ended} (1 output folder(s))\n"
    assert not folder.exists() and lab.api("GET", f"/api/v1/jobs/{ended}").status == 404
    assert lab.api("GET", f"/api/v1/jobs/{queued}").json()["state"] == "Submitted"
    fails(lab, "jobs", "rm", "--older-than", "a month", contains="is not a number of days")


def test_createsuperuser_as_django_has_it(lab_server):
    out = lab_server.manage("createsuperuser", "--username", "root2", "--email", "r@x", "--noinput").stdout
    assert out.startswith("superuser 'root2' created; password: ")
    env = {**lab_server.env(), "DJANGO_SUPERUSER_PASSWORD": "pw-of-root3"}
    proc = subprocess.run([str(BIN / "dutlab-server"), "--config", str(lab_server.config), "manage",
                           "createsuperuser", "--username", "root3", "--noinput"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.stdout == "superuser 'root3' created\n", proc.stderr
    r = lab_server.api("POST", "/api/v1/tokens", {}, token=None, auth=basic("root3", "pw-of-root3"))
    assert r.status == 201 and _user(lab_server, "root3")["is_superuser"] is True
    fails(lab_server, "createsuperuser", "--noinput", contains="--username is required")


def test_tokens(lab_server):
    lab = lab_server
    lab.manage("users", "add", "alice", "--passwd", "pw-alice")
    out = lab.manage("tokens", "add", "--user", "alice", "--description", "ci").stdout
    assert len(out.split()) == 1
    secret = out.strip()
    assert lab.api("GET", "/api/v1/system/whoami", token=secret).json() == {"username": "alice"}
    mine = lab.manage("tokens", "add", "-u", "alice", "-d", "lava", "--secret", "migrated-token-0001").stdout
    assert mine.strip() == "migrated-token-0001"
    listed = rows(lab, "tokens", "list", "--user", "alice")
    assert [t["description"] for t in listed] == ["ci", "lava"]
    assert secret not in json.dumps(listed) and listed[0]["prefix"] == secret[:6]
    assert "prefix" in lab.manage("tokens", "list", "-u", "alice", "--csv").stdout.splitlines()[0]
    lab.manage("tokens", "rm", "--token", "migrated-token-0001")
    assert lab.api("GET", "/api/v1/system/whoami", token="migrated-token-0001").status == 401
    assert "deleted 0" in lab.manage("tokens", "rm", "--days", "1").stdout
    lab.manage("tokens", "rm", "--id", str(listed[0]["id"]))
    assert rows(lab, "tokens", "list", "--user", "alice") == []
    fails(lab, "tokens", "add", "--user", "nobody", contains="user 'nobody' does not exist")
    fails(lab, "tokens", "rm", "--token", "not-a-token", contains="no token")


def test_device_types(lab_server, tmp_path):
    lab = lab_server
    hc = tmp_path / "hc.yaml"
    hc.write_text("job_name: hc\ndevice_type: qemu\ntimeouts: {job: {minutes: 5}}\nvisibility: public\n"
                  "context: {arch: amd64}\n"
                  "actions:\n- boot: {method: qemu, media: tmpfs, prompts: ['# ']}\n")
    lab.manage("device-types", "add", "*")
    # every shipped template but the base-* ones a type extends
    shipped = sorted(p.stem for p in (REPO / "device-types").glob("*.jinja2") if not p.stem.startswith("base"))
    assert "qemu" in shipped and "qemu-uboot-arm64" in shipped
    assert [t["name"] for t in rows(lab, "device-types", "list")] == shipped
    added = lab.manage("device-types", "add", "board", "--template", "qemu", "--health-frequency", "3",
                       "--health-denominator", "jobs", "--disable-health-checks", "--description", "a board")
    assert "warning" not in added.stderr
    missing = lab.manage("device-types", "add", "mystery")
    assert "warning: no template 'mystery.jinja2'" in missing.stderr
    board = lab.api("GET", "/api/v1/device-types/board").json()
    assert {"template": "qemu", "health_frequency": 3, "health_denominator": "jobs",
            "disable_health_checks": True, "description": "a board"}.items() <= board.items()
    lab.manage("device-types", "update", "board", "--enable-health-checks", "--health-frequency", "12",
               "--health-denominator", "hours", "--health-check", str(hc), "--hide")
    board = lab.api("GET", "/api/v1/device-types/board").json()
    assert (board["disable_health_checks"], board["health_frequency"], board["display"]) == (False, 12, False)
    assert board["health_check"] == hc.read_text()
    listed = rows(lab, "device-types", "list", "--all")
    assert [(t["name"], t["installed"]) for t in listed] == sorted(
        [("board", True), ("mystery", True)] + [(name, True) for name in shipped])
    table = lab.manage("device-types", "list", "--csv").stdout.splitlines()
    assert table[0].startswith("name,template,devices") and len(table) == 3 + len(shipped)
    lab.manage("workers", "add", "w1")
    lab.manage("devices", "add", "b1", "--device-type", "board", "--worker", "w1")
    details = lab.manage("device-types", "details", "board", "--devices").stdout
    assert "b1" in details and "health_check" in details and "database" in details
    assert "devices               : 1" in lab.manage("device-types", "details", "board").stdout
    fails(lab, "device-types", "add", "qemu", contains="already exists")
    fails(lab, "device-types", "update", "nope", "--description", "x", contains="does not exist")
    hc.write_text("job_name: broken\nactions: 3\n")
    fails(lab, "device-types", "update", "board", "--health-check", str(hc), contains="health_check")


def test_devices(lab):
    lab.add_user("alice")
    lab.add_user("bob")
    lab.manage("groups", "add", "team", "--username", "bob")
    lab.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", "--dictionary",
               str(lab.dictionary), "--tags", "fast", "big", "--description", "first", "--owner", "alice",
               "--physical-group", "team")
    out = lab.manage("devices", "add", "qemu02", "--device-type", "qemu", "--worker", "w1", "--offline",
                     "--group", "team").stdout
    assert "Maintenance" in out
    d1 = lab.api("GET", "/api/v1/devices/qemu01").json()
    assert {"health": "Unknown", "state": "Idle", "tags": ["big", "fast"], "owner_user": "alice",
            "owner_group": None, "physical_group": "team", "has_dictionary": True}.items() <= d1.items()
    lab.manage("devices", "update", "qemu01", "--group", "team", "--physical-user", "bob")
    d1 = lab.api("GET", "/api/v1/devices/qemu01").json()
    assert (d1["owner_user"], d1["owner_group"], d1["physical_user"], d1["physical_group"]) == \
        (None, "team", "bob", None)
    lab.manage("devices", "update", "qemu01", "--health", "good", "--reason", "checked by hand")
    history = lab.api("GET", "/api/v1/devices/qemu01/health-history").json()["results"]
    assert history[0]["new_health"] == "Good" and history[0]["reason"] == "checked by hand"
    assert history[0]["actor"].startswith("cli:")
    lab.manage("workers", "add", "w2")
    lab.manage("devices", "update", "qemu02", "--worker", "w2", "--description", "moved", "--no-owner",
               "--dictionary", str(lab.dictionary))
    d2 = lab.api("GET", "/api/v1/devices/qemu02").json()
    assert (d2["worker"], d2["description"], d2["owner_group"], d2["has_dictionary"]) == ("w2", "moved", None, True)
    _device_lists(lab)
    details = lab.manage("devices", "details", "qemu01").stdout
    assert "checked by hand" in details and "memory" not in details
    fails(lab, "devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", contains="already exists")
    fails(lab, "devices", "add", "x1", "--device-type", "nope", "--worker", "w1", contains="device type 'nope'")
    fails(lab, "devices", "update", "qemu01", "--owner", "ghost", contains="user 'ghost' does not exist")
    fails(lab, "devices", "update", "qemu01", "--reason", "why", contains="health")
    fails(lab, "devices", "update", "qemu01", "--dictionary", "/no/such/file", contains="cannot read")
    bad = lab.tmp / "bad.jinja2"
    bad.write_text("{% extends 'nope.jinja2' %}")
    fails(lab, "devices", "update", "qemu01", "--dictionary", str(bad), contains="does not render")
    assert lab.manage("devices", "update", "qemu01", "--owner", "a", "--group", "b", check=False).returncode == 2


def _device_lists(lab) -> None:
    lab.manage("devices", "add", "old", "--device-type", "qemu", "--worker", "w1")
    lab.manage("devices", "update", "old", "--health", "RETIRED")
    assert [d["hostname"] for d in rows(lab, "devices", "list")] == ["qemu01", "qemu02"]
    assert [d["hostname"] for d in rows(lab, "devices", "list", "--all")] == ["old", "qemu01", "qemu02"]
    assert [d["hostname"] for d in rows(lab, "devices", "list", "--health", "retired")] == ["old"]
    assert [d["hostname"] for d in rows(lab, "devices", "list", "--health", "MAINTENANCE")] == ["qemu02"]
    assert [d["hostname"] for d in rows(lab, "devices", "list", "--state", "idle", "--all")] == \
        ["old", "qemu01", "qemu02"]
    assert "memory" not in lab.manage("devices", "list", "--json").stdout
    table = lab.manage("devices", "list", "--csv").stdout.splitlines()
    assert table[0] == "hostname,device_type,worker,state,health,owner_user,owner_group,tags"


def test_device_tags(lab):
    lab.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1")
    lab.manage("device-tags", "create", "usb", "has a USB hub")
    assert lab.manage("device-tags", "add", "qemu01", "--tags", "usb", "fast").stdout.split() == ["fast", "usb"]
    assert lab.manage("device-tags", "show", "qemu01").stdout.split() == ["fast", "usb"]
    assert rows(lab, "device-tags", "list") == [
        {"name": "fast", "description": "", "devices": ["qemu01"]},
        {"name": "usb", "description": "has a USB hub", "devices": ["qemu01"]},
    ]
    lab.manage("device-tags", "remove", "qemu01", "--tags", "fast")
    assert lab.manage("device-tags", "show", "qemu01").stdout.split() == ["usb"]
    fails(lab, "device-tags", "remove", "qemu01", "--tags", "nope", contains="tag 'nope' does not exist")
    fails(lab, "device-tags", "show", "ghost", contains="device 'ghost'")


def test_workers(lab):
    out = lab.manage("workers", "add", "w2", "--description", "rack 2", "--job-limit", "3").stdout
    token = out.split()[-1]
    poll = {"protocol": 1, "wait": 0, "running": []}
    r = lab.api("POST", "/internal/v1/workers/w2/poll", poll, token=None, auth=f"Worker {token}")
    assert r.status == 200, r.body
    lab.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w2")
    lab.manage("devices", "update", "qemu01", "--health", "GOOD")
    lab.manage("workers", "update", "w2", "--health", "MAINTENANCE", "--job-limit", "1")
    assert lab.api("GET", "/api/v1/devices/qemu01").json()["health"] == "Good"
    lab.manage("workers", "update", "w2", "--health", "active", "--reason", "cables fixed")
    assert lab.api("GET", "/api/v1/devices/qemu01").json()["health"] == "Unknown"
    details = lab.manage("workers", "details", "w2", "--devices").stdout
    assert "qemu01" in details and "rack 2" in details and "Online" in details and token not in details
    assert "devices     : 1" in lab.manage("workers", "details", "w2").stdout
    new = lab.manage("workers", "token", "w2").stdout.split()[-1]
    assert lab.api("POST", "/internal/v1/workers/w2/poll", poll, token=None, auth=f"Worker {token}").status == 403
    assert lab.api("POST", "/internal/v1/workers/w2/poll", poll, token=None, auth=f"Worker {new}").status == 200
    lab.manage("workers", "add", "w3", "--health", "RETIRED")
    assert [w["hostname"] for w in rows(lab, "workers", "list")] == ["w1", "w2"]
    listed = rows(lab, "workers", "list", "--all")
    assert [(w["hostname"], w["health"], w["job_limit"]) for w in listed] == \
        [("w1", "Active", 0), ("w2", "Active", 1), ("w3", "Retired", 0)]
    assert "token" not in json.dumps(listed)
    assert lab.manage("workers", "list", "--csv").stdout.splitlines()[0].startswith("hostname,state,health")
    lab.manage("workers", "update", "w2", "--health", "RETIRED")
    assert lab.api("GET", "/api/v1/devices/qemu01").json()["health"] == "Retired"
    fails(lab, "workers", "add", "w2", contains="already exists")
    fails(lab, "workers", "update", "nope", "--health", "ACTIVE", contains="worker 'nope' does not exist")
    fails(lab, "workers", "update", "w2", "--job-limit", "-1", contains="job_limit")


def test_maintenance(lab):
    for name in ("qemu01", "qemu02", "old"):
        lab.manage("devices", "add", name, "--device-type", "qemu", "--worker", "w1")
    lab.manage("devices", "update", "old", "--health", "RETIRED")
    out = lab.manage("maintenance", "--dry-run").stdout
    assert out.splitlines() == ["would change qemu01: Unknown → Maintenance",
                                "would change qemu02: Unknown → Maintenance"]
    assert lab.api("GET", "/api/v1/devices?health=maintenance").json()["count"] == 0
    lab.manage("maintenance", "--force")
    assert lab.api("GET", "/api/v1/devices?health=maintenance").json()["count"] == 2
    assert lab.api("GET", "/api/v1/devices/old").json()["health"] == "Retired"
    history = lab.api("GET", "/api/v1/devices/qemu01/health-history").json()["results"]
    assert history[0]["actor"] == "dutlab-health" and history[0]["reason"] == "lab maintenance"
    assert "already" in lab.manage("maintenance").stdout
