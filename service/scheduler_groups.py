"""The scheduler's MultiNode part: a group gets all its devices in one pass, or none.

The queue is served in one order, groups and single jobs alike (docs/multinode.md, "Scheduling"):
priority, then submit time, then id; a group counts as one entry, placed by its first sub-job.
A group is assigned when every sub-job can get its own fitting Idle device (within the workers'
free slots) at once (`plan`, lab.multinode.match); the conditional UPDATEs of all its sub-jobs run
in one savepoint of the pass's transaction and are rolled back together when any of them loses a
race (`reserve`), so no device is ever Reserved for a part of a group.

A group that cannot start yet reserves nothing, but the Idle devices it could use are held back
from the entries behind it in the queue (`hold`), as long as the lab's usable devices could run
it at all; so a stream of single jobs cannot starve a big group, while entries before it, and
health checks, still get those devices.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .db import database
from .lab.multinode import match
from .models import Device, DeviceType, JobTag, TestJob
from .states import DeviceHealth, JobState


@dataclass(slots=True)
class Queued:
    """A Submitted job as the pass sees it."""

    id: int
    device_type_id: int
    submitter_id: int
    requested_device_id: int | None
    tags: frozenset[int]
    target_group: str = ""


@dataclass
class QueuedGroup:
    """A MultiNode group waiting in the queue: all its sub-jobs, in sub-id order."""

    target_group: str
    members: list[Queued] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.members[0].id if self.members else 0


#: fits(job, device): the job may run on the device (tags, owners, a pinned device)
Fits = Callable[[Queued, Device], bool]
#: reserve(job id, device): the conditional UPDATEs of one assignment (the scheduler's)
Reserve = Callable[[int, Device], bool]


class _Lost(Exception):
    """One assignment of a group lost its race: undo the group's others (the savepoint)."""


def entries(rows: list[Queued], seen: set[str] | None = None) -> list[Queued | QueuedGroup]:
    """The queue in scheduling order: `rows` are Submitted jobs in order; each group takes the
    place of its first sub-job and holds all of them (read here, whatever their device type).
    A group with a sub-job that is no longer Submitted (canceled meanwhile) is left out.
    `seen` names the groups of earlier pages of the same queue (they keep their place)."""
    seen = set() if seen is None else seen
    names = sorted({q.target_group for q in rows if q.target_group and q.target_group not in seen})
    groups = _load_groups(names, {q.id: q for q in rows}) if names else {}
    out: list[Queued | QueuedGroup] = []
    for q in rows:
        if not q.target_group:
            out.append(q)
        elif q.target_group not in seen:
            seen.add(q.target_group)
            if q.target_group in groups:
                out.append(groups[q.target_group])
    return out


def _load_groups(names: list[str], known: dict[int, Queued]) -> dict[str, QueuedGroup]:
    out: dict[str, QueuedGroup] = {}
    broken: set[str] = set()
    for start in range(0, len(names), 200):
        chunk = names[start:start + 200]
        rows = list(TestJob.select(TestJob.id, TestJob.requested_device_type, TestJob.submitter,
                                   TestJob.requested_device, TestJob.target_group, TestJob.state, TestJob.sub_id)
                    .where(TestJob.target_group.in_(chunk)).tuples())
        missing = [job_id for job_id, *_ in rows if job_id not in known]
        tags: dict[int, set[int]] = {}
        for jt in JobTag.select(JobTag.job, JobTag.tag).where(JobTag.job.in_(missing or [0])):
            tags.setdefault(jt.job_id, set()).add(jt.tag_id)
        for job_id, dtype, submitter, requested, name, state, _sub_id in sorted(
                rows, key=lambda r: int(r[6].rpartition(".")[2] or 0)):
            if state != JobState.SUBMITTED:
                broken.add(name)
                continue
            q = known.get(job_id) or Queued(job_id, dtype, submitter, requested, frozenset(tags.get(job_id, ())), name)
            out.setdefault(name, QueuedGroup(name)).members.append(q)
    return {name: group for name, group in out.items() if name not in broken}


def plan(group: QueuedGroup, free: dict[int, list[Device]], capacity: dict[int, int], blocked: set[int],
         fits: Fits) -> list[tuple[Queued, Device]] | None:
    """A device for every sub-job among the free ones not `blocked` (taken or held), within the
    workers' free slots; None when the group cannot start now."""
    slots, devices = [], {}
    for q in group.members:
        options = [d for d in free.get(q.device_type_id, []) if d.id not in blocked and fits(q, d)]
        random.shuffle(options)  # as for single jobs: spread the load
        devices.update((d.id, d) for d in options)
        slots.append([d.id for d in options])
    chosen = match(slots, {d.id: d.worker_id for d in devices.values()}, capacity)
    if chosen is None:
        return None
    return [(q, devices[device_id]) for q, device_id in zip(group.members, chosen, strict=True)]


def reserve(assignments: list[tuple[Queued, Device]], reserve_one: Reserve) -> bool:
    """Assign the whole group in one savepoint: all of it, or (a race lost) none of it."""
    try:
        with database.atomic():  # inside the pass's transaction: a savepoint
            for q, device in assignments:
                if not reserve_one(q.id, device):
                    raise _Lost
    except _Lost:
        return False
    return True


def hold(group: QueuedGroup, free: dict[int, list[Device]], usable: list[Device], fits: Fits) -> set[int]:
    """The free devices to keep from the entries behind a group that cannot start yet: those it
    could use, when the lab's usable devices (Idle or busy) could run the whole group at all."""
    slots = [[d.id for d in usable if d.device_type_id == q.device_type_id and fits(q, d)] for q in group.members]
    if match(slots) is None:
        return set()  # too many devices Bad, Retired, offline: waiting on them would block the rest for nothing
    return {d.id for q in group.members for d in free.get(q.device_type_id, []) if fits(q, d)}


def usable_devices(type_ids: set[int], workers: list[int]) -> list[Device]:
    """Devices that run jobs once free: Good or Unknown, on a usable worker, of a shown type."""
    return list(Device.select(Device, DeviceType).join(DeviceType).where(
        Device.device_type.in_(sorted(type_ids) or [0]), Device.health.in_([DeviceHealth.GOOD, DeviceHealth.UNKNOWN]),
        Device.worker.in_(workers or [0]), DeviceType.display == True))  # noqa: E712 (peewee expression)
