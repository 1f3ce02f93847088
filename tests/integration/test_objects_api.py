"""REST API for the lab's objects against a real server: auth, secrecy, shapes, PATCH, errors."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from labkit import http

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
V1 = "/api/v1"

#: writable fields per object, as PATCH takes them and GET returns them (Ansible reads, compares, writes)
WRITABLE = {
    "devices/qemu01": ("device_type", "worker", "description", "health", "owner_user", "owner_group",
                       "physical_user", "physical_group", "tags"),
    "device-types/qemu": ("description", "template", "health_frequency", "health_denominator",
                          "disable_health_checks", "display", "health_check"),
    "workers/w1": ("description", "health", "job_limit"),
    "users/alice": ("email", "is_active", "is_superuser", "is_staff", "groups"),
    "groups/team": ("permissions", "members"),
    "tags/fast": ("description",),
}


def error(r, status: int) -> dict:
    """`r` is a `status` answer with a JSON body naming the error and the path."""
    assert r.status == status, (r.status, r.body)
    body = r.json()
    assert body["error"] and "path" in body, body
    return body


@pytest.fixture
def lab(lab_server):
    """Users alice (owner of qemu01, in group team) and bob; device type qemu; worker w1; device qemu01."""
    lab = lab_server
    lab.alice = lab.add_user("alice")
    lab.bob = lab.add_user("bob")
    assert lab.api("POST", f"{V1}/groups", {"name": "team", "members": ["alice"]}).status == 201
    assert lab.api("POST", f"{V1}/device-types", {"name": "qemu", "disable_health_checks": True}).status == 201
    r = lab.api("POST", f"{V1}/workers", {"hostname": "w1", "description": "rack 1"})
    assert r.status == 201, r.body
    lab.worker_token = r.json()["token"]
    r = lab.api("POST", f"{V1}/devices", {"hostname": "qemu01", "device_type": "qemu", "worker": "w1",
                                          "dictionary": QEMU_DICT, "owner_user": "alice", "tags": ["fast"]})
    assert r.status == 201, r.body
    return lab


WRITES = [
    ("POST", "/devices", {"hostname": "x", "device_type": "qemu"}),
    ("PATCH", "/devices/qemu01", {"description": "x"}),
    ("DELETE", "/devices/qemu01", None),
    ("PUT", "/devices/qemu01/dictionary", {"dictionary": ""}),
    ("POST", "/devices/qemu01/health", {"health": "Bad"}),
    ("POST", "/devices/qemu01/tags", {"name": "t"}),
    ("DELETE", "/devices/qemu01/tags/fast", None),
    ("POST", "/device-types", {"name": "x"}),
    ("PATCH", "/device-types/qemu", {"description": "x"}),
    ("DELETE", "/device-types/qemu", None),
    ("PUT", "/device-types/qemu/health-check", {"health_check": ""}),
    ("POST", "/workers", {"hostname": "x"}),
    ("PATCH", "/workers/w1", {"description": "x"}),
    ("DELETE", "/workers/w1", None),
    ("POST", "/workers/w1/token", None),
    ("POST", "/tags", {"name": "x"}),
    ("PATCH", "/tags/fast", {"description": "x"}),
    ("DELETE", "/tags/fast", None),
    ("POST", "/users", {"username": "x"}),
    ("DELETE", "/users/bob", None),
    ("POST", "/groups", {"name": "x"}),
    ("PATCH", "/groups/team", {"members": []}),
    ("DELETE", "/groups/team", None),
]


def test_writes_need_an_admin_token(lab):
    for method, path, body in WRITES:
        error(lab.api(method, V1 + path, body, token=None), 401)
        error(lab.api(method, V1 + path, body, token="not-a-token"), 401)
        body403 = error(lab.api(method, V1 + path, body, token=lab.bob), 403)
        assert "not an admin" in body403["error"], (method, path, body403)
    # nothing changed
    assert lab.api("GET", f"{V1}/devices/qemu01").json()["description"] == ""
    assert lab.api("GET", f"{V1}/workers").json()["count"] == 1


def test_reads_are_public_except_people_and_dictionaries(lab):
    for path in ("/devices", "/devices/qemu01", "/devices/qemu01/tags", "/devices/qemu01/health-history",
                 "/device-types", "/device-types/qemu", "/device-types/qemu/health-check", "/workers",
                 "/workers/w1", "/tags", "/tags/fast"):
        assert lab.api("GET", V1 + path, token=None).status == 200, path
    for path in ("/users", "/users/alice", "/groups", "/groups/team", "/tokens", "/devices/qemu01/dictionary"):
        error(lab.api("GET", V1 + path, token=None), 401)


def test_dictionary_is_for_owners_and_admins(lab):
    path = f"{V1}/devices/qemu01/dictionary"
    error(lab.api("GET", path, token=None), 401)
    error(lab.api("GET", path, token=lab.bob), 403)
    assert lab.api("GET", path, token=lab.alice).json() == {"hostname": "qemu01", "dictionary": QEMU_DICT}
    assert lab.api("GET", path).json()["dictionary"] == QEMU_DICT
    # group ownership: members of the group only
    lab.api("PATCH", f"{V1}/devices/qemu01", {"owner_group": "team"})
    assert lab.api("GET", path, token=lab.alice).status == 200
    error(lab.api("GET", path, token=lab.bob), 403)
    rendered = lab.api("GET", path + "?render=1&context=" + quote(json.dumps({"arch": "arm64"})), token=lab.alice)
    assert "qemu-system-aarch64" in rendered.json()["config"]
    error(lab.api("GET", path + "?render=1&context=[1", token=lab.alice), 400)
    # the dictionary never shows elsewhere
    for other in ("/devices", "/devices/qemu01", "/workers/w1", "/device-types/qemu"):
        assert "memory" not in lab.api("GET", V1 + other).text


def test_put_dictionary(lab):
    path = f"{V1}/devices/qemu01/dictionary"
    new = QEMU_DICT.replace("256", "512")
    assert lab.api("PUT", path, {"dictionary": new}).json() == {"hostname": "qemu01", "dictionary": new}
    raw = new.replace("512", "1024")
    r = lab.api("PUT", path, raw, headers={"Content-Type": "text/plain"})
    assert r.json()["dictionary"] == raw
    body = error(lab.api("PUT", path, {"dictionary": "{% extends 'nope.jinja2' %}"}), 400)
    assert body["path"] == "dictionary" and "nope.jinja2" in body["error"]
    error(lab.api("PUT", path, {"dict": "x"}), 400)
    assert lab.api("GET", path).json()["dictionary"] == raw


def test_devices_crud_and_patch(lab):
    device = lab.api("GET", f"{V1}/devices/qemu01").json()
    assert device == {
        "hostname": "qemu01", "device_type": "qemu", "worker": "w1", "description": "", "state": "Idle",
        "health": "Unknown", "owner_user": "alice", "owner_group": None, "physical_user": None,
        "physical_group": None, "tags": ["fast"], "current_job": None, "last_health_report_job": None,
        "has_dictionary": True}
    r = lab.api("PATCH", f"{V1}/devices/qemu01", {"description": "bench 2", "physical_group": "team"})
    assert r.status == 200
    assert {"description": "bench 2", "physical_group": "team", "owner_user": "alice"}.items() <= r.json().items()
    body = error(lab.api("PATCH", f"{V1}/devices/qemu01", {"colour": "red"}), 400)
    assert body["path"] == "colour" and "colour" in body["error"]
    body = error(lab.api("PATCH", f"{V1}/devices/qemu01", {"owner_user": "alice", "owner_group": "team"}), 400)
    assert body["path"] == "owner_group"
    assert error(lab.api("PATCH", f"{V1}/devices/qemu01", {"worker": "ghost"}), 400)["path"] == "worker"
    assert error(lab.api("POST", f"{V1}/devices", {"hostname": "qemu01", "device_type": "qemu"}), 409)
    assert error(lab.api("POST", f"{V1}/devices", {"device_type": "qemu"}), 400)["path"] == "hostname"
    error(lab.api("GET", f"{V1}/devices/ghost"), 404)
    assert lab.api("DELETE", f"{V1}/devices/qemu01").status == 204
    error(lab.api("GET", f"{V1}/devices/qemu01"), 404)


def test_device_list_filters_and_pages(lab):
    for i in range(2, 6):
        lab.api("POST", f"{V1}/devices", {"hostname": f"qemu0{i}", "device_type": "qemu",
                                          "health": "Maintenance" if i % 2 else "Unknown"})
    every = lab.api("GET", f"{V1}/devices").json()
    assert every["count"] == 5 and [d["hostname"] for d in every["results"]][:2] == ["qemu01", "qemu02"]
    page = lab.api("GET", f"{V1}/devices?limit=2&offset=2").json()
    assert page["count"] == 5 and [d["hostname"] for d in page["results"]] == ["qemu03", "qemu04"]
    assert lab.api("GET", f"{V1}/devices?health=maintenance").json()["count"] == 2
    assert lab.api("GET", f"{V1}/devices?state=idle&health=Unknown&worker=w1&device_type=qemu").json()["count"] == 1
    assert lab.api("GET", f"{V1}/devices?tag=fast").json()["count"] == 1
    assert error(lab.api("GET", f"{V1}/devices?health=sleepy"), 400)["path"] == "health"
    assert error(lab.api("GET", f"{V1}/devices?limit=0"), 400)["path"] == "limit"


def test_health_and_history(lab):
    r = lab.api("POST", f"{V1}/devices/qemu01/health", {"health": "maintenance", "reason": "new PSU"})
    assert r.status == 200 and r.json()["health"] == "Maintenance"
    lab.api("POST", f"{V1}/devices/qemu01/health", {"health": "GOOD"})
    history = lab.api("GET", f"{V1}/devices/qemu01/health-history").json()
    assert history["count"] == 2
    latest, first = history["results"]
    assert (first["old_health"], first["new_health"], first["reason"], first["actor"]) == \
        ("Unknown", "Maintenance", "new PSU", "admin")
    assert latest["new_health"] == "Good" and latest["reason"] == "set by admin" and latest["time"].endswith("Z")
    assert error(lab.api("POST", f"{V1}/devices/qemu01/health", {"health": "sleepy"}), 400)["path"] == "health"
    assert error(lab.api("POST", f"{V1}/devices/qemu01/health", {}), 400)["path"] == "health"


def test_device_tags(lab):
    path = f"{V1}/devices/qemu01/tags"
    assert lab.api("POST", path, {"name": "usb"}).json() == {"hostname": "qemu01", "tags": ["fast", "usb"]}
    assert lab.api("POST", path, {"tags": ["a", "b"]}).json()["tags"] == ["a", "b", "fast", "usb"]
    assert lab.api("DELETE", path + "/a").status == 204
    error(lab.api("DELETE", path + "/a"), 404)
    assert lab.api("GET", path).json() == {"hostname": "qemu01", "tags": ["b", "fast", "usb"]}
    assert error(lab.api("POST", path, {"name": "no/slash"}), 400)["path"] == "tags[0]"


def test_device_types(lab):
    dtype = lab.api("GET", f"{V1}/device-types/qemu").json()
    assert dtype == {"name": "qemu", "description": "", "template": "qemu", "health_frequency": 24,
                     "health_denominator": "hours", "disable_health_checks": True, "display": True,
                     "devices": ["qemu01"], "template_found": True, "health_check": ""}
    listed = lab.api("GET", f"{V1}/device-types").json()
    assert listed["count"] == 1 and "health_check" not in listed["results"][0]
    r = lab.api("GET", f"{V1}/device-types/qemu/template")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain") and "extends" in r.text
    hc = lab.api("GET", f"{V1}/device-types/qemu/health-check").json()
    assert hc["source"] == "file" and "job_name" in hc["health_check"]
    new = hc["health_check"].replace("health", "my health", 1)
    r = lab.api("PUT", f"{V1}/device-types/qemu/health-check", new, headers={"Content-Type": "application/yaml"})
    assert r.json() == {"name": "qemu", "health_check": new, "source": "database"}
    body = error(lab.api("PUT", f"{V1}/device-types/qemu/health-check", {"health_check": "actions: 3"}), 400)
    assert body["path"].startswith("health_check")
    r = lab.api("PATCH", f"{V1}/device-types/qemu", {"health_frequency": 5, "health_denominator": "jobs"})
    assert (r.json()["health_frequency"], r.json()["health_denominator"], r.json()["description"]) == (5, "jobs", "")
    assert error(lab.api("PATCH", f"{V1}/device-types/qemu", {"health_frequency": "often"}), 400)["path"] == \
        "health_frequency"
    error(lab.api("DELETE", f"{V1}/device-types/qemu"), 409)
    assert lab.api("POST", f"{V1}/device-types", {"name": "board"}).json()["template_found"] is False
    error(lab.api("GET", f"{V1}/device-types/board/template"), 404)
    assert lab.api("DELETE", f"{V1}/device-types/board").status == 204


def test_workers(lab):
    worker = lab.api("GET", f"{V1}/workers/w1").json()
    assert worker == {"hostname": "w1", "description": "rack 1", "state": "Offline", "health": "Active",
                      "job_limit": 0, "version": "", "last_ping": None, "devices": ["qemu01"]}
    assert lab.worker_token not in lab.api("GET", f"{V1}/workers").text
    poll = {"protocol": 1, "wait": 0}
    assert http("POST", f"{lab.url}/internal/v1/workers/w1/poll", poll, auth=f"Worker {lab.worker_token}").status \
        == 200
    new = lab.api("POST", f"{V1}/workers/w1/token").json()["token"]
    assert http("POST", f"{lab.url}/internal/v1/workers/w1/poll", poll, auth=f"Worker {lab.worker_token}").status \
        == 403
    assert http("POST", f"{lab.url}/internal/v1/workers/w1/poll", poll, auth=f"Worker {new}").status == 200
    lab.api("POST", f"{V1}/devices/qemu01/health", {"health": "Good"})
    r = lab.api("PATCH", f"{V1}/workers/w1", {"health": "Maintenance", "job_limit": 2})
    assert (r.json()["health"], r.json()["job_limit"], r.json()["state"]) == ("Maintenance", 2, "Online")
    lab.api("PATCH", f"{V1}/workers/w1", {"health": "Active", "reason": "back"})
    assert lab.api("GET", f"{V1}/devices/qemu01").json()["health"] == "Unknown"
    latest = lab.api("GET", f"{V1}/devices/qemu01/health-history").json()["results"][0]
    assert latest["actor"] == "admin" and "back" in latest["reason"]
    assert lab.api("GET", f"{V1}/workers?health=active").json()["count"] == 1
    assert error(lab.api("PATCH", f"{V1}/workers/w1", {"health": "asleep"}), 400)["path"] == "health"
    error(lab.api("DELETE", f"{V1}/workers/w1"), 409)
    assert lab.api("POST", f"{V1}/workers", {"hostname": "w2"}).status == 201
    assert lab.api("DELETE", f"{V1}/workers/w2").status == 204


def test_tags(lab):
    r = lab.api("POST", f"{V1}/tags", {"name": "usb", "description": "USB hub"})
    assert r.status == 201 and r.json() == {"name": "usb", "description": "USB hub", "devices": []}
    assert [t["name"] for t in lab.api("GET", f"{V1}/tags").json()["results"]] == ["fast", "usb"]
    assert lab.api("PATCH", f"{V1}/tags/usb", {"description": "hub"}).json()["description"] == "hub"
    assert lab.api("GET", f"{V1}/tags/fast").json()["devices"] == ["qemu01"]
    error(lab.api("POST", f"{V1}/tags", {"name": "usb"}), 409)
    assert lab.api("DELETE", f"{V1}/tags/fast").status == 204
    assert lab.api("GET", f"{V1}/devices/qemu01").json()["tags"] == []


def test_users_and_groups(lab):
    users = lab.api("GET", f"{V1}/users").json()
    assert [u["username"] for u in users["results"]] == ["admin", "alice", "bob"]
    assert "pbkdf2" not in json.dumps(users) and "password" not in json.dumps(users)
    assert [u["username"] for u in lab.api("GET", f"{V1}/users", token=lab.bob).json()["results"]] == ["bob"]
    error(lab.api("GET", f"{V1}/users/alice", token=lab.bob), 403)
    assert lab.api("PATCH", f"{V1}/users/bob", {"password": "pw-bob-2"}, token=lab.bob).status == 200
    error(lab.api("PATCH", f"{V1}/users/bob", {"is_superuser": True}, token=lab.bob), 403)
    basic = "Basic " + base64.b64encode(b"bob:pw-bob-2").decode()
    assert http("POST", f"{lab.url}{V1}/tokens", {}, auth=basic).status == 201
    carol = {"username": "carol", "email": "c@x", "groups": ["team"], "password": "pw-carol"}
    r = lab.api("POST", f"{V1}/users", carol)
    assert r.status == 201 and r.json()["groups"] == ["team"]
    assert lab.api("GET", f"{V1}/groups/team", token=lab.bob).json() == {
        "name": "team", "permissions": [], "members": ["alice", "carol"]}
    r = lab.api("PATCH", f"{V1}/groups/team", {"permissions": ["submit"], "members": ["bob"]})
    assert r.json() == {"name": "team", "permissions": ["submit"], "members": ["bob"]}
    assert error(lab.api("PATCH", f"{V1}/groups/team", {"permissions": ["rule"]}), 400)["path"] == "permissions[0]"
    lab.api("PATCH", f"{V1}/devices/qemu01", {"owner_group": "team"})
    error(lab.api("DELETE", f"{V1}/groups/team"), 409)
    assert lab.api("DELETE", f"{V1}/users/carol").status == 204
    error(lab.api("GET", f"{V1}/users/carol"), 404)


def test_tokens(lab):
    mine = lab.api("GET", f"{V1}/tokens", token=lab.alice).json()
    assert mine["count"] == 1 and set(mine["results"][0]) == {"id", "user", "description", "prefix", "created",
                                                              "last_used"}
    r = lab.api("POST", f"{V1}/tokens", {"description": "laptop"}, token=lab.alice)
    assert r.status == 201 and r.json()["user"] == "alice"
    secret, token_id = r.json()["secret"], r.json()["id"]
    assert lab.api("GET", f"{V1}/system/whoami", token=secret).json() == {"username": "alice"}
    assert secret not in lab.api("GET", f"{V1}/tokens", token=lab.alice).text
    error(lab.api("GET", f"{V1}/tokens?user=alice", token=lab.bob), 403)
    assert lab.api("GET", f"{V1}/tokens?user=alice").json()["count"] == 2
    error(lab.api("POST", f"{V1}/tokens", {"user": "alice"}, token=lab.bob), 403)
    assert lab.api("POST", f"{V1}/tokens", {"user": "bob"}).json()["user"] == "bob"
    error(lab.api("DELETE", f"{V1}/tokens/{token_id}", token=lab.bob), 404)
    assert lab.api("DELETE", f"{V1}/tokens/{token_id}", token=lab.alice).status == 204
    error(lab.api("GET", f"{V1}/system/whoami", token=secret), 401)
    error(lab.api("POST", f"{V1}/tokens", {"username": "alice", "password": "wrong"}, token=None), 401)
    error(lab.api("POST", f"{V1}/tokens", {}, token=None), 401)
    body = error(lab.api("POST", f"{V1}/tokens", {"username": "alice", "password": "pw-alice", "x": 1},
                         token=None), 400)
    assert body["path"] == "x"


def test_get_returns_what_patch_takes(lab):
    for path, fields in WRITABLE.items():
        current = lab.api("GET", f"{V1}/{path}").json()
        missing = [f for f in fields if f not in current]
        assert not missing, (path, missing)
        r = lab.api("PATCH", f"{V1}/{path}", {f: current[f] for f in fields})
        assert r.status == 200, (path, r.body)
        after = {k: v for k, v in r.json().items() if k not in ("last_ping", "state")}
        assert after == {k: v for k, v in current.items() if k not in ("last_ping", "state")}, path


GARBAGE = [b"not json", b"[1, 2]", b'{"hostname": 5}', b'{"name": null}', b'{"health": []}',
           b'{"tags": "x"}', b'{"members": [1]}', b'{"job_limit": true}']


def test_no_5xx_on_garbage(lab):
    for method, path, _ in WRITES + [("PATCH", "/users/alice", None), ("POST", "/tokens", None)]:
        for body in GARBAGE:
            r = lab.api(method, V1 + path, body, headers={"Content-Type": "application/json"})
            assert r.status < 500, (method, path, body, r.status, r.body)
            if r.status >= 400:
                error(r, r.status)
