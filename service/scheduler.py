"""One scheduling pass: worker liveness, health checks first, then queued jobs, then queue timeouts.

Semantics follow LAVA's scheduler (lava-interfaces.md §4). A pass may run concurrently with
another pass or with submissions: each assignment is a pair of conditional UPDATEs (device
Idle → Reserved, job Submitted → Scheduled) and is undone when either loses the race, so a
device can never get two jobs. A pass makes all its assignments in one transaction (one
commit), and the assigning parts of concurrent passes take turns.
"""

from __future__ import annotations

import functools
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from peewee import Field

from . import auth, scheduler_groups
from .config import Settings
from .db import database, exclusive, is_sqlite, write_txn
from .devicecfg import health_check_definition, render
from .errors import ApiError
from .events import WORKER_OFFLINE, job_changed, publish, wake_worker
from .lab import jobs, submissions, workers
from .lab.devices import HEALTH_ACTOR, set_health
from .models import Device, DeviceTag, DeviceType, GroupMember, JobTag, TestJob, User, Worker, utcnow
from .scheduler_groups import Queued, QueuedGroup
from .states import DeviceHealth, DeviceState, JobHealth, JobState, WorkerHealth, WorkerState

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
    check_workers(settings, report)
    capacity = worker_capacity()
    available = schedule_health_checks(settings, capacity, report)
    schedule_jobs(available, capacity, report)
    expire_queued(report)
    return report


# -- workers ---------------------------------------------------------------------------------


