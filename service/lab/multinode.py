"""MultiNode groups: one submission, one sub-job per device, scheduled and ended together.

A group is submitted as one definition (``protocols: lava-multinode``); `check_group` splits it
into its sub-jobs (the dispatcher's split, through `definitions`) and checks, role by role, that
the lab has enough devices for all of them at once (LAVA's submit-time check, lava-interfaces.md
§4), so a group that could never run is refused naming the role. The sub-jobs share a UUID
(``target_group``) and get LAVA's sub-ids, ``<first job id>.<n>``.

Who may do what to a group follows LAVA (§3.8): cancelling one sub-job cancels the group; when a
sub-job of an ``essential`` role fails, the group's other sub-jobs end Incomplete with the reason
(`end_group`); a resubmit resubmits the whole group. `match` is the one assignment rule: a
distinct device for every sub-job, within each worker's free slots (the scheduler uses it too).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import auth
from ..errors import bad_request
from ..models import Device, DeviceTag, DeviceType, Tag, TestJob, User
from ..states import DeviceHealth, JobHealth, JobState
from .definitions import is_group, split

PROTOCOL = "lava-multinode"
ROLES_PATH = f"protocols.{PROTOCOL}.roles"
SUB_ID = re.compile(r"(\d{1,18})\.(\d{1,6})")
#: a group's jobs still held by a worker, or waiting for one
UNFINISHED = (JobState.SUBMITTED, JobState.SCHEDULING, JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING)

__all__ = ["RoleJob", "check_group", "is_group", "match"]  # is_group: the definitions' answer, re-exported


@dataclass
class RoleJob:
    """One sub-job of a submitted group: its role and definition, what device it needs."""

    role: str
    definition: dict[str, Any]
    device_type: DeviceType
    tags: list[Tag]


# Submission #######################################################################


def check_group(user: User | None, job: dict[str, Any]) -> list[RoleJob]:
    """The group's sub-jobs, once the lab can run all of them at once; ApiError naming the role otherwise."""
    subs = split(job, str(uuid.uuid4()))
    specs = job["protocols"][PROTOCOL]["roles"]
    types: dict[str, DeviceType] = {}
    tags: dict[str, list[Tag]] = {}
    for role, spec in specs.items():
        types[role] = _device_type(role, spec["device_type"])
        tags[role] = _tags(role, spec.get("tags") or [])
    out = [RoleJob(sub["protocols"][PROTOCOL]["role"], sub, types[sub["protocols"][PROTOCOL]["role"]],
                   tags[sub["protocols"][PROTOCOL]["role"]]) for sub in subs]
    _check_devices(user, specs, types, tags)
    return out


def _device_type(role: str, name: str) -> DeviceType:
    found = DeviceType.get_or_none(DeviceType.name == name)
    if found is None:
        names = ", ".join(t.name for t in DeviceType.select().order_by(DeviceType.name)) or "none yet"
        raise bad_request(f"role '{role}': device type '{name}' does not exist (known: {names})",
                          f"{ROLES_PATH}.{role}.device_type")
    return found


def _tags(role: str, names: list[str]) -> list[Tag]:
    out = []
    for i, name in enumerate(names):
        tag = Tag.get_or_none(Tag.name == name)
        if tag is None:
            raise bad_request(f"role '{role}': device tag '{name}' does not exist; ask an admin to create it",
                              f"{ROLES_PATH}.{role}.tags[{i}]")
        out.append(tag)
    return out


