"""Dispatcher workers: the admin's view (health, job limit, token) and the worker's own
(heartbeats, and what it must start, cancel and forget at each poll).

A worker is Online while it polls (its heartbeat) and Offline when the scheduler sees its
heartbeats stop; its health is the admin's. A worker's token is shown once, when it is made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from dutlab.dispatcher.protocol import JobResult

from .. import auth, events
from ..db import write_txn
from ..errors import bad_request, conflict
from ..models import Device, TestJob, Worker, utcnow
from ..states import JobState, WorkerHealth, WorkerState
from .checks import check_fields, insert, integer, iso, label, lookup, name, text
from .devices import ADMIN_ACTOR, follow_worker_health
from .jobs import ACTIVE, finish

WORKER_FIELDS = ("hostname", "description", "health", "job_limit")
#: a job the worker no longer runs, started this long ago, has ended without a report
UNREPORTED_END = timedelta(seconds=60)


def get_worker(hostname: str, path: str | None = None) -> Worker:
    return lookup(Worker, "hostname", hostname, "worker", path)


def worker_json(worker: Worker, devices: bool = True, time: Callable[[Any], Any] = iso) -> dict:
    """The one shape of a worker (never its token); `time` as in `jobs.job_json`."""
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
        out["devices"] = [d.hostname for d in worker.devices.order_by(Device.hostname)]
    return out


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


def heartbeat(worker: Worker, version: str, protocol: int) -> None:
    """A poll arrived: the worker is Online; coming back from Offline asks for a pass."""
    was_offline = worker.state == WorkerState.OFFLINE
    Worker.update(state=WorkerState.ONLINE, last_ping=utcnow(), offline_since=None,
                  version=version[:50], protocol=protocol).where(Worker.id == worker.id).execute()
    if was_offline:
        worker.state = WorkerState.ONLINE
        events.schedule_soon(f"worker {worker.hostname} is online")


def work_for(worker: Worker, running: set[int]) -> dict:
    """What this worker must start (with a new job token each), cancel and forget now.

    `running` is what the worker says it runs. A scheduled job it does not run yet starts; a
    Canceling one it never started ends Canceled; a started one it no longer runs and never
    reported ends Incomplete (Infrastructure) once UNREPORTED_END has passed.
    """
    start, cancel = [], []
    mine = list(TestJob.select().where(TestJob.worker == worker, TestJob.state.in_(ACTIVE)))
    for job in mine:
        if job.id in running:
            if job.state == JobState.CANCELING:
                cancel.append(job.id)
        elif job.state == JobState.SCHEDULED:
            token = auth.new_secret()
            TestJob.update(token_hash=auth.hash_secret(token)).where(TestJob.id == job.id).execute()
            start.append({"id": job.id, "token": token})
        elif job.state == JobState.CANCELING and job.start_time is None:
            finish(job, JobResult.failed("Canceled", "canceled before the worker started it"))
        elif job.start_time is not None and utcnow() - job.start_time > UNREPORTED_END:
            finish(job, JobResult.failed(
                "Infrastructure", f"worker {worker.hostname} no longer runs job {job.id} and did not report its end"))
    known = {j.id for j in mine}
    return {"start": start, "cancel": cancel, "unknown": sorted(running - known)}


def mark_seen(worker: Worker) -> None:
    """The end of a long-poll counts as a heartbeat too (it may have waited many seconds)."""
    Worker.update(last_ping=utcnow()).where(Worker.id == worker.id).execute()
