"""REST: device types, their templates (files) and health-check definitions (database)."""

from __future__ import annotations

from bottle import HTTPResponse, request

from .. import devicecfg
from ..errors import ApiError
from ..lab import device_types
from ..lab.checks import page
from ..plugins import json_body, json_response
from . import Routes
from .devices import text_body

routes = Routes("/api/v1/device-types")


def _settings():
    return request.app.config["dutlab.settings"]


def _json(dtype, full: bool = True) -> dict:
    return device_types.device_type_json(dtype, _settings(), full)


@routes.get("")
def list_device_types() -> dict:
    return page(device_types.list_device_types(), request.query.get("limit"), request.query.get("offset"),
                many=lambda page_rows: device_types.device_types_json(page_rows, _settings(), full=False))


@routes.post("", auth="admin")
def create_device_type() -> HTTPResponse:
    return json_response(201, _json(device_types.create_device_type(json_body())))


@routes.get("/<name>")
def show_device_type(name: str) -> dict:
    return _json(device_types.get_device_type(name))


@routes.patch("/<name>", auth="admin")
def update_device_type(name: str) -> dict:
    return _json(device_types.update_device_type(name, json_body()))


@routes.delete("/<name>", auth="admin")
def delete_device_type(name: str) -> HTTPResponse:
    device_types.delete_device_type(name)
    return HTTPResponse(status=204)


@routes.get("/<name>/template")
def template(name: str) -> HTTPResponse:
    dtype = device_types.get_device_type(name)
    text = devicecfg.template_text(dtype, _settings())
    if text is None:
        raise ApiError(404, f"no template '{devicecfg.template_name(dtype)}.jinja2' is installed for device "
                            f"type '{name}'")
    return HTTPResponse(text, headers={"Content-Type": "text/plain; charset=utf-8"})


@routes.get("/<name>/health-check")
def get_health_check(name: str) -> dict:
    text, source = device_types.health_check_text(name, _settings())
    return {"name": name, "health_check": text, "source": source}


@routes.put("/<name>/health-check", auth="admin")
def put_health_check(name: str) -> dict:
    """The definition as `{"health_check": "..."}` or YAML text; empty: use the shipped file."""
    device_types.update_device_type(name, {"health_check": text_body("health_check")})
    return get_health_check(name)
