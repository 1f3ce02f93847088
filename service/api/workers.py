"""REST: dispatcher workers. A worker's token is shown once: on creation and on renewal."""

from __future__ import annotations

from bottle import HTTPResponse, request

from .. import lab
from ..app import json_ok
from ..plugins import current_user, json_body
from . import Routes

routes = Routes("/api/v1/workers")


@routes.get("")
def list_workers() -> dict:
    rows = lab.list_workers(health=request.query.get("health"), state=request.query.get("state"))
    return lab.page(rows, request.query.get("limit"), request.query.get("offset"), lab.worker_json)


@routes.post("", auth="admin")
def create_worker() -> HTTPResponse:
    worker, token = lab.create_worker(json_body())
    return json_ok({**lab.worker_json(worker), "token": token}, 201)


@routes.get("/<name>")
def show_worker(name: str) -> dict:
    return lab.worker_json(lab.get_worker(name))


@routes.patch("/<name>", auth="admin")
def update_worker(name: str) -> dict:
    return lab.worker_json(lab.update_worker(name, json_body(), current_user().username))


@routes.delete("/<name>", auth="admin")
def delete_worker(name: str) -> HTTPResponse:
    lab.delete_worker(name)
    return HTTPResponse(status=204)


@routes.post("/<name>/token", auth="admin")
def renew_token(name: str) -> dict:
    return {"hostname": name, "token": lab.regenerate_worker_token(name)}
