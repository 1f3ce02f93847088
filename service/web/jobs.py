"""Job pages: the list (filters, paging), one job (results, the log viewer), its texts, the log's
new lines for the live follow, cancel and resubmit.

What a viewer reads beyond a job's summary follows `lab.job_views` exactly as the REST API does:
the definition (secrets masked), the rendered device configuration and the pipeline description
go to those who may read the device's dictionary when it is restricted.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from bottle import HTTPResponse, request

from .. import auth
from ..errors import ApiError, bad_request
from ..lab import job_views, jobs, multinode, results
from ..logstore import JobFolder
from ..models import DeviceType
from ..states import JobHealth, JobState
from . import logview
from .plugin import WebRoutes, need_user, redirect, render, settings, web_user

routes = WebRoutes("/jobs")
PER_PAGE = 50
FILTERS = ("state", "health", "device_type", "device", "submitter", "text")


def _page_number() -> int:
    raw = request.query.get("page") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 10**6:
        raise bad_request("'page' must be a page number from 1", "page")
    return int(raw)


@routes.get("")
def job_list() -> HTTPResponse:
    """Jobs the viewer may see, newest first, filtered and in pages."""
    chosen = {key: (request.query.getunicode(key) or "").strip()[:200] for key in FILTERS}
    query = job_views.list_jobs(web_user(), chosen["state"], chosen["health"], chosen["device_type"] or None,
                                chosen["submitter"] or None, device=chosen["device"] or None,
                                text=chosen["text"] or None)
    number = _page_number()
    total = query.count()
    rows = job_views.jobs_json(list(query.limit(PER_PAGE).offset((number - 1) * PER_PAGE)))
    kept = {k: v for k, v in chosen.items() if v}
    pages = {"number": number, "last": max(1, -(-total // PER_PAGE)),
             "prev": f"?{urlencode({**kept, 'page': number - 1})}" if number > 1 else None,
             "next": f"?{urlencode({**kept, 'page': number + 1})}" if number * PER_PAGE < total else None}
    types = [name for (name,) in DeviceType.select(DeviceType.name).order_by(DeviceType.name).tuples()]
    return render("jobs.html", title="Jobs", rows=rows, total=total, chosen=chosen, pages=pages,
                  states=JobState.labels(), healths=JobHealth.labels(), types=types)


def _may(check, *args) -> bool:
    try:
        check(*args)
    except ApiError:
        return False
    return True


@routes.get("/<job_id:jobid>")
def job_page(job_id: str) -> HTTPResponse:
    """One job: its state and verdict, results, links to its texts and the log viewer."""
    user = web_user()
    job = job_views.visible_job(job_id, user)
    shape = job_views.job_json(job)
    group = job_views.jobs_json(multinode.members(job)) if job.target_group else []
    cases = results.cases(job)
    folder = JobFolder(settings().output_dir, job.id)
    full = request.query.get("full") == "1"
    count = folder.line_count()
    start = 0 if full or count <= logview.PAGE_LINES else count - logview.PAGE_LINES
    lines, count = logview.read(folder, start, count)
    finished = job.state == JobState.FINISHED
    return render(
        "job.html", title=f"Job {shape['sub_id'] or job.id}", job=shape, group=group, cases=cases,
        lines=lines, first_line=start, line_count=count, finished=finished, levels=logview.LEVELS,
        may_cancel=not finished and auth.may_cancel_job(user, job),
        may_resubmit=user is not None and finished and not job.health_check,
        may_read_config=_may(job_views.check_device_view, user, job, "device configuration"),
        has_output=count > 0, timing=job)


@routes.get("/<job_id:jobid>/log.json")
def follow(job_id: str) -> HTTPResponse:
    """The log's lines from ?start=N on, and the job's state (the viewer's live follow)."""
    job = job_views.visible_job(job_id, web_user())
    raw = request.query.get("start") or "0"
    if not raw.isdigit() or len(raw) > 12:
        raise bad_request("'start' must be a line number", "start")
    folder = JobFolder(settings().output_dir, job.id)
    lines, count = logview.read(folder, int(raw), logview.FOLLOW_LINES)
    body = {"start": int(raw), "lines": [line.as_list() for line in lines],
            "next": lines[-1].n + 1 if lines else min(int(raw), count), "count": count,
            "state": JobState(job.state).label, "health": JobHealth(job.health).label,
            "finished": job.state == JobState.FINISHED and (not lines or lines[-1].n + 1 >= count)}
    return HTTPResponse(json.dumps(body), headers={"Content-Type": "application/json"})


def _text(body: str | None, missing: str) -> HTTPResponse:
    if body is None:
        raise ApiError(404, missing)
    return HTTPResponse(body, headers={"Content-Type": "text/plain; charset=utf-8"})


@routes.get("/<job_id:jobid>/definition.yaml")
def definition(job_id: str) -> HTTPResponse:
    """The job definition (secrets masked for all but the submitter and admins)."""
    user = web_user()
    return _text(job_views.definition(user, job_views.visible_job(job_id, user)), "")


@routes.get("/<job_id:jobid>/config.yaml")
def config(job_id: str) -> HTTPResponse:
    """The device configuration the job ran with."""
    user = web_user()
    text = job_views.device_config(user, job_views.visible_job(job_id, user), settings())
    return _text(text, f"job {job_id} has not started yet: its device configuration is made at start")


@routes.get("/<job_id:jobid>/description.yaml")
def description(job_id: str) -> HTTPResponse:
    """The pipeline description dutlab-run wrote."""
    user = web_user()
    text = job_views.description(user, job_views.visible_job(job_id, user), settings())
    return _text(text, f"job {job_id} has no pipeline description yet")


@routes.get("/<job_id:jobid>/output.yaml")
def output(job_id: str) -> HTTPResponse:
    """The whole log as stored: one YAML record per line (lavacli reads it so)."""
    job = job_views.visible_job(job_id, web_user())
    return _text(JobFolder(settings().output_dir, job.id).read_lines(0), "")


@routes.post("/<job_id:jobid>/cancel")
def cancel(job_id: str) -> HTTPResponse:
    """Cancel the job (its submitter, or holders of cancel_resubmit)."""
    user = need_user()
    job = jobs.cancel(user, job_views.visible_job(job_id, user))
    return redirect(f"/jobs/{job.sub_id or job.id}")


@routes.post("/<job_id:jobid>/resubmit")
def resubmit(job_id: str) -> HTTPResponse:
    """Submit the job again; the new job's page follows."""
    user = need_user()
    created = jobs.resubmit(user, job_views.visible_job(job_id, user), settings())
    return redirect(f"/jobs/{created[0].sub_id or created[0].id}")
