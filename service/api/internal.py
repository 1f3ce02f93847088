"""The worker-facing API (docs/worker-api.md): long-poll, job fetch, state, logs, finish.

The protocol itself (version, paths, the job result) is `dutlab.dispatcher.protocol`, shared
with the worker; what each report changes is the domain's (`lab/workers.py`, `lab/jobs.py`,
`lab/results.py`). This module parses the bodies, holds the long-poll (woken by `wakeups`) and shapes the answers.
"""

from __future__ import annotations

import math
import re
import threading
import time

from bottle import request

from dutlab.dispatcher.protocol import (
    ENDED_PROTOCOL,
    JOB,
    JOB_FINISH,
    JOB_LOGS,
    JOB_STATE,
    OLDEST_PROTOCOL,
    POLL,
    PROTOCOL,
    JobResult,
    supported,
)

from .. import __version__, wakeups
from ..db import database, execute_prebuilt, is_sqlite
from ..errors import bad_request, conflict
from ..lab import jobs, results, worker_files, workers
from ..models import Worker
from ..plugins import current_job, current_worker, json_body
from ..states import JobState
from . import Routes

routes = Routes()
_waiting: dict[int, threading.BoundedSemaphore] = {}
#: the protocol's path fields and the route wildcards they become
_WILDCARDS = {"job_id": "<job_id:int>", "name": "<name>"}


def rule(template: str) -> str:
    """A protocol path template (`.../jobs/{job_id}`) as a route rule (`.../jobs/<job_id:int>`)."""
    return re.sub(r"\{(\w+)\}", lambda m: _WILDCARDS[m.group(1)], template)


def waiting_slot(threads: int) -> threading.BoundedSemaphore:
    """Long-polls may hold all but 8 server threads; past that they answer at once.

    A worker then simply polls again, so a lab with more workers than threads degrades to
    short polls instead of starving the API of threads.
    """
    return _waiting.setdefault(threads, threading.BoundedSemaphore(max(1, threads - 8)))


def _settings():
    return request.app.config["dutlab.settings"]


def check_protocol(value: object) -> int:
    try:
        proto = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise bad_request("'protocol' must be an integer", "protocol") from None
    if not supported(proto):
        spoken = f"{PROTOCOL}" if OLDEST_PROTOCOL == PROTOCOL else f"{OLDEST_PROTOCOL} to {PROTOCOL}"
        # the side that is behind is the one to upgrade (upgrade the server first: docs/worker.md)
        side = "upgrade dutlab on this worker" if proto < OLDEST_PROTOCOL else \
            f"upgrade dutlab on the server (it runs {__version__}) before this worker"
        raise conflict(f"worker protocol {proto} is not supported; the server speaks {spoken}: {side}", "protocol")
    return proto


def header_protocol() -> int:
    """The protocol a job request says it speaks (``Dutlab-Protocol``); this server's when absent."""
    try:
        return int(request.headers.get("Dutlab-Protocol") or PROTOCOL)
    except ValueError:
        return PROTOCOL


def _id_list(value: object, path: str) -> set[int]:
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad_request("must be a list of job ids (integers)", path)
    return set(value)


@routes.post(rule(POLL), auth="worker")
def poll(name: str) -> dict:
    settings = _settings()
    worker = current_worker()
    body = json_body()
    protocol = check_protocol(body.get("protocol"))
    running = _id_list(body.get("running"), "running")
    try:
        wait = float(body.get("wait", 0))
    except (TypeError, ValueError):
        raise bad_request("'wait' must be a number of seconds", "wait") from None
    if not math.isfinite(wait):
        raise bad_request("'wait' must be a finite number of seconds", "wait")
    wait = max(0.0, wait)
    wait = min(wait, settings.longpoll_timeout, settings.worker_heartbeat_timeout / 2)
    workers.heartbeat(worker, str(body.get("version", "")), protocol, settings.worker_heartbeat_timeout)
    answer = wait_for_work(worker, running, wait, settings.longpoll_interval, waiting_slot(settings.threads),
                           protocol, settings.longpoll_notify)
    workers.mark_seen(worker, settings.worker_heartbeat_timeout)
    return {"protocol": protocol, **answer}  # the answer is in the worker's protocol


