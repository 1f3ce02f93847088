"""One scheduling pass: worker liveness, health checks first, then queued jobs, then queue timeouts.

Semantics follow LAVA's scheduler (lava-interfaces.md §4). A pass may run concurrently with
another pass or with submissions: each assignment is a pair of conditional UPDATEs (device
Idle → Reserved, job Submitted → Scheduled) and is undone when either loses the race, so a
device can never get two jobs. A pass makes all its assignments in one transaction (one
commit), and the assigning parts of concurrent passes take turns.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import auth, scheduler_groups, scheduler_queue, scheduler_reads
from .config import Settings
from .db import database, exclusive, is_sqlite, write_txn
from .devicecfg import health_check_definition, render
from .errors import ApiError
from .events import WORKER_OFFLINE, WORKER_WAKE, count_wakes, job_changed, publish, wake_worker
from .lab import jobs, submissions, workers
from .lab.devices import HEALTH_ACTOR, set_health
from .models import Device, DeviceType, TestJob, User, Worker, utcnow
from .scheduler_groups import Queued, QueuedGroup
from .scheduler_index import FreeDevice, FreeIndex, Submitter
from .scheduler_reserve import reserve as _reserve
from .scheduler_reserve import reserve_many
from .states import DeviceHealth, JobHealth, JobState, WorkerHealth, WorkerState

log = logging.getLogger("dutlab.scheduler")
PASS_LOCK = 0x64757462  # "dutb": the key of the batch of assignments one pass makes


@dataclass
class PassReport:
    health_checks: list[int] = field(default_factory=list)
    scheduled: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    workers_offline: list[str] = field(default_factory=list)
    #: jobs ended because their worker stayed away past their timeout
    abandoned: list[int] = field(default_factory=list)


def run_pass(settings: Settings) -> PassReport:
    report = PassReport()
    capacity = check_workers(settings, report)
    available = schedule_health_checks(settings, capacity, report)
    schedule_jobs(available, capacity, report)
    expire_queued(report)
    return report


# -- workers ---------------------------------------------------------------------------------


def check_workers(settings: Settings, report: PassReport) -> dict[int, int]:
    """Workers whose heartbeats stopped go Offline (their devices are offered to no job, see
    `worker_capacity`); their jobs end only once their own timeout has passed (fencing).
    Returns the free job slots per usable worker (`worker_capacity`)."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.worker_heartbeat_timeout)
    # one read of the (few) workers: who went stale, whether any is Offline at all, the slots
    rows = scheduler_reads.workers()
    for row in rows:
        if row.state != WorkerState.ONLINE or row.last_ping is None or not row.last_ping < stale:
            continue
        if Worker.update(state=WorkerState.OFFLINE, offline_since=now).where(
                Worker.id == row.id, Worker.state == WorkerState.ONLINE).execute():
            publish(WORKER_OFFLINE, row.id)
        report.workers_offline.append(row.hostname)
        log.warning("worker %s missed its heartbeats (last %s): Offline", row.hostname, row.last_ping)
    if not report.workers_offline and all(row.state != WorkerState.OFFLINE for row in rows):
        return _capacity(rows)  # nothing changed since the read; no job can be abandoned: no join
    for job_id in workers.end_abandoned_jobs(settings.worker_offline_grace):
        report.abandoned.append(job_id)
        log.warning("job %d: its worker is offline past the job's timeout: Incomplete", job_id)
    return worker_capacity()


def worker_capacity() -> dict[int, int]:
    """Free job slots per usable (Online + Active) worker; unlimited is a large number."""
    return _capacity(scheduler_reads.workers())


def _capacity(rows: list[scheduler_reads.WorkerRow]) -> dict[int, int]:
    return {row.id: (row.job_limit or 1_000_000) - row.busy for row in rows
            if row.state == WorkerState.ONLINE and row.health == WorkerHealth.ACTIVE}


# -- health checks ---------------------------------------------------------------------------


