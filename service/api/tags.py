"""REST: device tags."""

from __future__ import annotations

from bottle import HTTPResponse, request

from .. import lab
from ..app import json_ok
from ..plugins import json_body
from . import Routes

routes = Routes("/api/v1/tags")


@routes.get("")
def list_tags() -> dict:
    return lab.page(lab.list_tags(), request.query.get("limit"), request.query.get("offset"), lab.tag_json)


@routes.post("", auth="admin")
def create_tag() -> HTTPResponse:
    return json_ok(lab.tag_json(lab.create_tag(json_body()), devices=True), 201)


@routes.get("/<name>")
def show_tag(name: str) -> dict:
    return lab.tag_json(lab.get_tag(name), devices=True)


@routes.patch("/<name>", auth="admin")
def update_tag(name: str) -> dict:
    return lab.tag_json(lab.update_tag(name, json_body()), devices=True)


@routes.delete("/<name>", auth="admin")
def delete_tag(name: str) -> HTTPResponse:
    lab.delete_tag(name)
    return HTTPResponse(status=204)
