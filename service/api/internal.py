"""The worker-facing API (docs/worker-api.md): long-poll, job fetch, state, logs, finish."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import yaml
from bottle import request

from .. import events, jobs, results
from ..db import write_txn
from ..devicecfg import render_for_job
from ..errors import ApiError, bad_request, conflict
from ..logstore import JobFolder, LogGap
from ..models import TestJob, Worker, utcnow
from ..plugins import current_job, current_worker, json_body
from ..states import JobState, WorkerState
from . import Routes

PROTOCOL = 1
routes = Routes("/internal/v1")
_waiting: dict[int, threading.BoundedSemaphore] = {}


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
    except (TypeError, ValueError):
        raise bad_request("'protocol' must be an integer", "protocol") from None
    if proto not in (PROTOCOL, PROTOCOL - 1) or proto < 1:
        raise conflict(
            f"worker protocol {proto} is not supported; the server speaks {PROTOCOL} and {PROTOCOL - 1}: "
            "upgrade dutlab on this worker", "protocol"
        )
    return proto


def _id_list(value: object, path: str) -> set[int]:
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad_request("must be a list of job ids (integers)", path)
    return set(value)


def heartbeat(worker: Worker, version: str, protocol: int) -> None:
    was_offline = worker.state == WorkerState.OFFLINE
    Worker.update(state=WorkerState.ONLINE, last_ping=utcnow(), offline_since=None,
                  version=version[:50], protocol=protocol).where(Worker.id == worker.id).execute()
    if was_offline:
        worker.state = WorkerState.ONLINE
        events.schedule_soon(f"worker {worker.hostname} is online")


@routes.post("/workers/<name>/poll", auth="worker")
def poll(name: str) -> dict:
    settings = _settings()
    worker = current_worker()
    body = json_body()
    protocol = check_protocol(body.get("protocol"))
    running = _id_list(body.get("running"), "running")
    try:
        wait = max(0.0, float(body.get("wait", 0)))
    except (TypeError, ValueError):
        raise bad_request("'wait' must be a number of seconds", "wait") from None
    wait = min(wait, settings.longpoll_timeout, settings.worker_heartbeat_timeout / 2)
    heartbeat(worker, str(body.get("version", "")), protocol)
    answer = wait_for_work(worker, running, wait, settings.longpoll_interval, waiting_slot(settings.threads))
    Worker.update(last_ping=utcnow()).where(Worker.id == worker.id).execute()
    return {"protocol": PROTOCOL, **answer}


def wait_for_work(worker: Worker, running: set[int], wait: float, interval: float,
                  slot: threading.BoundedSemaphore) -> dict:
    """Answer as soon as there is work: re-read only when the worker's wake counter moved."""
    deadline = time.monotonic() + wait
    seen = None
    holding = False
    try:
        while True:
            seq = Worker.select(Worker.wake_seq).where(Worker.id == worker.id).scalar()
            if seq != seen:
                seen = seq
                answer = work_for(worker, running)
                if answer["start"] or answer["cancel"] or answer["unknown"]:
                    return answer
            if time.monotonic() >= deadline:
                return answer
            if not holding:
                holding = slot.acquire(blocking=False)
                if not holding:
                    return answer
            time.sleep(interval)
    finally:
        if holding:
            slot.release()


def work_for(worker: Worker, running: set[int]) -> dict:
    """What this worker must start, cancel and forget now."""
    from ..auth import hash_secret, new_secret

    start, cancel = [], []
    mine = list(TestJob.select().where(
        TestJob.worker == worker,
        TestJob.state.in_([JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING]),
    ))
    for job in mine:
        if job.id in running:
            if job.state == JobState.CANCELING:
                cancel.append(job.id)
        elif job.state == JobState.SCHEDULED:
            token = new_secret()
            TestJob.update(token_hash=hash_secret(token)).where(TestJob.id == job.id).execute()
            start.append({"id": job.id, "token": token})
        elif job.state == JobState.CANCELING and job.start_time is None:
            jobs.finish(job, "fail", "Canceled", "canceled before the worker started it")
        elif job.start_time is not None and utcnow() - job.start_time > timedelta(seconds=60):
            # the worker says it no longer runs this job and never reported its end
            jobs.finish(job, "fail", "Infrastructure",
                        f"worker {worker.hostname} no longer runs job {job.id} and did not report its end")
    known = {j.id for j in mine}
    unknown = sorted(running - known)
    return {"start": start, "cancel": cancel, "unknown": unknown}


@routes.get("/jobs/<job_id:int>", auth="job")
def fetch_job(job_id: int) -> dict:
    settings = _settings()
    job = current_job()
    if job.state not in (JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING):
        raise conflict(f"job {job_id} is {JobState(job.state).label}; there is nothing to run")
    definition = yaml.safe_dump(json.loads(job.definition), sort_keys=False, default_flow_style=False)
    device_yaml = render_for_job(job, settings)
    folder = JobFolder(settings.output_dir, job.id)
    folder.write("device.yaml", device_yaml)
    return {
        "id": job.id,
        "protocol": PROTOCOL,
        "definition": definition,
        "device": device_yaml,
        "env": {},
        "env_dut": "",
        "log_line_count": folder.line_count(),
    }


@routes.post("/jobs/<job_id:int>/state", auth="job")
def job_state(job_id: int) -> dict:
    body = json_body()
    if str(body.get("state", "")).lower() != "running":
        raise bad_request("only {'state': 'Running'} can be reported; use /finish to end a job", "state")
    job = jobs.mark_running(current_job())
    return {"id": job.id, "state": JobState(job.state).label}


@routes.post("/jobs/<job_id:int>/logs", auth="job")
def job_logs(job_id: int) -> dict:
    settings = _settings()
    body = json_body()
    index, lines = body.get("index"), body.get("lines")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise bad_request("'index' must be the line number (>= 0) of the first line sent", "index")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise bad_request("'lines' must be a list of single-line JSON log records", "lines")
    if len(lines) > settings.max_log_batch:
        raise ApiError(413, f"at most {settings.max_log_batch} lines per batch; send smaller batches", "lines")
    job = current_job()
    folder = JobFolder(settings.output_dir, job.id)
    try:
        count, added = folder.append(index, lines)
    except LogGap as gap:
        raise conflict(str(gap), "index", line_count=gap.line_count) from None
    if added:
        with write_txn():
            results.ingest(job, added)
    return {"line_count": count}


@routes.post("/jobs/<job_id:int>/finish", auth="job")
def job_finish(job_id: int) -> dict:
    settings = _settings()
    body = json_body()
    job = current_job()
    folder = JobFolder(settings.output_dir, job.id)
    stored = folder.line_count()
    claimed = body.get("log_line_count")
    if isinstance(claimed, int) and claimed > stored:
        raise conflict(f"the server holds {stored} of {claimed} log lines; upload the rest first",
                       "log_line_count", line_count=stored)
    description = body.get("description")
    if isinstance(description, str) and description:
        folder.write("description.yaml", description)
    job = jobs.finish(job, str(body.get("result", "")), str(body.get("error_type") or "")[:30],
                      str(body.get("error_msg") or ""))
    return {"id": job.id, "state": JobState(job.state).label}