def _check_devices(user: User | None, specs: dict[str, dict[str, Any]], types: dict[str, DeviceType],
                   tags: dict[str, list[Tag]]) -> None:
    """Enough usable devices for every sub-job at once (each device serves one); role by role."""
    groups = auth.group_ids(user) if user is not None else set()
    devices = list(Device.select().where(Device.device_type.in_([t.id for t in types.values()]),
                                         Device.health != DeviceHealth.RETIRED))
    carried: dict[int, set[int]] = defaultdict(set)
    for row in DeviceTag.select(DeviceTag.device, DeviceTag.tag).where(DeviceTag.device.in_([d.id for d in devices])):
        carried[row.device_id].add(row.tag_id)
    slots: list[list[int]] = []
    for role, spec in specs.items():
        wanted = {t.id for t in tags[role]}
        usable = [d.id for d in devices if d.device_type_id == types[role].id and wanted <= carried[d.id]
                  and (user is None or auth.may_submit_to(user, d, groups))]
        with_tags = f" with tags {', '.join(t.name for t in tags[role])}" if tags[role] else ""
        what = f"device{'s' if spec['count'] > 1 else ''} of type '{types[role].name}'{with_tags}"
        if len(usable) < spec["count"]:
            raise bad_request(f"role '{role}' needs {spec['count']} {what} that you may use; the lab has "
                              f"{len(usable)}", f"{ROLES_PATH}.{role}.count")
        slots += [usable] * spec["count"]
        if match(slots) is None:
            raise bad_request(f"role '{role}' needs {spec['count']} {what} besides those of the roles before it; "
                              "the lab has too few for the whole group at once", f"{ROLES_PATH}.{role}.count")


def create_group(roles: Sequence[RoleJob], create: Callable[[RoleJob], TestJob]) -> list[TestJob]:
    """Store the group's jobs (`create` makes one, inside the caller's transaction), numbered as
    LAVA does (sub-ids <first id>.<n>) and tied together by the group's UUID."""
    jobs = [create(role) for role in roles]
    first = jobs[0].id
    for index, (job, role) in enumerate(zip(jobs, roles, strict=True)):
        TestJob.update(target_group=role.definition["protocols"][PROTOCOL]["target_group"],
                       sub_id=f"{first}.{index}", role=role.role).where(TestJob.id == job.id).execute()
    return [TestJob.get_by_id(job.id) for job in jobs]


# Reading ##########################################################################


def find(job_id: Any) -> TestJob | None:
    """The job by id: ``13``, or a sub-id ``12.1``; None when there is no such job."""
    text = str(job_id).strip()
    if SUB_ID.fullmatch(text):
        return TestJob.get_or_none(TestJob.sub_id == text)
    return TestJob.get_or_none(TestJob.id == int(text)) if re.fullmatch(r"\d{1,18}", text) else None


def display_id(job: TestJob) -> int | str:
    """What LAVA calls the job: its sub-id in a group, else its number."""
    return job.sub_id or job.id


def members(job: TestJob) -> list[TestJob]:
    """Every job of `job`'s group in sub-id order (just `job` when it is not in one)."""
    if not job.target_group:
        return [job]
    rows = list(TestJob.select().where(TestJob.target_group == job.target_group))
    return sorted(rows, key=lambda j: int(j.sub_id.rpartition(".")[2] or 0))


def roles_table(job: TestJob) -> dict[str, str]:
    """job id -> role of the group, as LAVA writes it into each sub-job (lava-group's table)."""
    return {str(j.id): j.role for j in members(job)}


def with_roles(job: TestJob, definition: dict[str, Any]) -> dict[str, Any]:
    """The definition a worker gets: a sub-job's with the group's table added."""
    proto = (definition.get("protocols") or {}).get(PROTOCOL)
    if job.target_group and isinstance(proto, dict):
        proto["roles"] = roles_table(job)
    return definition


def group_json(job: TestJob) -> dict[str, Any]:
    """The MultiNode fields of the job's shape (all null for a single-device job)."""
    if not job.target_group:
        return {"sub_id": None, "role": None, "target_group": None, "group": None}
    return {"sub_id": job.sub_id, "role": job.role, "target_group": job.target_group,
            "group": int(job.sub_id.partition(".")[0])}


def group_filter(value: str) -> Any:
    """The query condition for "the jobs of group `value`": its number (``12``) or its UUID."""
    text = str(value).strip()
    if text.isdigit():
        return TestJob.sub_id.startswith(f"{text}.")
    return TestJob.target_group == text


