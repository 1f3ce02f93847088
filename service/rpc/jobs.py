"""scheduler.jobs.*: submit, cancel, resubmit, show, list, queue, logs, definition, configuration."""

from __future__ import annotations

import datetime as dt
from typing import Any

from peewee import JOIN

from .. import auth
from ..errors import ApiError
from ..lab import job_views, jobs, multinode, submissions
from ..lab.checks import as_datetime
from ..logstore import JobFolder
from ..models import DeviceType, TestJob, utcnow
from ..states import JobHealth, JobState
from . import BAD_REQUEST, FORBIDDEN, NOT_FOUND, Call, Fault, binary, exposed, string

#: LAVA clamps list pages to 100 jobs
MAX_LIMIT = 100
STARTED = (JobState.RUNNING, JobState.CANCELING, JobState.FINISHED)


def get_job(call: Call, job_id: Any) -> TestJob:
    """The job by id (lavacli sends it as a string); 404 / 403 as LAVA words them."""
    job = multinode.find(job_id)  # a number, or a MultiNode sub-id "12.1"
    if job is None:
        raise Fault(NOT_FOUND, f"Job '{job_id}' was not found.")
    if not auth.may_view_job(call.user, job):
        raise Fault(FORBIDDEN, f"Job '{job_id}' not available to user '{call.username}'.")
    return job


def visibility_label(info: dict) -> str:
    """LAVA's visibility text: Public, Personal or "Group (a, b)"."""
    if info["visibility"] == "group":
        return f"Group ({', '.join(info['viewing_groups'])})"
    return info["visibility"].capitalize()


def job_dict(job: TestJob) -> dict:
    """LAVA's scheduler.jobs.show answer; times are datetimes (dateTime.iso8601 on the wire)."""
    info = job_views.job_json(job, time=as_datetime)
    return {
        "id": info["sub_id"] or info["id"],  # LAVA shows the sub-id of a MultiNode job
        "description": info["description"],
        "device": info["actual_device"],
        "device_type": info["device_type"],
        "health_check": info["health_check"],
        "pipeline": True,
        "health": info["health"],
        "state": info["state"],
        "submitter": info["submitter"],
        "submit_time": info["submit_time"],
        "start_time": info["start_time"],
        "end_time": info["end_time"],
        "tags": sorted(info["tags"]),
        "visibility": visibility_label(info),
        "failure_comment": info["failure_comment"] or None,
        "error_msg": info["error_msg"] or None,
        "error_type": info["error_type"] or None,
    }


def _list_entry(info: dict, verbose: bool) -> dict:
    out = {key: info[key] for key in ("id", "description", "device_type", "health", "state", "submitter")}
    out["id"] = info["sub_id"] or info["id"]
    if verbose:
        # LAVA sends these times as str(datetime), unlike jobs.show
        out.update({
            "actual_device": info["actual_device"],
            "start_time": str(info["start_time"]) if info["start_time"] else None,
            "end_time": str(info["end_time"]) if info["end_time"] else None,
            "error_msg": info["error_msg"] or None,
            "error_type": info["error_type"] or None,
        })
    return out


def _int(value: Any, what: str, default: int, minimum: int = 0) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Fault(BAD_REQUEST, f"Bad request: {what} must be an integer, not {value!r}") from None
    return max(number, minimum)


