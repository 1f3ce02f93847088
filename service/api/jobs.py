"""REST: test jobs — submit, list, show, cancel, resubmit, definition, config, logs, results."""

from __future__ import annotations

import json

from bottle import HTTPResponse, request

from .. import jobs, results
from ..errors import ApiError, bad_request
from ..logstore import JobFolder
from ..models import Device, DeviceType, JobTag, Tag, TestJob, User, Worker
from ..plugins import current_user, json_body
from ..states import JobHealth, JobState
from . import Routes

routes = Routes("/api/v1/jobs")


def _settings():
    return request.app.config["dutlab.settings"]


def job_json(job: TestJob) -> dict:
    tags = [t.name for t in Tag.select(Tag.name).join(JobTag).where(JobTag.job == job)]
    return {
        "id": job.id,
        "description": job.description,
        "submitter": job.submitter.username,
        "device_type": job.requested_device_type.name,
        "requested_device": _name(Device, job.requested_device_id, "hostname"),
        "actual_device": _name(Device, job.actual_device_id, "hostname"),
        "worker": _name(Worker, job.worker_id, "hostname"),
        "state": JobState(job.state).label,
        "health": JobHealth(job.health).label,
        "priority": job.priority,
        "visibility": job.visibility,
        "viewing_groups": [vg.group.name for vg in job.viewing_groups],
        "tags": tags,
        "health_check": job.health_check,
        "submit_time": _iso(job.submit_time),
        "scheduled_time": _iso(job.scheduled_time),
        "start_time": _iso(job.start_time),
        "end_time": _iso(job.end_time),
        "failure_comment": job.failure_comment,
        "error_type": job.error_type,
        "error_msg": job.error_msg,
        "metadata": json.loads(job.metadata or "{}"),
    }


def _name(model, pk, attr):
    if pk is None:
        return None
    row = model.get_or_none(model.id == pk)
    return getattr(row, attr) if row else None


def _iso(value):
    return value.isoformat() + "Z" if value else None


def get_visible(job_id: int) -> TestJob:
    from ..auth import may_view_job

    job = TestJob.get_or_none(TestJob.id == job_id)
    if job is None or not may_view_job(current_user(), job):
        raise ApiError(404, f"job '{job_id}' does not exist (or is not visible to you)")
    return job


def definition_text() -> str:
    """The job definition from a JSON {"definition": ...} body or a raw YAML/JSON body."""
    ctype = (request.content_type or "").split(";")[0].strip()
    if ctype == "application/json":
        body = json_body()
        text = body.get("definition")
        if not isinstance(text, str):
            if isinstance(text, dict):
                return json.dumps(text)
            raise bad_request("send {\"definition\": \"<job YAML>\"} or the YAML itself as the body", "definition")
        return text
    raw = request.body.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the job definition must be UTF-8 text") from None


def _int_arg(name: str, default: int | None, minimum: int = 0) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"'{name}' must be an integer", name) from None
    if number < minimum:
        raise bad_request(f"'{name}' must be >= {minimum}", name)
    return number


@routes.post("", auth="user")
def submit() -> HTTPResponse:
    created = jobs.submit(current_user(), definition_text(), _settings())
    body = {"message": "job(s) successfully submitted", "job_ids": [j.id for j in created]}
    return HTTPResponse(json.dumps(body), status=201, headers={"Content-Type": "application/json"})


@routes.post("/validate")
def validate() -> dict:
    try:
        jobs.check_definition(current_user(), definition_text(), _settings())
    except ApiError as exc:
        return {"valid": False, "error": exc.message, "path": exc.path}
    return {"valid": True, "message": "Job valid."}


@routes.get("")
def list_jobs() -> dict:
    from ..auth import may_view_job

    query = TestJob.select().order_by(TestJob.id.desc())
    for key, enum, column in (("state", JobState, TestJob.state), ("health", JobHealth, TestJob.health)):
        value = request.query.get(key)
        if value:
            try:
                query = query.where(column == enum.parse(value))
            except ValueError as exc:
                raise bad_request(str(exc), key) from None
    if request.query.get("device_type"):
        query = query.join(DeviceType, on=(TestJob.requested_device_type == DeviceType.id)).where(
            DeviceType.name == request.query.device_type)
    if request.query.get("submitter"):
        query = query.switch(TestJob).join(User, on=(TestJob.submitter == User.id)).where(
            User.username == request.query.submitter)
    limit = min(_int_arg("limit", 50, 1), 1000)
    offset = _int_arg("offset", 0)
    user = current_user()
    visible = [j for j in query if may_view_job(user, j)]
    return {"count": len(visible), "results": [job_json(j) for j in visible[offset:offset + limit]]}


@routes.get("/<job_id:int>")
def show(job_id: int) -> dict:
    return job_json(get_visible(job_id))


@routes.post("/<job_id:int>/cancel", auth="user")
def cancel(job_id: int) -> dict:
    return job_json(jobs.cancel(current_user(), get_visible(job_id)))


@routes.post("/<job_id:int>/resubmit", auth="user")
def resubmit(job_id: int) -> HTTPResponse:
    created = jobs.resubmit(current_user(), get_visible(job_id), _settings())
    body = {"message": "job(s) successfully submitted", "job_ids": [j.id for j in created]}
    return HTTPResponse(json.dumps(body), status=201, headers={"Content-Type": "application/json"})


def _text(body: str, ctype: str = "application/yaml", **headers: str) -> HTTPResponse:
    return HTTPResponse(body, status=200, headers={"Content-Type": f"{ctype}; charset=utf-8", **headers})


@routes.get("/<job_id:int>/definition")
def definition(job_id: int) -> HTTPResponse:
    return _text(get_visible(job_id).original_definition)


@routes.get("/<job_id:int>/config")
def config(job_id: int) -> HTTPResponse:
    job = get_visible(job_id)
    text = JobFolder(_settings().output_dir, job.id).read("device.yaml")
    if text is None:
        raise ApiError(404, f"job {job_id} has not started yet: its device configuration is made at start")
    return _text(text)


@routes.get("/<job_id:int>/description")
def description(job_id: int) -> HTTPResponse:
    job = get_visible(job_id)
    text = JobFolder(_settings().output_dir, job.id).read("description.yaml")
    if text is None:
        raise ApiError(404, f"job {job_id} has no pipeline description yet")
    return _text(text)


@routes.get("/<job_id:int>/logs")
def logs(job_id: int) -> HTTPResponse:
    job = get_visible(job_id)
    folder = JobFolder(_settings().output_dir, job.id)
    start, end = _int_arg("start", 0), _int_arg("end", None)
    finished = job.state == JobState.FINISHED
    return _text(folder.read_lines(start, end), **{
        "X-Dutlab-Job-Finished": "true" if finished else "false",
        "X-Dutlab-Line-Count": str(folder.line_count()),
    })


@routes.get("/<job_id:int>/results")
def job_results(job_id: int) -> HTTPResponse | list:
    job = get_visible(job_id)
    rows = results.cases(job, request.query.get("suite") or None, request.query.get("case") or None)
    fmt = request.query.get("format", "json")
    if fmt == "yaml":
        return _text(results.as_yaml(job, rows))
    if fmt == "junit":
        return _text(results.as_junit(job, rows, request.query.get("classname_prefix", "")), "application/xml")
    if fmt != "json":
        raise bad_request("format must be json, yaml or junit", "format")
    return HTTPResponse(json.dumps(results.as_json(job, rows)), headers={"Content-Type": "application/json"})