# Ending ###########################################################################


def group_end(job: TestJob) -> tuple[str, str] | None:
    """(error type, message) when the group ended this job, else None."""
    if not job.group_failure:
        return None
    data = json.loads(job.group_failure)
    return str(data["error_type"]), str(data["error_msg"])


def is_essential(job: TestJob) -> bool:
    proto = (json.loads(job.definition or "{}").get("protocols") or {}).get(PROTOCOL) or {}
    return bool(proto.get("essential"))


def end_group(job: TestJob, health: JobHealth, error_type: str, error_msg: str) -> set[int]:
    """After `job` ended: when its role is essential and it did not complete, end the rest of its
    group, naming the role and the job; the workers to wake. Call inside the write transaction.

    Sub-jobs already Canceling (the group was canceled) stay so: they end Canceled.
    """
    if not job.target_group or health == JobHealth.COMPLETE or not is_essential(job):
        return set()
    what = f"{error_type} error: {error_msg}" if error_type else JobHealth(health).label
    reason = f"the group ended: essential role '{job.role}' (job {job.sub_id}) ended {JobHealth(health).label}: {what}"
    failure = json.dumps({"error_type": error_type or "Job", "error_msg": reason})
    others = TestJob.target_group == job.target_group, TestJob.id != job.id
    TestJob.update(state=JobState.FINISHED, health=JobHealth.INCOMPLETE, error_type=error_type or "Job",
                   error_msg=reason, failure_comment=reason, group_failure=failure).where(
        *others, TestJob.state == JobState.SUBMITTED).execute()
    ending = list(TestJob.select().where(*others, TestJob.state.in_([JobState.SCHEDULING, JobState.SCHEDULED,
                                                                      JobState.RUNNING])))
    TestJob.update(state=JobState.CANCELING, group_failure=failure).where(
        TestJob.id.in_([j.id for j in ending] or [0])).execute()
    return {j.worker_id for j in ending if j.worker_id is not None}


# Assignment #######################################################################


def match(slots: Sequence[Sequence[int]], worker_of: dict[int, int] | None = None,
          free: dict[int, int] | None = None) -> list[int] | None:
    """A distinct device for every slot (each slot lists the devices it may use), None if there is
    no such choice; with `worker_of` and `free`, at most free[w] devices of each worker w.

    A maximum flow (source -> slot -> device -> worker -> sink), found by augmenting paths: greedy
    picks fail on groups whose roles compete for the same devices.
    """
    residual: dict[Hashable, dict[Hashable, int]] = defaultdict(dict)

    def edge(a: Hashable, b: Hashable, capacity: int) -> None:
        residual[a][b] = residual[a].get(b, 0) + capacity
        residual[b].setdefault(a, 0)

    for index, devices in enumerate(slots):
        edge("source", ("slot", index), 1)
        for device in dict.fromkeys(devices):
            edge(("slot", index), ("device", device), 1)
    for device in {d for devices in slots for d in devices}:
        if worker_of is None:
            edge(("device", device), "sink", 1)
        else:
            edge(("device", device), ("worker", worker_of[device]), 1)
    if worker_of is not None:
        for worker in set(worker_of.values()):
            edge(("worker", worker), "sink", max(0, (free or {}).get(worker, 0)))
    for _ in range(len(slots)):
        parent: dict[Hashable, Hashable | None] = {"source": None}
        queue: deque[Hashable] = deque(["source"])
        while queue and "sink" not in parent:
            node = queue.popleft()
            for nxt, capacity in residual[node].items():
                if capacity > 0 and nxt not in parent:
                    parent[nxt] = node
                    queue.append(nxt)
        if "sink" not in parent:
            return None
        node = "sink"
        while (prev := parent[node]) is not None:
            residual[prev][node] -= 1
            residual[node][prev] += 1
            node = prev
    return [next(d for d in dict.fromkeys(devices) if residual[("slot", index)][("device", d)] == 0)
            for index, devices in enumerate(slots)]
