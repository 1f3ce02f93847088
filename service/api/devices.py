"""REST: devices, their dictionaries (owners and admins only), health and tags."""

from __future__ import annotations

import yaml
from bottle import HTTPResponse, request

from ..errors import bad_request
from ..lab import devices
from ..lab.checks import check_fields, page, text
from ..plugins import current_user, json_body, json_response
from . import Routes

routes = Routes("/api/v1/devices")
FILTERS = ("state", "health", "device_type", "worker", "tag")


def _settings():
    return request.app.config["dutlab.settings"]


def _actor() -> str:
    return current_user().username


def text_body(key: str) -> str:
    """`{"<key>": "..."}` as JSON, or the text itself as any other content type."""
    if (request.content_type or "").split(";")[0].strip() == "application/json":
        body = json_body()
        check_fields(body, (key,))
        return text(body.get(key), key)
    try:
        return request.body.read().decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the body must be UTF-8 text") from None


@routes.get("")
def list_devices() -> dict:
    filters = {k: request.query.get(k) for k in FILTERS if request.query.get(k)}
    rows = devices.list_devices(**filters)
    return page(rows, request.query.get("limit"), request.query.get("offset"), many=devices.devices_json)


@routes.post("", auth="admin")
def create_device() -> HTTPResponse:
    device = devices.create_device(json_body(), _settings(), _actor())
    return json_response(201, devices.device_json(device))


@routes.get("/<hostname>")
def show_device(hostname: str) -> dict:
    return devices.device_json(devices.get_device(hostname))


@routes.patch("/<hostname>", auth="admin")
def update_device(hostname: str) -> dict:
    return devices.device_json(devices.update_device(hostname, json_body(), _settings(), _actor()))


@routes.delete("/<hostname>", auth="admin")
def delete_device(hostname: str) -> HTTPResponse:
    devices.delete_device(hostname)
    return HTTPResponse(status=204)


@routes.get("/<hostname>/dictionary", auth="owner",
            access="the owner user, members of the owner group, or admins; any user when the device has no owner")
def get_dictionary(hostname: str) -> dict:
    """The device dictionary, or with ?render=1 the device configuration rendered from it."""
    device = devices.read_dictionary(hostname, current_user())
    if request.query.get("render", "") not in ("", "0", "false"):
        context = _context(request.query.get("context"))
        return {"hostname": hostname, "config": devices.render_dictionary(device, _settings(), context)}
    return {"hostname": hostname, "dictionary": device.dictionary}


def _context(raw: str | None) -> dict | None:
    if not raw:
        return None
    try:
        context = yaml.safe_load(raw)  # JSON is YAML too; lavacli sends YAML
    except yaml.YAMLError as exc:
        raise bad_request(f"the job context is not valid JSON or YAML: {exc}", "context") from None
    if not isinstance(context, dict):
        raise bad_request("the job context must be a mapping", "context")
    return context


@routes.put("/<hostname>/dictionary", auth="admin")
def put_dictionary(hostname: str) -> dict:
    device = devices.set_dictionary(hostname, text_body("dictionary"), _settings())
    return {"hostname": hostname, "dictionary": device.dictionary}


@routes.post("/<hostname>/health", auth="admin")
def set_health(hostname: str) -> dict:
    body = json_body()
    check_fields(body, ("health", "reason"), required=("health",))
    return devices.device_json(devices.update_device(hostname, body, _settings(), _actor()))


@routes.get("/<hostname>/health-history")
def health_history(hostname: str) -> dict:
    rows = devices.health_history(hostname)
    return page(rows, request.query.get("limit"), request.query.get("offset"), devices.history_json)


@routes.get("/<hostname>/tags")
def list_tags(hostname: str) -> dict:
    return {"hostname": hostname, "tags": devices.device_tags(devices.get_device(hostname))}


@routes.post("/<hostname>/tags", auth="admin")
def add_tags(hostname: str) -> dict:
    """Body `{"name": "tag"}` or `{"tags": ["a", "b"]}`; missing tags are created."""
    body = json_body()
    check_fields(body, ("name", "tags"))
    names = body["tags"] if "tags" in body else [body.get("name")]
    return {"hostname": hostname, "tags": devices.add_device_tags(hostname, names)}


@routes.delete("/<hostname>/tags/<tag>", auth="admin")
def remove_tag(hostname: str, tag: str) -> HTTPResponse:
    devices.remove_device_tags(hostname, [tag], strict=True)
    return HTTPResponse(status=204)
