"""REST: device tags."""

from __future__ import annotations

from bottle import HTTPResponse, request

from ..lab import tags
from ..lab.checks import page
from ..plugins import json_body, json_response
from . import Routes

routes = Routes("/api/v1/tags")


@routes.get("")
def list_tags() -> dict:
    return page(tags.list_tags(), request.query.get("limit"), request.query.get("offset"), tags.tag_json)


@routes.post("", auth="admin")
def create_tag() -> HTTPResponse:
    return json_response(201, tags.tag_json(tags.create_tag(json_body()), devices=True))


@routes.get("/<name>")
def show_tag(name: str) -> dict:
    return tags.tag_json(tags.get_tag(name), devices=True)


@routes.patch("/<name>", auth="admin")
def update_tag(name: str) -> dict:
    return tags.tag_json(tags.update_tag(name, json_body()), devices=True)


@routes.delete("/<name>", auth="admin")
def delete_tag(name: str) -> HTTPResponse:
    tags.delete_tag(name)
    return HTTPResponse(status=204)
