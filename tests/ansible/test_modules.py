"""dutlab.lab modules against a real dutlab server, one ansible-playbook run per module.

Every object module goes through the same sequence (community.general's consul targets do the
same): create in check mode (nothing written) → create → again (not changed) → update in check
mode → update (the diff shows the field) → again → wrong token and a non-admin token (clean
failures naming the status) → remove in check mode → remove → remove again (not changed).
"""

from __future__ import annotations

import json

import pytest
from ansible_harness import Unsafe, api_play, play

pytestmark = pytest.mark.ansible

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"


def _present_object(answer: dict) -> bool:
    return answer["status"] == 200


def _present_token(answer: dict) -> bool:
    return any(t["description"] == "ci" for t in answer["json"]["results"])


#: module -> (identity, create args, update args, field the update changes, GET path, present?)
CASES = {
    "device_type": ({"name": "t1"}, {"description": "first", "health_frequency": 12},
                    {"description": "second"}, "description", "/api/v1/device-types/t1", _present_object),
    "group": ({"name": "g1"}, {"permissions": ["submit"]}, {"permissions": ["admin", "submit"]},
              "permissions", "/api/v1/groups/g1", _present_object),
    "user": ({"username": "u1"}, {"email": "u1@example.org", "password": "secret-1"},
             {"email": "u1@example.net"}, "email", "/api/v1/users/u1", _present_object),
    "worker": ({"name": "w9"}, {"description": "rack 1", "job_limit": 1}, {"job_limit": 2}, "job_limit",
               "/api/v1/workers/w9", _present_object),
    "device": ({"hostname": "d1"}, {"device_type": "qemu", "worker": "w1", "dictionary": Unsafe(QEMU_DICT),
                                    "tags": ["kvm", "fast"]},
               {"description": "on the shelf", "tags": ["fast", "kvm", "x86"]}, "tags",
               "/api/v1/devices/d1", _present_object),
    "token": ({"description": "ci"}, {"user": "admin"}, None, None, "/api/v1/tokens?user=admin", _present_token),
}


def sequence(module: str, ident: dict, create: dict, update: dict | None, get: str, url: str,
             admin: str, other: str) -> list:
    fqcn = f"dutlab.lab.{module}"

    def call(name: str, args: dict, check: bool = False, token: str | None = None) -> dict:
        task = {"name": name, fqcn: {**ident, **args}, "diff": True}
        if check:
            task["check_mode"] = True
        if token:
            task[fqcn]["api_token"] = token
            task["ignore_errors"] = True
        return task

    def read(name: str) -> dict:
        return {"name": name, "ansible.builtin.uri": {
            "url": url + get, "headers": {"Authorization": f"Token {admin}"}, "status_code": [200, 404]}}

    absent = {"state": "absent"}
    tasks = [
        call("create (check)", create, check=True), read("read after create (check)"),
        call("create", create), call("create again", create), call("create again (check)", create, check=True),
    ]
    if update is not None:
        tasks += [
            call("update (check)", update, check=True), read("read after update (check)"),
            call("update", update), call("update again", update), call("update again (check)", update, check=True),
        ]
    tasks += [
        call("wrong token", update or create, token="not-a-token"),
        # the create arguments differ from the object now, so bob's call must try to change it
        call("not an admin", create if update else {"user": "admin"}, token=other),
        call("remove (check)", absent, check=True), read("read after remove (check)"),
        call("remove", absent), call("remove again", absent), call("remove again (check)", absent, check=True),
        read("read after remove"),
    ]
    return tasks


def prerequisites(module: str) -> list:
    if module != "device":
        return []
    return [{"name": "device type qemu", "dutlab.lab.device_type": {"name": "qemu", "health_checks_disabled": True}},
            {"name": "worker w1", "dutlab.lab.worker": {"name": "w1"}}]


@pytest.mark.parametrize("module", sorted(CASES))
def test_object_module_sequence(module, lab_server, tmp_path):
    ident, create, update, field, get, present = CASES[module]
    other = lab_server.add_user("bob")
    tasks = prerequisites(module) + sequence(module, ident, create, update, get, lab_server.url,
                                             lab_server.admin_token, other)
    run = play(api_play(tasks, url=lab_server.url, token=lab_server.admin_token), tmp_path)

    result_key = module
    assert run["create (check)"]["changed"] and run["create (check)"]["operation"] == "create"
    assert run["create (check)"]["diff"]["before"] == {}
    assert not present(run["read after create (check)"]), "check mode created the object"
    created = run["create"]
    assert created["changed"] and created["operation"] == "create"
    assert created["diff"]["before"] == {} and created["diff"]["after"]
    assert result_key in created
    for name in ("create again", "create again (check)"):
        assert not run[name]["changed"] and run[name]["operation"] == "none", name

    if update is not None:
        wanted = update[field]
        before_value = run["create"][result_key].get(field)
        for name in ("update (check)", "update"):
            res = run[name]
            assert res["changed"] and res["operation"] == "update", name
            assert res["diff"]["before"][field] == (sorted(before_value) if isinstance(before_value, list)
                                                    else before_value), name
            assert res["diff"]["after"][field] == (sorted(wanted) if isinstance(wanted, list) else wanted), name
        assert run["read after update (check)"]["json"].get(field) == before_value, "check mode updated"
        assert run["update"][result_key][field] == wanted
        for name in ("update again", "update again (check)"):
            assert not run[name]["changed"], name

    wrong = run["wrong token"]
    assert wrong["failed"] and wrong["status"] == 401, wrong
    assert ": 401 invalid or expired API token" in wrong["msg"], wrong["msg"]
    assert "Traceback" not in json.dumps(wrong)
    if module != "token":  # a user manages their own tokens
        denied = run["not an admin"]
        assert denied["failed"] and denied["status"] == 403, denied
        assert "bob" in denied["msg"], denied["msg"]

    assert run["remove (check)"]["changed"] and run["remove (check)"]["operation"] == "remove"
    assert present(run["read after remove (check)"]), "check mode removed the object"
    assert run["remove"]["changed"] and run["remove"]["operation"] == "remove"
    assert run["remove"]["diff"]["after"] == {}
    for name in ("remove again", "remove again (check)"):
        assert not run[name]["changed"] and run[name]["operation"] == "none", name
    assert not present(run["read after remove"])
    assert run.failed_tasks == []