def check_workers(settings: Settings, report: PassReport) -> None:
    """Workers whose heartbeats stopped go Offline (their devices are offered to no job, see
    `worker_capacity`); their jobs end only once their own timeout has passed (fencing)."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.worker_heartbeat_timeout)
    for worker in list(Worker.select().where(Worker.state == WorkerState.ONLINE, Worker.last_ping < stale)):
        if Worker.update(state=WorkerState.OFFLINE, offline_since=now).where(
                Worker.id == worker.id, Worker.state == WorkerState.ONLINE).execute():
            publish(WORKER_OFFLINE, worker.id)
        report.workers_offline.append(worker.hostname)
        log.warning("worker %s missed its heartbeats (last %s): Offline", worker.hostname, worker.last_ping)
    for job_id in workers.end_abandoned_jobs(settings.worker_offline_grace):
        report.abandoned.append(job_id)
        log.warning("job %d: its worker is offline past the job's timeout: Incomplete", job_id)


def worker_capacity() -> dict[int, int]:
    """Free job slots per usable (Online + Active) worker; unlimited is a large number."""
    busy: dict[int, int] = defaultdict(int)
    for device in Device.select(Device.worker).where(
        Device.state.in_([DeviceState.RESERVED, DeviceState.RUNNING])
    ):
        busy[device.worker_id] += 1
    free = {}
    for worker in Worker.select().where(Worker.state == WorkerState.ONLINE, Worker.health == WorkerHealth.ACTIVE):
        limit = worker.job_limit or 1_000_000
        free[worker.id] = limit - busy[worker.id]
    return free


def idle_devices(capacity: dict[int, int], healths: tuple[int, ...]) -> list[Device]:
    return list(
        Device.select(Device, DeviceType)
        .join(DeviceType)
        .where(
            Device.state == DeviceState.IDLE,
            Device.current_job.is_null(),
            Device.health.in_(healths),
            Device.worker.in_(list(capacity) or [0]),
            DeviceType.display == True,  # noqa: E712 (peewee expression)
        )
        .order_by(DeviceType.name, Device.hostname)
    )


# -- health checks ---------------------------------------------------------------------------


def schedule_health_checks(settings: Settings, capacity: dict[int, int], report: PassReport) -> list[Device]:
    """Start due health checks; return the devices left available for normal jobs."""
    available = []
    candidates = idle_devices(capacity, (DeviceHealth.GOOD, DeviceHealth.UNKNOWN, DeviceHealth.LOOPING))
    last_reports = _submit_times([d.last_health_report_job_id for d in candidates])
    # Devices of one type with one dictionary share their health check: read the file once a pass.
    definitions: dict[tuple[int, str], str | None] = {}
    for device in candidates:
        dtype = device.device_type
        definition = None
        if not dtype.disable_health_checks and health_check_due(device, dtype, last_reports):
            key = (dtype.id, device.dictionary)
            if key not in definitions:
                definitions[key] = health_check_definition(device, settings)
            definition = definitions[key]
        if definition is None:
            if device.health != DeviceHealth.LOOPING:
                available.append(device)
            continue
        if capacity.get(device.worker_id, 0) <= 0:
            continue
        job = start_health_check(device, definition, settings)
        if job is not None:
            capacity[device.worker_id] -= 1
            report.health_checks.append(job.id)
    return available


def _submit_times(job_ids: list[int | None]) -> dict[int, datetime]:
    ids = sorted({i for i in job_ids if i})
    out: dict[int, datetime] = {}
    for start in range(0, len(ids), 500):  # below any SQLite variable limit
        chunk = ids[start:start + 500]
        out.update(TestJob.select(TestJob.id, TestJob.submit_time).where(TestJob.id.in_(chunk)).tuples())
    return out


def health_check_due(device: Device, dtype: DeviceType, last_reports: dict[int, datetime] | None = None) -> bool:
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
            TestJob.actual_device == device, TestJob.health_check == False,  # noqa: E712
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
    types = sorted(device_types)
    tags: dict[int, set[int]] = defaultdict(set)
    for jt in JobTag.select(JobTag.job, JobTag.tag).join(TestJob).where(
            TestJob.state == JobState.SUBMITTED, TestJob.requested_device_type.in_(types)):
        tags[jt.job_id].add(jt.tag_id)
    rows = (
        TestJob.select(TestJob.id, TestJob.requested_device_type, TestJob.submitter, TestJob.requested_device,
                       TestJob.target_group)
        .where(TestJob.state == JobState.SUBMITTED, TestJob.actual_device.is_null(),
               TestJob.requested_device_type.in_(types))
        .order_by(TestJob.priority.desc(), TestJob.submit_time, TestJob.id)
        .tuples()
    )
    return scheduler_groups.entries([Queued(job_id, dtype, submitter, requested, frozenset(tags[job_id]), group)
                           for job_id, dtype, submitter, requested, group in rows])


def schedule_jobs(available: list[Device], capacity: dict[int, int], report: PassReport) -> None:
    devices = [d for d in available if d.health in (DeviceHealth.GOOD, DeviceHealth.UNKNOWN)
               and capacity.get(d.worker_id, 0) > 0]
    if not devices:
        return  # nothing free: don't read the queue at all
    # Only the queue of the device types that have a free device: one freed device reads little.
    queue = queued_jobs({d.device_type_id for d in devices})
    if not queue:
        return
    random.shuffle(devices)  # as LAVA: spread load instead of always picking the first device
    free: dict[int, list[Device]] = defaultdict(list)
    for device in devices:
        free[device.device_type_id].append(device)
    device_tags: dict[int, set[int]] = defaultdict(set)
    for dt in DeviceTag.select(DeviceTag.device, DeviceTag.tag).where(DeviceTag.device.in_([d.id for d in devices])):
        device_tags[dt.device_id].add(dt.tag_id)
    memberships = _memberships()
    submitters = {q.submitter_id for e in queue for q in (e.members if isinstance(e, QueuedGroup) else [e])}
    users = {u.id: u for u in User.select().where(User.id.in_(submitters))}

    verdicts: dict[tuple, bool] = {}  # jobs alike (submitter, tags, pin) fit the same devices

    def fits(q: Queued, device: Device) -> bool:
        key = (q.submitter_id, q.tags, q.requested_device_id, device.id)
        if key not in verdicts:
            verdicts[key] = _fits(q, device, device_tags[device.id], users, memberships)
        return verdicts[key]

    held: set[int] = set()  # Idle devices a waiting group keeps from the entries behind it
    to_wake: set[int] = set()
    # All assignments of the pass in one transaction: one commit (one fsync) instead of one per
    # job. Each stays conditional, so a concurrent pass or a cancel still cannot double-book.
    with write_txn():
        exclusive(PASS_LOCK)  # two passes reserving rows in random orders would deadlock on PostgreSQL
        for entry in queue:
            if not any(free.values()):
                break
            if isinstance(entry, QueuedGroup):
                assigned = _assign_group(entry, free, capacity, held, fits)
            else:
                assigned = _assign_one(entry, free, capacity, held, fits)
            for q, device in assigned:
                free[device.device_type_id].remove(device)
                capacity[device.worker_id] -= 1
                report.scheduled.append(q.id)
                to_wake.add(device.worker_id)
    for worker_id in sorted(to_wake):  # after the commit: a woken worker must find its jobs
        wake_worker(worker_id)


def _assign_one(q: Queued, free: dict[int, list[Device]], capacity: dict[int, int], held: set[int],
                fits: Callable[[Queued, Device], bool]) -> list[tuple[Queued, Device]]:
    for device in free.get(q.device_type_id, []):
        if device.id in held or capacity.get(device.worker_id, 0) <= 0 or not fits(q, device):
            continue
        return [(q, device)] if _reserve(q.id, device) else []
    return []


def _assign_group(group: QueuedGroup, free: dict[int, list[Device]], capacity: dict[int, int], held: set[int],
                  fits: Callable[[Queued, Device], bool]) -> list[tuple[Queued, Device]]:
    """All of the group's sub-jobs on devices at once, or none (scheduler_groups)."""
    assignments = scheduler_groups.plan(group, free, capacity, held, fits)
    if assignments is not None:
        return assignments if scheduler_groups.reserve(assignments, _reserve) else []
    usable = scheduler_groups.usable_devices({q.device_type_id for q in group.members}, list(capacity))
    held |= scheduler_groups.hold(group, free, usable, fits)
    return []


