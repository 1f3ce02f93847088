"""scheduler.workers.* over lab/workers.py (lavacli's system maintenance/active drive workers.update)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..errors import ApiError
from ..lab import worker_files, workers
from ..lab.checks import as_datetime
from . import BAD_REQUEST, CONFLICT, NOT_FOUND, Call, Fault, binary, exposed, lava_message, string

#: last_ping of a worker that never polled: lavacli reads `.value` of it, so nil would crash it
NEVER = dt.datetime(1970, 1, 1)


@exposed("scheduler.workers.list")
def list_workers(call: Call, show_all: bool = False) -> list:
    """Worker hostnames; Retired ones only with `show_all`."""
    return [w.hostname for w in workers.list_workers(include_retired=bool(show_all))]


@exposed("scheduler.workers.show")
def show(call: Call, hostname: str) -> dict:
    """Details of one worker. Its token is never shown (only its hash is stored)."""
    worker = workers.get_worker(string(hostname, "hostname"))
    info = workers.worker_json(worker, time=as_datetime)
    kinds = worker_files.kinds_set(worker)
    return {
        "hostname": info["hostname"],
        "description": info["description"],
        "state": info["state"],
        "health": info["health"],
        "devices": info["devices"],
        "last_ping": info["last_ping"] or NEVER,
        "job_limit": info["job_limit"],
        "version": info["version"] or None,
        # False: the server keeps this worker's own file (lab/worker_files.py)
        "default_config": "dispatcher" not in kinds,
        "default_env": "env" not in kinds,
        "default_env_dut": "env-dut" not in kinds,
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


# Per-worker files (LAVA's dispatcher.d/<worker>.yaml, env.yaml, env-dut.yaml) #######

#: how LAVA's faults name each kind when a worker has none
_WHAT = {"config": "a configuration", "env": "an environment", "env_dut": "a DUT environment"}


def _get(call: Call, hostname: str, kind: str) -> Any:
    call.require("lava_scheduler_app.change_worker")  # env files may hold credentials
    try:
        text = worker_files.get_text(string(hostname, "hostname"), kind)
    except ApiError as exc:
        raise _fault(exc) from None
    if not text:
        raise Fault(NOT_FOUND, f"Worker '{hostname}' does not have {_WHAT[kind]}")
    return binary(text)


def _set(call: Call, hostname: str, kind: str, text: str) -> bool:
    call.require("lava_scheduler_app.change_worker")
    try:
        worker_files.set_text(string(hostname, "hostname"), kind, string(text, kind))
    except ApiError as exc:
        raise _fault(exc) from None
    return True


@exposed("scheduler.workers.get_config")
def get_config(call: Call, hostname: str) -> Any:
    """The worker's dispatcher configuration (LAVA's dispatcher.d/<worker>.yaml)."""
    return _get(call, hostname, "config")


@exposed("scheduler.workers.set_config")
def set_config(call: Call, hostname: str, config: str) -> bool:
    """Store the worker's dispatcher configuration (YAML, checked); an empty string deletes it."""
    return _set(call, hostname, "config", config)


@exposed("scheduler.workers.get_env")
def get_env(call: Call, hostname: str) -> Any:
    """The environment dutlab-run gets on this worker (env.yaml: purge, removes, overrides)."""
    return _get(call, hostname, "env")


@exposed("scheduler.workers.set_env")
def set_env(call: Call, hostname: str, env: str) -> bool:
    """Store the worker's env.yaml (checked); an empty string deletes it."""
    return _set(call, hostname, "env", env)


@exposed("scheduler.workers.get_env_dut")
def get_env_dut(call: Call, hostname: str) -> Any:
    """The environment of the test shell on this worker's devices (env-dut.yaml)."""
    return _get(call, hostname, "env_dut")


@exposed("scheduler.workers.set_env_dut")
def set_env_dut(call: Call, hostname: str, env: str) -> bool:
    """Store the worker's env-dut.yaml (checked); an empty string deletes it."""
    return _set(call, hostname, "env_dut", env)
