"""REST: test jobs — submit, list, show, cancel, resubmit, definition, config, logs, results, notifications."""

from __future__ import annotations

import json

from bottle import HTTPResponse, request

from .. import auth
from ..errors import ApiError, bad_request
from ..lab import job_views, jobs, results, submissions
from ..lab.job_views import job_json
from ..logstore import JobFolder
from ..models import TestJob
from ..notify import rows as notifications
from ..plugins import current_user, json_body, json_response
from ..states import JobState
from . import Routes

routes = Routes("/api/v1/jobs")


def _settings():
    return request.app.config["dutlab.settings"]


def get_visible(job_id: str) -> TestJob:
    return job_views.visible_job(job_id, current_user())


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


def job_ids(created: list[TestJob]) -> list[int | str]:
    """The new jobs' ids; a MultiNode group's are its sub-ids ("12.0", "12.1"), as over XML-RPC."""
    return [j.sub_id or j.id for j in created]


def bulk_definitions() -> list[str] | None:
    """The texts of a bulk submission ({"definitions": [...]}), or None for a single one."""
    if (request.content_type or "").split(";")[0].strip() != "application/json":
        return None
    body = json_body()
    if "definitions" not in body:
        return None
    if "definition" in body:
        raise bad_request("send either 'definition' (one job) or 'definitions' (a list), not both", "definitions")
    items = body["definitions"]
    if not isinstance(items, list) or not items:
        raise bad_request("'definitions' must be a non-empty list of job definitions", "definitions")
    if len(items) > jobs.BULK_MAX:
        raise bad_request(f"at most {jobs.BULK_MAX} definitions per request; split the batch", "definitions")
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            item = json.dumps(item)
        if not isinstance(item, str):
            raise bad_request("each definition must be the job's YAML text or a JSON object", f"definitions[{i}]")
        texts.append(item)
    return texts


@routes.post("", auth="user")
def submit() -> HTTPResponse:
    texts = bulk_definitions()
    if texts is None:
        created = jobs.submit(current_user(), definition_text(), _settings())
        return json_response(201, {"message": "job(s) successfully submitted", "job_ids": job_ids(created)})
    items = jobs.submit_many(current_user(), texts, _settings())
    return json_response(201, {"message": f"{len(items)} definitions successfully submitted",
                               "job_ids": [i for made in items for i in job_ids(made)],
                               "items": [{"job_ids": job_ids(made)} for made in items]})


@routes.post("/validate")
def validate() -> dict:
    try:
        problem = submissions.first_problem(current_user(), definition_text(), _settings())
    except ApiError as exc:  # the body itself (not UTF-8, no definition)
        problem = exc
    if problem is not None:
        return {"valid": False, "error": problem.message, "path": problem.path}
    return {"valid": True, "message": "Job valid."}


@routes.get("")
def list_jobs() -> dict:
    query = request.query
    visible = job_views.list_jobs(current_user(), query.get("state"), query.get("health"),
                                  query.get("device_type") or None, query.get("submitter") or None,
                                  query.get("group") or None)
    limit = min(_int_arg("limit", 50, 1), 1000)
    offset = _int_arg("offset", 0)
    return {"count": visible.count(), "results": job_views.jobs_json(list(visible.limit(limit).offset(offset)))}


@routes.get("/<job_id:jobid>")
def show(job_id: str) -> dict:
    return job_json(get_visible(job_id))


@routes.post("/<job_id:jobid>/cancel", auth="user", access="the submitter or holders of cancel_resubmit")
def cancel(job_id: str) -> dict:
    return job_json(jobs.cancel(current_user(), get_visible(job_id)))


@routes.post("/<job_id:jobid>/resubmit", auth="user", access="the submitter or holders of cancel_resubmit")
def resubmit(job_id: str) -> HTTPResponse:
    created = jobs.resubmit(current_user(), get_visible(job_id), _settings())
    return json_response(201, {"message": "job(s) successfully submitted", "job_ids": job_ids(created)})


def _text(body: str, ctype: str = "application/yaml", **headers: str) -> HTTPResponse:
    return HTTPResponse(body, status=200, headers={"Content-Type": f"{ctype}; charset=utf-8", **headers})


#: who may read a job's details beyond seeing the job (lab/job_views.py), for the OpenAPI document
DETAILS = "those who may see the job; on a restricted device, only its owners and admins"


@routes.get("/<job_id:jobid>/definition", access=DETAILS + " (and the submitter); secrets masked for all but the "
                                              "submitter and admins")
def definition(job_id: str) -> HTTPResponse:
    """The job definition as submitted."""
    return _text(job_views.definition(current_user(), get_visible(job_id)))


@routes.get("/<job_id:jobid>/config", access=DETAILS)
def config(job_id: str) -> HTTPResponse:
    """The device configuration the job ran with."""
    text = job_views.device_config(current_user(), get_visible(job_id), _settings())
    if text is None:
        raise ApiError(404, f"job {job_id} has not started yet: its device configuration is made at start")
    return _text(text)


@routes.get("/<job_id:jobid>/description", access=DETAILS)
def description(job_id: str) -> HTTPResponse:
    """The pipeline description dutlab-run wrote."""
    text = job_views.description(current_user(), get_visible(job_id), _settings())
    if text is None:
        raise ApiError(404, f"job {job_id} has no pipeline description yet")
    return _text(text)


@routes.get("/<job_id:jobid>/logs")
def logs(job_id: str) -> HTTPResponse:
    job = get_visible(job_id)
    folder = JobFolder(_settings().output_dir, job.id)
    start, end = _int_arg("start", 0), _int_arg("end", None)
    finished = job.state == JobState.FINISHED
    return _text(folder.read_lines(start, end), **{
        "X-Dutlab-Job-Finished": "true" if finished else "false",
        "X-Dutlab-Line-Count": str(folder.line_count()),
    })


@routes.get("/<job_id:jobid>/results")
def job_results(job_id: str) -> HTTPResponse | list:
    job = get_visible(job_id)
    rows = results.cases(job, request.query.get("suite") or None, request.query.get("case") or None)
    fmt = request.query.get("format", "json")
    if fmt == "yaml":
        return _text(results.as_yaml(job, rows, lava=False))
    if fmt == "junit":
        return _text(results.as_junit(job, rows, request.query.get("classname_prefix", "")), "application/xml")
    if fmt != "json":
        raise bad_request("format must be json, yaml or junit", "format")
    # null where a case has no value: LAVA's "None" strings stay with its own XML-RPC export
    body = json.dumps(results.as_json(job, rows, lava=False))
    return HTTPResponse(body, headers={"Content-Type": "application/json"})


@routes.get("/<job_id:jobid>/notifications", access="the submitter and admins (the rows name their recipients)")
def job_notifications(job_id: str) -> dict:
    """The job's notifications: one row per event and recipient, with state, attempts and last error."""
    user = current_user()
    found = notifications.for_job(get_visible(job_id), user, auth.is_admin(user))
    return {"count": len(found), "results": [notifications.notification_json(n) for n in found]}
