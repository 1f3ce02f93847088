"""Dispatcher workers: the admin's view (health, job limit, token) and the worker's own
(heartbeats, and what it must start, cancel and forget at each poll).

A worker is Online while it polls (its heartbeat) and Offline when the scheduler sees its
heartbeats stop; its health is the admin's. A worker's token is shown once, when it is made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from dutlab.dispatcher.protocol import ENDED_PROTOCOL, ErrorType, JobResult

from .. import auth, events
from ..db import execute_prebuilt, rows_prebuilt, write_txn
from ..errors import bad_request, conflict
from ..models import Device, TestJob, Worker, utcnow
from ..states import JobHealth, JobState, WorkerHealth, WorkerState
from .checks import check_fields, grouped, insert, integer, iso, label, lookup, name, text
from .definitions import stored_seconds
from .devices import ADMIN_ACTOR, follow_worker_health
from .jobs import ACTIVE, finish

WORKER_FIELDS = ("hostname", "description", "health", "job_limit")
#: a job the worker no longer runs, started this long ago, has ended without a report
UNREPORTED_END = timedelta(seconds=60)
#: a poll writes last_ping only when the stored one is older than this, or than a tenth of
#: worker_heartbeat_timeout (30 s by default): a busy worker polls several times a second, and
#: every write is a commit
PING_RESOLUTION = timedelta(seconds=2)
#: the largest id the job table's integer key holds (PostgreSQL's integer)
MAX_JOB_ID = 2**31 - 1


def get_worker(hostname: str, path: str | None = None) -> Worker:
    return lookup(Worker, "hostname", hostname, "worker", path)


def worker_json(worker: Worker, devices: bool = True, time: Callable[[Any], Any] = iso,
                hostnames: list[str] | None = None) -> dict:
    """The one shape of a worker (never its token); `time` as in `job_views.job_json`; `hostnames`,
    its devices as `workers_json` read them for a whole page."""
    out = {
        "hostname": worker.hostname,
        "description": worker.description,
        "state": WorkerState(worker.state).label,
        "health": WorkerHealth(worker.health).label,
        "job_limit": worker.job_limit,
        "version": worker.version,
        "last_ping": time(worker.last_ping),
    }
    if devices:
        out["devices"] = hostnames if hostnames is not None else device_hostnames([worker]).get(worker.id, [])
    return out


def device_hostnames(found: list[Worker]) -> dict[int, list[str]]:
    """{worker id: its devices' hostnames, sorted} for these workers, in one query."""
    query = (Device.select(Device.worker, Device.hostname).where(Device.worker.in_([w.id for w in found]))
             .order_by(Device.hostname).tuples())
    return grouped(query)


def workers_json(found: list[Worker], devices: bool = True, time: Callable[[Any], Any] = iso) -> list[dict]:
    """`worker_json` of each worker, in a fixed number of queries (none without `devices`)."""
    hostnames = device_hostnames(found) if devices else {}
    return [worker_json(w, devices, time, hostnames.get(w.id, [])) for w in found]


def list_workers(include_retired: bool = True, health: Any = None, state: Any = None) -> list[Worker]:
    query = Worker.select().order_by(Worker.hostname)
    if not include_retired:
        query = query.where(Worker.health != WorkerHealth.RETIRED)
    if health not in (None, ""):
        query = query.where(Worker.health == label(WorkerHealth, health, "health"))
    if state not in (None, ""):
        query = query.where(Worker.state == label(WorkerState, state, "state"))
    return list(query)


def create_worker(data: Mapping[str, Any]) -> tuple[Worker, str]:
    """Add a worker; return it and its token (the only time the token is shown)."""
    check_fields(data, WORKER_FIELDS, required=("hostname",))
    hostname = name(data["hostname"], "hostname", "worker hostname", 200)
    if Worker.get_or_none(Worker.hostname == hostname):
        raise conflict(f"worker '{hostname}' already exists", "hostname")
    health = label(WorkerHealth, data.get("health") or "Active", "health")
    secret = auth.new_secret()
    worker = insert(lambda: Worker.create(
        hostname=hostname,
        description=text(data.get("description"), "description"),
        health=health,
        job_limit=integer(data.get("job_limit") or 0, "job_limit"),
        token_hash=auth.hash_secret(secret),
    ), f"worker '{hostname}'", "hostname")
    return worker, secret


def update_worker(hostname: str, changes: Mapping[str, Any], actor: str = ADMIN_ACTOR) -> Worker:
    """Change the given fields; a `health` change (with an optional `reason`) applies LAVA's
    rules to the worker's devices (`devices.follow_worker_health`)."""
    worker = get_worker(hostname)
    check_fields(changes, WORKER_FIELDS + ("reason",))
    if "hostname" in changes and changes["hostname"] != hostname:
        raise bad_request("a worker cannot be renamed; add a new one and move its devices", "hostname")
    fields: dict[str, Any] = {}
    if "description" in changes:
        fields["description"] = text(changes["description"], "description")
    if "job_limit" in changes:
        fields["job_limit"] = integer(changes["job_limit"], "job_limit")
    new_health = None
    if changes.get("health") is not None:
        new_health = label(WorkerHealth, changes["health"], "health")
    reason = text(changes.get("reason"), "reason")
    with write_txn():
        if fields:
            Worker.update(**fields).where(Worker.id == worker.id).execute()
        if new_health is not None and new_health != worker.health:
            old = WorkerHealth(worker.health)
            Worker.update(health=new_health).where(Worker.id == worker.id).execute()
            why = f"worker {worker.hostname} {old.label} → {new_health.label}" + (f" ({reason})" if reason else "")
            follow_worker_health(worker, old, new_health, why, actor)
    events.wake_worker(worker.id)
    events.schedule_soon(f"worker {hostname} changed")
    return Worker.get_by_id(worker.id)


def delete_worker(hostname: str) -> None:
    worker = get_worker(hostname)
    names = [d.hostname for d in worker.devices.order_by(Device.hostname)]
    if names:
        raise conflict(f"worker '{hostname}' still has devices ({', '.join(names)}); "
                       "move them to another worker or delete them first")
    worker.delete_instance()


def regenerate_worker_token(hostname: str) -> str:
    """A new token for the worker; the old one stops working at once."""
    worker = get_worker(hostname)
    secret = auth.new_secret()
    Worker.update(token_hash=auth.hash_secret(secret)).where(Worker.id == worker.id).execute()
    return secret


# The worker's side ################################################################


def heartbeat(worker: Worker, version: str, protocol: int, timeout: float) -> None:
    """A poll arrived: the worker is Online; coming back from Offline asks for a pass.
    `timeout`: worker_heartbeat_timeout, which bounds how stale last_ping may be left."""
    was_offline = worker.state == WorkerState.OFFLINE
    now, version = utcnow(), version[:50]
    if (worker.state != WorkerState.ONLINE or worker.offline_since is not None or worker.version != version
            or worker.protocol != protocol or not _recent(worker.last_ping, now, timeout)):
        execute_prebuilt("heartbeat", lambda state, v, p, ping, since, i: Worker.update(
            state=state, version=v, protocol=p, last_ping=ping, offline_since=since).where(Worker.id == i),
            WorkerState.ONLINE, version, protocol, now, None, worker.id)
        worker.last_ping = now
    if was_offline:
        worker.state = WorkerState.ONLINE
        events.schedule_soon(f"worker {worker.hostname} is online")


def work_for(worker: Worker, running: set[int], protocol: int = ENDED_PROTOCOL) -> dict:
    """What this worker must start (with a new job token each), cancel, kill and forget now.

    `running` is what the worker says it runs. A scheduled job it does not run yet starts; a
    Canceling one it never started ends Canceled; a started one it no longer runs and never
    reported ends Incomplete (Infrastructure) once UNREPORTED_END has passed. A run of a job
    the server has ended is `ended` (protocol 1: `unknown`, which such workers kill too), and no
    job starts on its device until the worker stops listing it: the kill comes first.
    """
    start, cancel = [], []
    # only the columns read here: every long-poll that wakes runs this for all the worker's jobs
    mine = rows_prebuilt(TestJob, "jobs of worker", lambda w, *states: TestJob.select(
        TestJob.id, TestJob.state, TestJob.actual_device, TestJob.start_time).where(
        TestJob.worker == w, TestJob.state.in_(states)), worker.id, *ACTIVE)
    known = {j.id for j in mine}
    maybe_ended = sorted(i for i in running - known if 0 < i <= MAX_JOB_ID)  # others cannot be a job id
    ended = list(TestJob.select(TestJob.id, TestJob.health, TestJob.failure_comment, TestJob.actual_device)
                 .where(TestJob.id.in_(maybe_ended), TestJob.worker == worker, TestJob.state == JobState.FINISHED)
                 ) if maybe_ended else []  # the common poll: nothing it runs is unknown here, no query
    still_driven = {j.actual_device_id for j in ended}
    for job in mine:
        if job.id in running:
            if job.state == JobState.CANCELING:
                cancel.append(job.id)
        elif job.state == JobState.SCHEDULED:
            if job.actual_device_id in still_driven:
                continue
            token = auth.new_secret()
            execute_prebuilt("job token", lambda h, i: TestJob.update(token_hash=h).where(TestJob.id == i),
                             auth.hash_secret(token), job.id)
            start.append({"id": job.id, "token": token})
        elif job.state == JobState.CANCELING and job.start_time is None:
            finish(job, JobResult.failed("Canceled", "canceled before the worker started it"))
        elif job.start_time is not None and utcnow() - job.start_time > UNREPORTED_END:
            finish(job, JobResult.failed(
                "Infrastructure", f"worker {worker.hostname} no longer runs job {job.id} and did not report its end"))
    if protocol < ENDED_PROTOCOL:
        return {"start": start, "cancel": cancel, "unknown": sorted(running - known)}
    return {"start": start, "cancel": cancel, "unknown": sorted(running - known - {j.id for j in ended}),
            "ended": [{"id": j.id, "health": JobHealth(j.health).label, "reason": j.failure_comment[:300]}
                      for j in sorted(ended, key=lambda j: j.id)]}


def end_abandoned_jobs(grace: float) -> list[int]:
    """End the jobs of Offline workers whose own timeout has passed; return their ids.

    Fencing (docs/worker.md): a job whose worker is gone keeps its device and its state while
    its run may still be driving the device, that is until `timeouts.job` plus `grace` (the
    run's finalize and its last upload) has passed since it started. Only then can the server
    be sure the run is over or stuck, and end the job Incomplete (Infrastructure, naming the
    worker); the device goes Unknown, and the worker kills what is left when it returns.
    """
    now = utcnow()
    ended = []
    for job in list(TestJob.select(TestJob, Worker).join(Worker).where(
            Worker.state == WorkerState.OFFLINE, TestJob.state.in_(ACTIVE))):
        limit = job_timeout(job)
        began = job.start_time or job.scheduled_time or job.submit_time
        # seconds, not datetimes: an absurd timeouts.job must not overflow (and fail the pass)
        if (now - began).total_seconds() <= limit + grace:
            continue
        worker = job.worker
        gone = (now - worker.last_ping).total_seconds() if worker.last_ping else None
        since = f"gone for {gone:.0f} s, last heartbeat {iso(worker.last_ping)}" if gone is not None else "never seen"
        finish(job, JobResult.failed(ErrorType.INFRASTRUCTURE, (
            f"worker {worker.hostname} is offline ({since}) and the job's timeout ({limit:g} s, plus {grace:g} s "
            f"to finalize and report) has passed since it started: the server ended it")), recheck=True)
        ended.append(job.id)
    return ended


def job_timeout(job: TestJob) -> float:
    """The job's own `timeouts.job` in seconds (0 for a definition that has none readable)."""
    try:
        return float(stored_seconds(json.loads(job.definition)["timeouts"]["job"]))
    except (KeyError, TypeError, ValueError):
        return 0.0


def mark_seen(worker: Worker, timeout: float) -> None:
    """The end of a long-poll counts as a heartbeat too (it may have waited many seconds)."""
    now = utcnow()
    if _recent(worker.last_ping, now, timeout):  # the poll's heartbeat wrote it moments ago
        return
    execute_prebuilt("worker seen", lambda ping, i: Worker.update(last_ping=ping).where(Worker.id == i),
                     now, worker.id)
    worker.last_ping = now


def _recent(ping: Any, now: Any, timeout: float) -> bool:
    return ping is not None and timedelta(0) <= now - ping < min(PING_RESOLUTION, timedelta(seconds=timeout / 10))
