"""REST: dispatcher workers. A worker's token is shown once: on creation and on renewal."""

from __future__ import annotations

from bottle import HTTPResponse, request

from ..lab import worker_files, workers
from ..lab.checks import page
from ..plugins import current_user, json_body, json_response
from . import Routes
from .devices import text_body

routes = Routes("/api/v1/workers")


@routes.get("")
def list_workers() -> dict:
    rows = workers.list_workers(health=request.query.get("health"), state=request.query.get("state"))
    return page(rows, request.query.get("limit"), request.query.get("offset"), many=workers.workers_json)


@routes.post("", auth="admin")
def create_worker() -> HTTPResponse:
    worker, token = workers.create_worker(json_body())
    return json_response(201, {**workers.worker_json(worker), "token": token})


@routes.get("/<name>")
def show_worker(name: str) -> dict:
    return workers.worker_json(workers.get_worker(name))


@routes.patch("/<name>", auth="admin")
def update_worker(name: str) -> dict:
    return workers.worker_json(workers.update_worker(name, json_body(), current_user().username))


@routes.delete("/<name>", auth="admin")
def delete_worker(name: str) -> HTTPResponse:
    workers.delete_worker(name)
    return HTTPResponse(status=204)


@routes.post("/<name>/token", auth="admin")
def renew_token(name: str) -> dict:
    return {"hostname": name, "token": workers.regenerate_worker_token(name)}


@routes.get("/<name>/files/<kind>", auth="admin")
def get_file(name: str, kind: str) -> dict:
    """A per-worker file: config (LAVA's dispatcher.d/<worker>.yaml), env or env-dut."""
    return {"hostname": name, "kind": worker_files.kind_of(kind), "text": worker_files.get_text(name, kind)}


@routes.put("/<name>/files/<kind>", auth="admin")
def put_file(name: str, kind: str) -> dict:
    """Store a per-worker file (checked as the worker reads it; empty text deletes it)."""
    worker_files.set_text(name, kind, text_body("text"))
    return {"hostname": name, "kind": worker_files.kind_of(kind), "text": worker_files.get_text(name, kind)}
