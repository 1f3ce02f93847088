"""scheduler.workers.* over lab/workers.py (lavacli's system maintenance/active drive workers.update)."""

from __future__ import annotations

import datetime as dt

from ..errors import ApiError
from ..lab import workers
from ..lab.checks import as_datetime
from . import BAD_REQUEST, CONFLICT, Call, Fault, exposed, lava_message, string

#: last_ping of a worker that never polled: lavacli reads `.value` of it, so nil would crash it
NEVER = dt.datetime(1970, 1, 1)


@exposed("scheduler.workers.list")
def list_workers(call: Call, show_all: bool = False) -> list:
    """Worker hostnames; Retired ones only with `show_all`."""
    return [w.hostname for w in workers.list_workers(include_retired=bool(show_all))]


@exposed("scheduler.workers.show")
def show(call: Call, hostname: str) -> dict:
    """Details of one worker. Its token is never shown (only its hash is stored)."""
    info = workers.worker_json(workers.get_worker(string(hostname, "hostname")), time=as_datetime)
    return {
        "hostname": info["hostname"],
        "description": info["description"],
        "state": info["state"],
        "health": info["health"],
        "devices": info["devices"],
        "last_ping": info["last_ping"] or NEVER,
        "job_limit": info["job_limit"],
        "version": info["version"] or None,
        # dutlab keeps no per-worker dispatcher.yaml / env files: every worker uses the defaults
        "default_config": True,
        "default_env": True,
        "default_env_dut": True,
    }


def _fault(exc: ApiError) -> Fault:
    if exc.status == CONFLICT:  # LAVA answers a duplicate with a 400
        return Fault(BAD_REQUEST, f"Bad request: {exc.message}")
    return Fault(exc.status, lava_message(exc.message))


@exposed("scheduler.workers.add")
def add(call: Call, hostname: str, description: str | None = None, disabled: bool = False) -> None:
    """Add a worker (Retired when `disabled`). Its token is not returned here: get one with
    `dutlab-server manage workers token NAME` or POST /api/v1/workers/NAME/token."""
    call.require("lava_scheduler_app.add_worker")
    data = {"hostname": string(hostname, "hostname"), "health": "Retired" if disabled else "Active"}
    if description is not None:
        data["description"] = description
    try:
        workers.create_worker(data)
    except ApiError as exc:
        raise _fault(exc) from None


@exposed("scheduler.workers.update")
def update(call: Call, hostname: str, description: str | None = None, health: str | None = None,
           job_limit: int | None = None) -> None:
    """Change a worker: description, health (ACTIVE, MAINTENANCE, RETIRED), job limit (0: none).
    Nil arguments stay as they are; lavacli sends 3 or 4 of them."""
    user = call.require("lava_scheduler_app.change_worker")
    changes = {key: value for key, value in
               {"description": description, "health": health, "job_limit": job_limit}.items() if value is not None}
    if "health" in changes:
        changes["reason"] = "XML-RPC"
    try:
        workers.update_worker(string(hostname, "hostname"), changes, user.username)
    except ApiError as exc:
        raise _fault(exc) from None


@exposed("scheduler.workers.delete")
def delete(call: Call, hostname: str) -> None:
    """Remove a worker that has no devices."""
    call.require("lava_scheduler_app.delete_worker")
    workers.delete_worker(string(hostname, "hostname"))