def _memberships() -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for m in GroupMember.select(GroupMember.user, GroupMember.group):
        out[m.user_id].add(m.group_id)
    return out


def _fits(q: Queued, device: Device, tags: set[int], users: dict[int, User], groups: dict[int, set[int]]) -> bool:
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


def _reserve(job_id: int, device: Device) -> bool:
    """The two conditional UPDATEs of an assignment; the caller holds a write transaction.

    Plain SQL built once: a pass may make a thousand of these, and building each statement with
    peewee's query builder cost more than running it.
    """
    device_sql, job_sql, undo_sql = _reserve_statements(database.param)
    params = (int(DeviceState.RESERVED), job_id, device.id, int(DeviceState.IDLE))
    if database.execute_sql(device_sql, params).rowcount != 1:
        return False
    now = TestJob.scheduled_time.db_value(utcnow())
    params = (int(JobState.SCHEDULED), device.id, device.worker_id, now, job_id, int(JobState.SUBMITTED))
    if database.execute_sql(job_sql, params).rowcount != 1:
        database.execute_sql(undo_sql, (int(DeviceState.IDLE), device.id))
        return False
    return True


@functools.cache
def _reserve_statements(p: str) -> tuple[str, str, str]:
    """The statements for a driver whose placeholder is `p` ('?' for SQLite, '%s' for psycopg2)."""

    def col(field: Field) -> str:
        return f'"{field.column_name}"'

    device = f'"{Device._meta.table_name}"'
    job = f'"{TestJob._meta.table_name}"'
    return (
        f"UPDATE {device} SET {col(Device.state)} = {p}, {col(Device.current_job)} = {p} "
        f"WHERE {col(Device.id)} = {p} AND {col(Device.state)} = {p} AND {col(Device.current_job)} IS NULL",
        f"UPDATE {job} SET {col(TestJob.state)} = {p}, {col(TestJob.actual_device)} = {p}, "
        f"{col(TestJob.worker)} = {p}, {col(TestJob.scheduled_time)} = {p} "
        f"WHERE {col(TestJob.id)} = {p} AND {col(TestJob.state)} = {p}",
        f"UPDATE {device} SET {col(Device.state)} = {p}, {col(Device.current_job)} = NULL WHERE {col(Device.id)} = {p}",
    )


# -- queue timeouts --------------------------------------------------------------------------


def expire_queued(report: PassReport) -> None:
    """Cancel every Submitted job past its queue timeout, in one write transaction.

    No stored row can make a pass fail here: a submission's queue timeout is bounded by the job
    schema, and a row that still cannot be computed (too large for datetime arithmetic, or no
    submit time) is logged and its queue timeout cleared, so it waits like a job without one.
    """
    now = utcnow()
    rows = (TestJob.select(TestJob.id, TestJob.submit_time, TestJob.queue_timeout)
            .where(TestJob.state == JobState.SUBMITTED, TestJob.queue_timeout.is_null(False)).tuples())
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