def schedule_health_checks(settings: Settings, capacity: dict[int, int], report: PassReport) -> list[FreeDevice]:
    """Start due health checks; return the devices left available for normal jobs."""
    available = []
    candidates, dtypes = scheduler_reads.idle_devices(
        capacity, (DeviceHealth.GOOD, DeviceHealth.UNKNOWN, DeviceHealth.LOOPING))
    if not candidates:
        return available
    last_reports = {d.last_health_report_job_id: d.last_report_time for d in candidates
                    if d.last_health_report_job_id and d.last_report_time is not None}
    due = [d for d in candidates if not dtypes[d.device_type_id].disable_health_checks
           and health_check_due(d, dtypes[d.device_type_id], last_reports)]
    models = _device_models([d.id for d in due])
    # Devices of one type with one dictionary share their health check: read the file once a pass.
    definitions: dict[tuple[int, str], str | None] = {}
    for light in candidates:
        device = models.get(light.id)
        definition = None
        if device is not None:
            key = (device.device_type_id, device.dictionary)
            if key not in definitions:
                definitions[key] = health_check_definition(device, settings)
            definition = definitions[key]
        if definition is None:
            if light.health != DeviceHealth.LOOPING:
                available.append(light)
            continue
        if capacity.get(light.worker_id, 0) <= 0:
            continue
        job = start_health_check(device, definition, settings)
        if job is not None:
            capacity[light.worker_id] -= 1
            report.health_checks.append(job.id)
    return available


def _device_models(ids: list[int]) -> dict[int, Device]:
    """The full rows (dictionary, device type) of the devices that need a health check."""
    out: dict[int, Device] = {}
    for chunk in _chunks(ids):
        out.update((d.id, d) for d in Device.select(Device, DeviceType).join(DeviceType).where(Device.id.in_(chunk)))
    return out


def _submit_times(job_ids: list[int | None]) -> dict[int, datetime]:
    ids = sorted({i for i in job_ids if i})
    out: dict[int, datetime] = {}
    for chunk in _chunks(ids):
        out.update(TestJob.select(TestJob.id, TestJob.submit_time).where(TestJob.id.in_(chunk)).tuples())
    return out


def health_check_due(device: Device | FreeDevice, dtype: DeviceType | scheduler_reads.TypeRule,
                     last_reports: dict[int, datetime] | None = None) -> bool:
    if device.health in (DeviceHealth.UNKNOWN, DeviceHealth.LOOPING):
        return True
    last_id = device.last_health_report_job_id
    if last_reports is None:
        last_reports = _submit_times([last_id])
    last_submit = last_reports.get(last_id) if last_id else None
    if last_submit is None:
        return True
    if dtype.health_denominator == "jobs":
        since = TestJob.select().where(
            TestJob.actual_device == device.id, TestJob.health_check == False,  # noqa: E712
            TestJob.start_time > last_submit,
        ).count()
        return since >= dtype.health_frequency
    return last_submit + timedelta(hours=dtype.health_frequency) < utcnow()


def health_user() -> User:
    user, _ = User.get_or_create(username=HEALTH_ACTOR, defaults={"is_active": True})
    return user


def start_health_check(device: Device, definition: str, settings: Settings) -> TestJob | None:
    try:
        sub = submissions.check_definition(None, definition, settings, device=device)
    except ApiError as exc:
        set_health(device, DeviceHealth.BAD, f"invalid health check: {exc.path}: {exc.message}", HEALTH_ACTOR)
        return None
    try:  # as LAVA: a device whose configuration does not render is Bad, not scheduled
        render(device, settings, sub.job.get("context") or {})
    except ApiError as exc:
        set_health(device, DeviceHealth.BAD, f"invalid device configuration: {exc.message}", HEALTH_ACTOR)
        return None
    with write_txn():
        job = jobs.create(health_user(), sub, health_check=True, device=device)
        if not assign(job, device):
            raise RuntimeError("unreachable: the device was idle inside this transaction")
    wake_worker(device.worker_id)
    return job


# -- jobs ------------------------------------------------------------------------------------


def queued_jobs(device_types: set[int]) -> list[Queued | QueuedGroup]:
    """Submitted jobs for these device types in scheduling order (priority, submit time, id);
    a MultiNode group is one entry with all its sub-jobs (scheduler_groups.entries)."""
    return scheduler_groups.entries([q for page in scheduler_queue.pages(device_types) for q in page])


