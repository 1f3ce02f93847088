"""REST: playbook runs (scheduled backups, health checks, ...): list, show, start one now."""

from __future__ import annotations

import json

from bottle import HTTPResponse, request

from .. import playbooks, tasks
from ..errors import ApiError, bad_request
from ..models import PlaybookRun
from ..plugins import json_body
from . import Routes

routes = Routes("/api/v1/playbook-runs")


@routes.get("", auth="admin")
def list_runs() -> dict:
    """Playbook runs, newest first; ?name= and ?status= filter."""
    query = PlaybookRun.select().order_by(PlaybookRun.id.desc())
    if request.query.get("name"):
        query = query.where(PlaybookRun.name == request.query.name)
    if request.query.get("status"):
        query = query.where(PlaybookRun.status == request.query.status)
    rows = list(query.limit(200))
    return {"count": len(rows), "results": [playbooks.run_json(r) for r in rows]}


@routes.get("/<run_id:int>", auth="admin")
def show_run(run_id: int) -> dict:
    run = PlaybookRun.get_or_none(PlaybookRun.id == run_id)
    if run is None:
        raise ApiError(404, f"playbook run '{run_id}' does not exist")
    return playbooks.run_json(run)


@routes.post("", auth="admin")
def start_run() -> HTTPResponse:
    """Run a configured schedule's playbook now: {"name": "<schedule name>"}."""
    name = json_body().get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("send {\"name\": \"<schedule name>\"}", "name")
    run = playbooks.request_run(request.app.config["dutlab.settings"], name)
    tasks.run_playbook(run.id)
    return HTTPResponse(json.dumps(playbooks.run_json(run)), status=202, headers={"Content-Type": "application/json"})