def wait_for_work(worker: Worker, running: set[int], wait: float, interval: float,
                  slot: threading.BoundedSemaphore, protocol: int = PROTOCOL, notified: bool = True) -> dict:
    """Answer as soon as there is work: re-read only when the worker's wake counter moved.

    Between reads the poll sleeps until this worker is woken (service/wakeups.py) or, as a
    safety net for a lost wake-up, `interval` seconds pass; `notified=False` only sleeps.
    """
    deadline = time.monotonic() + wait
    seen = None
    holding = False
    try:
        while True:
            since = wakeups.mark(worker.id)  # before the read: a wake-up during it is not lost
            seq = execute_prebuilt("wake_seq", lambda i: Worker.select(Worker.wake_seq).where(Worker.id == i),
                                   worker.id).fetchall()
            if seq != seen:
                seen = seq
                answer = workers.work_for(worker, running, protocol)
                if answer["start"] or answer["cancel"] or answer["unknown"] or answer.get("ended"):
                    return answer
            left = deadline - time.monotonic()
            if left <= 0:
                return answer
            if not holding:
                holding = slot.acquire(blocking=False)
                if not holding:
                    return answer
            released = release_connection()
            if notified:
                woken = wakeups.wait(worker.id, since, min(interval, left))
            else:
                woken = False
                time.sleep(min(interval, left))
            if released:
                database.connect(reuse_if_open=True)
            if not woken and time.monotonic() >= deadline:
                return answer  # the worker polls again at once; its next poll reads first
    finally:
        if holding:
            slot.release()


def release_connection() -> bool:
    """Give this thread's database connection back while its poll sleeps: a held poll per idle
    worker must not hold a PostgreSQL connection each (max_connections is 100 by default).

    A SQLite connection is an open file with no server-side slot, so it is kept: reopening it
    (and setting its pragmas) on every wake-up and safety re-read was most of an idle poll's cost.
    """
    if database.is_closed() or database.in_transaction() or is_sqlite():
        return False
    database.close()
    return True


@routes.get(rule(JOB), auth="job")
def fetch_job(job_id: int) -> dict:
    job = current_job()
    package = jobs.work_package(job, _settings())
    files = worker_files.for_job(job.worker_id)  # LAVA's dispatcher.d/<worker>.yaml, env.yaml, env-dut.yaml
    return {"id": job.id, "protocol": PROTOCOL, "definition": package["definition"], "device": package["device"],
            "dispatcher": files["dispatcher"], "env": files["env"], "env_dut": files["env_dut"],
            "compatibility": package["compatibility"], "server_version": __version__,
            "log_line_count": package["log_line_count"]}


@routes.post(rule(JOB_STATE), auth="job")
def job_state(job_id: int) -> dict:
    body = json_body()
    if str(body.get("state", "")).lower() != "running":
        raise bad_request("only {'state': 'Running'} can be reported; use /finish to end a job", "state")
    job = jobs.mark_running(current_job())
    return {"id": job.id, "state": JobState(job.state).label}


@routes.post(rule(JOB_LOGS), auth="job")
def job_logs(job_id: int) -> dict:
    body = json_body()
    return {"line_count": results.append_log(current_job(), body.get("index"), body.get("lines"), _settings())}


@routes.post(rule(JOB_FINISH), auth="job")
def job_finish(job_id: int) -> dict:
    body = json_body()
    reported = str(body.get("result", ""))
    if reported not in ("pass", "fail"):
        raise bad_request(f"result must be 'pass' or 'fail', not {reported!r}", "result")
    job = jobs.finish_reported(current_job(), JobResult.from_mapping(body), body.get("description"),
                               body.get("log_line_count"), _settings(),
                               refuse_finished=header_protocol() >= ENDED_PROTOCOL)
    return {"id": job.id, "state": JobState(job.state).label}