def schedule_jobs(available: list[FreeDevice], capacity: dict[int, int], report: PassReport) -> None:
    devices = [d for d in available if d.health in (DeviceHealth.GOOD, DeviceHealth.UNKNOWN)
               and capacity.get(d.worker_id, 0) > 0]
    if not devices:
        return  # nothing free: don't read the queue at all
    random.shuffle(devices)  # as LAVA: spread load instead of always picking the first device
    device_tags: dict[int, set[int]] = defaultdict(set, {d.id: set(d.tags) for d in devices if d.tags})
    memberships: dict[int, set[int]] = defaultdict(set)  # of the submitters read (_load_submitters)
    # All assignments of the pass in one transaction: one commit (one fsync) instead of one per
    # job. The pass decides against what it read, then writes its batch; each UPDATE stays
    # conditional, and when any lost a race (a cancel, an admin) the batch is rolled back and
    # the pass is made again one conditional assignment at a time, as a lost race is handled.
    with write_txn():
        exclusive(PASS_LOCK)  # two passes reserving rows in random orders would deadlock on PostgreSQL
        pending: list[tuple[int, FreeDevice]] = []
        before = dict(capacity)
        scheduled, to_wake = _decide(devices, capacity, device_tags, memberships,
                                     lambda job_id, device: pending.append((job_id, device)) is None)
        if not _reserve_pending(pending):
            capacity.clear()
            capacity.update(before)
            scheduled, to_wake = _decide(devices, capacity, device_tags, memberships, _reserve)
        count_wakes(to_wake)
    report.scheduled.extend(scheduled)
    for worker_id in sorted(to_wake):  # after the commit: a woken worker must find its jobs
        publish(WORKER_WAKE, worker_id)


def _reserve_pending(pending: list[tuple[int, FreeDevice]]) -> bool:
    """Make the pass's batch of assignments; False (and none made) when any lost a race."""
    if not pending:
        return True
    if len(pending) == 1:  # one device freed: no savepoint, reserve undoes its own half
        return _reserve(*pending[0])
    with database.atomic() as batch:
        if reserve_many(pending):
            return True
        batch.rollback()
    return False


def _decide(devices: list[FreeDevice], capacity: dict[int, int], device_tags: dict[int, set[int]],
            memberships: dict[int, set[int]], reserve: scheduler_groups.Reserve) -> tuple[list[int], set[int]]:
    """Walk the queue best first, giving each entry the first free device that fits it; returns
    the jobs assigned and the workers to wake. `reserve` records or makes each assignment."""
    users: dict[int, Submitter] = {}
    index = FreeIndex(devices, capacity, device_tags, users, memberships)
    verdicts: dict[tuple, bool] = {}  # MultiNode planning: jobs alike (submitter, tags, pin) fit alike

    def fits(q: Queued, device: FreeDevice | Device) -> bool:
        key = (q.submitter_id, q.tags, q.requested_device_id, device.id)
        if key not in verdicts:
            verdicts[key] = _fits(q, device, device_tags[device.id], users, memberships)
        return verdicts[key]

    held: set[int] = set()  # Idle devices a waiting group keeps from the entries behind it
    scheduled: list[int] = []
    to_wake: set[int] = set()
    seen_groups: set[str] = set()
    # Only the queue of the device types that have a free device: one freed device reads little.
    # One device freed: the queue read returns only rows that could take it, and the first single
    # job among them does: a page of 2 (a MultiNode sub-job may come first), not one of 64.
    only = devices[0] if len(devices) == 1 else None
    first = 2 if only is not None else max(64, 2 * len(devices))
    for page in scheduler_queue.pages(index.open_types(), first=first, only=only):
        _load_submitters(users, memberships, page)
        for entry in scheduler_groups.entries(page, seen_groups):
            if not index.any_open():
                break
            if isinstance(entry, QueuedGroup):
                _load_submitters(users, memberships, entry.members)
                assigned = _assign_group(entry, index, held, fits, reserve)
            else:
                device = index.first_fit(entry.device_type_id, entry.submitter_id, entry.tags,
                                         entry.requested_device_id)
                assigned = [(entry, device)] if device is not None and reserve(entry.id, device) else []
            for q, device in assigned:
                index.take(device)
                scheduled.append(q.id)
                to_wake.add(device.worker_id)
        if not index.any_open():
            break
    return scheduled, to_wake


