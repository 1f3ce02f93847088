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


def _register_file_methods(kind: str, what: str) -> None:
    """`scheduler.workers.get_<kind>` and `set_<kind>` (lavacli's `workers config|env|env-dut`)."""

    def get(call: Call, hostname: str) -> Any:
        return _get(call, hostname, kind)

    def put(call: Call, hostname: str, text: str) -> bool:
        return _set(call, hostname, kind, text)

    get.__doc__ = f"The worker's {what}."
    put.__doc__ = f"Store the worker's {what} (YAML, checked as the worker reads it); an empty string deletes it."
    exposed(f"scheduler.workers.get_{kind}")(get)
    exposed(f"scheduler.workers.set_{kind}")(put)


for _kind, _what in (("config", "dispatcher configuration (LAVA's dispatcher.d/<worker>.yaml)"),
                     ("env", "env.yaml: the environment of dutlab-run there (purge, removes, overrides)"),
                     ("env_dut", "env-dut.yaml: the environment of the test shell on its devices")):
    _register_file_methods(_kind, _what)
