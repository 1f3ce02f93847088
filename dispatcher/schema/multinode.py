"""MultiNode in the job language: the submitted group, the sub-job a device runs, the split.

A group is submitted as one document: ``protocols: lava-multinode: roles:`` names a device
type and a count per role, and every action names the roles it is for. The server splits it
(``split``) into one sub-job per device, as LAVA does (lava-interfaces.md §9): ``device_type``
and ``context`` lifted from the role, the actions of that role only (each with ``role: [it]``),
and ``protocols.lava-multinode`` holding the group: ``target_group``, ``role``, ``group_size``,
``sub_id``, the role's other keys (``tags``, ``timeout``, ``essential``, ``expect_role``) and the
protocol's ``timeout``. The server adds ``roles`` (job id -> role) before a worker runs it.

A sub-job is a job of its own: the schema checks both forms, told apart by ``target_group``.
"""

from __future__ import annotations

import copy
from typing import Any

from .common import (
    NAME,
    NAME_PATTERN,
    STRINGS,
    Check,
    boolean,
    check_timeout,
    dict_of,
    fail,
    integer,
    mapping,
    one_of,
    string,
)

PROTOCOL = "lava-multinode"
#: top-level keys every sub-job keeps from the submission
COPIED_KEYS = ("job_name", "timeouts", "priority", "visibility", "notify", "metadata", "secrets")
#: role keys that become the sub-job's own top-level keys
LIFTED_KEYS = ("device_type", "context")
#: what a sub-job keeps of its role, under protocols.lava-multinode
ROLE_PROTOCOL_KEYS = ("tags", "timeout", "essential", "expect_role")
SUB_JOB_KEYS = ("target_group", "role", "group_size", "sub_id")


def protocol(value: Any) -> dict[str, Any] | None:
    """The job's lava-multinode mapping, or None for a single-device job."""
    protocols = value.get("protocols") if isinstance(value, dict) else None
    if not isinstance(protocols, dict) or PROTOCOL not in protocols:
        return None
    found = protocols[PROTOCOL]
    return found if isinstance(found, dict) else {}


def is_submission(job: Any) -> bool:
    """A whole group as submitted (roles with device types), as opposed to one of its sub-jobs."""
    found = protocol(job)
    return found is not None and "target_group" not in found


def is_sub_job(job: Any) -> bool:
    found = protocol(job)
    return found is not None and "target_group" in found


def protocol_check(context: Check) -> Check:
    """The check of ``protocols.lava-multinode``, in either form."""
    role = mapping({"device_type": NAME, "count": integer(1), "context": context, "tags": STRINGS,
                    "timeout": check_timeout, "essential": boolean, "expect_role": string()},
                   required=("device_type", "count"))
    roles = dict_of(role, min_items=1, key_pattern=NAME_PATTERN, key_hint="use letters, digits, '-', '_', '.'")
    submitted = mapping({"roles": roles, "timeout": check_timeout}, required=("roles",))
    sub_job = mapping({"target_group": string(), "role": NAME, "group_size": integer(1), "sub_id": integer(0),
                       "roles": dict_of(NAME, key_pattern=r"[0-9]+", key_hint="job ids"),
                       "timeout": check_timeout, "essential": boolean, "tags": STRINGS,
                       "expect_role": string()}, required=SUB_JOB_KEYS)

    def check(value: Any, path: str) -> None:
        if isinstance(value, dict) and "target_group" in value:
            sub_job(value, path)
        else:
            submitted(value, path)

    return check


def check_roles(job: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    """Whole-job rules of a submitted group: device types per role, every action names roles."""
    for key in ("device_type", "context", "tags", "environment"):
        if key in job:
            fail(key, f"With lava-multinode, set {key} per role under protocols.lava-multinode.roles.")
    roles = job["protocols"][PROTOCOL]["roles"]
    for index, body in enumerate(bodies):
        kind = next(iter(job["actions"][index]))
        if "role" not in body:
            fail(f"actions[{index}].{kind}.role",
                 f"In a MultiNode job every action names its roles ({one_of(roles)}).")
        for position, name in enumerate(body["role"]):
            if name not in roles:
                fail(f"actions[{index}].{kind}.role[{position}]",
                     f"The role {name!r} is not defined; defined roles: {one_of(roles)}.")
    used = {name for body in bodies for name in body["role"]}
    for name in roles:
        if name not in used:
            fail(f"protocols.{PROTOCOL}.roles.{name}", f"No action names the role {name!r}; give it at least one.")


def check_sub_job(job: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    """Whole-job rules of one sub-job: its actions are those of its own role."""
    for key in ("tags", "environment"):
        if key in job:
            fail(key, f"A MultiNode sub-job keeps its {key} under protocols.lava-multinode.")
    group = job["protocols"][PROTOCOL]
    if group["sub_id"] >= group["group_size"]:
        fail(f"protocols.{PROTOCOL}.sub_id", f"sub_id {group['sub_id']} is not below group_size {group['group_size']}.")
    for index, body in enumerate(bodies):
        kind = next(iter(job["actions"][index]))
        if group["role"] not in body.get("role", []):
            fail(f"actions[{index}].{kind}.role", f"Every action of this sub-job is for its role {group['role']!r}.")


def split(job: dict[str, Any], target_group: str) -> list[dict[str, Any]]:
    """The sub-jobs of a validated submission, in sub_id order (role by role, as submitted)."""
    group = job["protocols"][PROTOCOL]
    roles: dict[str, dict[str, Any]] = group["roles"]
    size = sum(spec["count"] for spec in roles.values())
    shared = {key: value for key, value in group.items() if key != "roles"}
    out: list[dict[str, Any]] = []
    for role, spec in roles.items():
        for _ in range(spec["count"]):
            sub = {key: copy.deepcopy(job[key]) for key in COPIED_KEYS if key in job}
            sub.update({key: copy.deepcopy(spec[key]) for key in LIFTED_KEYS if key in spec})
            own = {key: copy.deepcopy(spec[key]) for key in ROLE_PROTOCOL_KEYS if key in spec}
            sub["protocols"] = {PROTOCOL: {"target_group": target_group, "role": role, "group_size": size,
                                           "sub_id": len(out), **copy.deepcopy(shared), **own}}
            sub["actions"] = [{kind: {**copy.deepcopy(body), "role": [role]}}
                              for action in job["actions"] for kind, body in action.items() if role in body["role"]]
            out.append(sub)
    return out