def _load_submitters(users: dict[int, Submitter], memberships: dict[int, set[int]], queued: list[Queued]) -> None:
    scheduler_reads.load_submitters(users, memberships, {q.submitter_id for q in queued})


def _assign_group(group: QueuedGroup, index: FreeIndex, held: set[int], fits: Callable[[Queued, FreeDevice], bool],
                  reserve: scheduler_groups.Reserve) -> list[tuple[Queued, FreeDevice]]:
    """All of the group's sub-jobs on devices at once, or none (scheduler_groups)."""
    free = index.free_lists()
    assignments = scheduler_groups.plan(group, free, index.capacity, held, fits)
    if assignments is not None:
        return assignments if scheduler_groups.reserve(assignments, reserve) else []
    usable = scheduler_groups.usable_devices({q.device_type_id for q in group.members}, list(index.capacity))
    more = scheduler_groups.hold(group, free, usable, fits)
    held |= more
    index.hold(more)
    return []


def _fits(q: Queued, device: FreeDevice | Device, tags: set[int], users: dict[int, Submitter],
          groups: dict[int, set[int]]) -> bool:
    if q.requested_device_id not in (None, device.id):
        return False
    if not q.tags <= tags:
        return False
    user = users.get(q.submitter_id)
    return user is not None and auth.may_submit_to(user, device, groups[user.id])


def assign(job: TestJob, device: Device) -> bool:
    """Reserve `device` for `job` atomically; False when either was taken meanwhile."""
    with write_txn():
        return _reserve(job.id, device)


# -- queue timeouts --------------------------------------------------------------------------


def expire_queued(report: PassReport) -> None:
    """Cancel every Submitted job past its queue timeout, in one write transaction.

    No stored row can make a pass fail here: a submission's queue timeout is bounded by the job
    schema, and a row that still cannot be computed (too large for datetime arithmetic, or no
    submit time) is logged and its queue timeout cleared, so it waits like a job without one.
    """
    now = utcnow()
    rows = scheduler_queue.with_queue_timeout()
    due: dict[int, list[int]] = defaultdict(list)  # queue timeout -> job ids: one comment per timeout
    broken = []
    for job_id, submitted, timeout in list(rows):  # materialised: an open SELECT pins a stale SQLite snapshot
        try:
            if submitted + timedelta(seconds=timeout) < now:
                due[timeout].append(job_id)
        except (TypeError, ValueError, OverflowError):
            log.warning("job %d: queue timeout %r s from %r cannot be computed; cleared", job_id, timeout, submitted)
            broken.append(job_id)
    if not due and not broken:
        return
    expired: list[int] = []
    with write_txn():
        for chunk in _chunks(broken):
            TestJob.update(queue_timeout=None).where(TestJob.id.in_(chunk)).execute()
        for timeout, ids in sorted(due.items()):
            for chunk in _chunks(ids):
                still = TestJob.select(TestJob.id).where(TestJob.id.in_(chunk), TestJob.state == JobState.SUBMITTED)
                still = [row[0] for row in (still if is_sqlite() else still.for_update()).tuples()]
                if not still:
                    continue
                TestJob.update(
                    state=JobState.FINISHED, health=JobHealth.CANCELED, end_time=now,
                    failure_comment=f"queue timeout: not scheduled within {timeout} s",
                ).where(TestJob.id.in_(still), TestJob.state == JobState.SUBMITTED).execute()
                expired.extend(still)
    report.timed_out.extend(expired)
    for job_id in expired:  # after the commit: whoever hears it reads the job Finished
        job_changed(job_id, "finished")


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    """`ids` in slices below any SQLite variable limit."""
    return [ids[start:start + size] for start in range(0, len(ids), size)]