def _label(enum, value: Any, what: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return enum.parse(str(value))
    except ValueError as exc:
        raise Fault(BAD_REQUEST, f"Bad request: {what}: {exc}") from None


def _page(call: Call, query, start: int, limit: int, keep=None) -> list[TestJob]:
    """One page of the jobs the caller may see (`job_views.visible_to`: in SQL, as the REST list);
    `keep` filters in Python what SQL cannot say the same way on SQLite and PostgreSQL."""
    condition = job_views.visible_to(call.user)
    if condition is not None:
        query = query.where(condition)
    if keep is None:
        return list(query.offset(start).limit(limit))
    out: list[TestJob] = []
    skipped = 0
    for job in query.iterator():
        if not keep(job):
            continue
        if skipped < start:
            skipped += 1
            continue
        out.append(job)
        if len(out) >= limit:
            break
    return out


@exposed("scheduler.jobs.list")
def list_jobs(call: Call, state: str | None = None, health: str | None = None, start: int = 0, limit: int = 25,
              since: int = 0, verbose: bool = False, duration_at_least: int | None = None) -> list:
    """Jobs, newest first: filter by state, health, ended in the last `since` minutes, ran at
    least `duration_at_least` minutes; at most 100 per call."""
    query = TestJob.select().order_by(TestJob.id.desc())
    wanted_state, wanted_health = _label(JobState, state, "state"), _label(JobHealth, health, "health")
    if wanted_state is not None:
        query = query.where(TestJob.state == wanted_state)
    if wanted_health is not None:
        query = query.where(TestJob.health == wanted_health)
    now = utcnow()
    minutes = _int(since, "since", 0)
    if minutes:
        query = query.where(TestJob.end_time >= now - dt.timedelta(minutes=minutes))
    keep = None
    if duration_at_least not in (None, "", 0):
        least = dt.timedelta(minutes=_int(duration_at_least, "duration_at_least", 0))
        query = query.where(TestJob.start_time.is_null(False))
        keep = lambda job: (job.end_time or now) - job.start_time >= least  # noqa: E731
    rows = _page(call, query, _int(start, "start", 0), min(_int(limit, "limit", 25, 1), MAX_LIMIT), keep)
    return [_list_entry(info, bool(verbose)) for info in job_views.jobs_json(rows, time=as_datetime)]


@exposed("scheduler.jobs.queue")
def queue(call: Call, device_types: list | None = None, start: int = 0, limit: int = 25) -> list:
    """Submitted jobs in scheduling order, optionally for some device types."""
    query = (TestJob.select(TestJob).join(DeviceType, JOIN.INNER, on=(TestJob.requested_device_type == DeviceType.id))
             .where(TestJob.state == JobState.SUBMITTED).order_by(TestJob.priority.desc(), TestJob.id))
    if device_types:
        if not isinstance(device_types, list):
            device_types = [device_types]
        query = query.where(DeviceType.name.in_([str(name) for name in device_types]))
    rows = _page(call, query, _int(start, "start", 0), min(_int(limit, "limit", 25, 1), MAX_LIMIT))
    entries = job_views.jobs_json(rows)
    return [{"id": e["id"], "description": e["description"], "requested_device_type": e["device_type"],
             "submitter": e["submitter"]} for e in entries]


@exposed("scheduler.jobs.show")
def show(call: Call, job_id: str) -> dict:
    """Details of one job; `state` is "Finished" once it is over (lavacli jobs wait polls it)."""
    return job_dict(get_job(call, job_id))


@exposed("scheduler.jobs.definition")
def definition(call: Call, job_id: str) -> str:
    """The job definition exactly as submitted (its secrets masked for all but the submitter and admins)."""
    return job_views.definition(call.user, get_job(call, job_id))  # dispatch turns a 401/403 into a Fault


@exposed("scheduler.jobs.logs")
def logs(call: Call, job_id: str, start: int = 0, end: int | None = None) -> list:
    """[finished, log lines start..end-1 as YAML]; lavacli follows a running job with it."""
    job = get_job(call, job_id)
    # read the state before the lines: a job reported finished has all its lines stored (the
    # worker API refuses to finish a job before its log is complete), so none are skipped
    finished = job.state == JobState.FINISHED
    first = _int(start, "start", 0)
    last = None if end is None else _int(end, "end", 0)
    text = JobFolder(call.settings.output_dir, job.id).read_lines(first, last)
    return [finished, binary(text or "[]")]


@exposed("scheduler.jobs.configuration")
def configuration(call: Call, job_id: str) -> list:
    """[job definition, device configuration, dispatcher config, env, env-dut] (nil when absent)."""
    job = get_job(call, job_id)
    if job.state not in STARTED:
        raise Fault(NOT_FOUND, f"Job '{job_id}' has not started yet")
    text = job_views.definition(call.user, job)
    device = job_views.device_config(call.user, job, call.settings)
    # dutlab workers get no per-worker dispatcher.yaml / env files, hence the three nils
    return [binary(text), binary(device), None, None, None]


@exposed("scheduler.jobs.validate")
def validate(call: Call, definition: str, strict: bool = False) -> dict:
    """{} when the definition is valid, else {"path", "msg"} of the first problem: the same
    verdict as submit (and REST validate), the lab's checks included.

    dutlab always validates strictly (unknown keys are errors), so `strict` changes nothing.
    """
    problem = submissions.first_problem(call.user, string(definition, "definition"), call.settings)
    return {} if problem is None else {"path": problem.path, "msg": problem.message}


def _ids(created: list[TestJob]) -> int | list[str]:
    """LAVA's answer to a submission: the job id, or a MultiNode group's sub-ids."""
    if created[0].sub_id:
        return [job.sub_id for job in created]
    return created[0].id


@exposed("scheduler.jobs.submit", "scheduler.submit_job")
def submit(call: Call, definition: str) -> int | list[str]:
    """Submit a job definition (YAML or JSON); returns the job id (a MultiNode group: its sub-ids)."""
    user = call.login()
    try:
        return _ids(jobs.submit(user, string(definition, "definition"), call.settings))
    except ApiError as exc:
        raise submission_fault(exc) from None


@exposed("scheduler.jobs.resubmit", "scheduler.resubmit_job")
def resubmit(call: Call, job_id: str) -> int | list[str]:
    """Submit the definition of an earlier job again (a MultiNode group: the whole group); the new id(s)."""
    user = call.login()
    job = get_job(call, job_id)
    try:
        return _ids(jobs.resubmit(user, job, call.settings))
    except ApiError as exc:
        raise submission_fault(exc) from None


@exposed("scheduler.jobs.cancel", "scheduler.cancel_job")
def cancel(call: Call, job_id: str) -> bool:
    """Cancel a job (a MultiNode sub-job: its whole group); finished jobs are left alone."""
    user = call.login()
    job = get_job(call, job_id)
    if not auth.may_cancel_job(user, job):
        raise Fault(FORBIDDEN, "Permission denied.")
    jobs.cancel(user, job)
    return True


def submission_fault(exc: ApiError) -> Fault:
    """LAVA's submission faults: 404 for an unknown device type, 400 'Device unavailable' when no
    device can take the job, 400 'Problem with submitted job data' for the definition itself."""
    where = f"{exc.path}: " if exc.path else ""
    # the lab's checks of a MultiNode role ("role 'x': ...") are what device_type and tags are to one job
    lab_check = exc.path.startswith(multinode.ROLES_PATH + ".") and exc.message.startswith("role '")
    field = exc.path.rpartition(".")[2] if lab_check else exc.path
    if exc.status == 400 and field == "device_type" and "does not exist" in exc.message:
        return Fault(NOT_FOUND, f"Specified device or device type not found: {exc.message}")
    if exc.status == 400 and (field in ("device_type", "count") or field.startswith("tags")):
        return Fault(BAD_REQUEST, f"Device unavailable: {exc.message}")
    if exc.status == 400:
        return Fault(BAD_REQUEST, f"Problem with submitted job data: {where}{exc.message}")
    return Fault(exc.status, exc.message)
