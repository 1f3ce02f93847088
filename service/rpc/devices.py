"""scheduler.devices.* and scheduler.devices.tags.* over devices."""

from __future__ import annotations

from typing import Any

import yaml

from .. import devicecfg
from ..errors import ApiError
from ..lab import devices
from . import BAD_REQUEST, CONFLICT, NOT_FOUND, Call, Fault, binary, exposed, lava_message, optional_text, string


def _list_entry(info: dict) -> dict:
    return {"hostname": info["hostname"], "type": info["device_type"], "health": info["health"],
            "state": info["state"], "current_job": info["current_job"], "pipeline": True}


def _permissions(info: dict) -> list[dict]:
    # LAVA lists per-group Django permissions; dutlab's equivalent is the owner group, which
    # alone may submit to (and view) the device
    return [{"name": "submit_to_device", "group": info["owner_group"]}] if info["owner_group"] else []


@exposed("scheduler.devices.list")
def list_devices(call: Call, show_all: bool = False, offline_info: bool = False) -> list:
    """Devices sorted by hostname; Retired ones only with `show_all`."""
    return [_list_entry(info) for info in devices.devices_json(devices.list_devices(include_retired=bool(show_all)))]


@exposed("scheduler.devices.show")
def show(call: Call, hostname: str) -> dict:
    """Details of one device."""
    device = devices.get_device(string(hostname, "hostname"))
    info = devices.device_json(device)
    return {
        "hostname": device.hostname,
        "device_type": info["device_type"],
        "health": info["health"],
        "state": info["state"],
        "health_job": devicecfg.health_check_definition(device, call.settings) is not None,
        "description": info["description"],
        "pipeline": True,
        "has_device_dict": info["has_dictionary"],
        "worker": info["worker"],
        "current_job": info["current_job"],
        "tags": info["tags"],
        "permissions": _permissions(info),
    }


def _changes(**given: Any) -> dict:
    """lavacli sends nil for every option not given: only the others change."""
    return {key: value for key, value in given.items() if value is not None}


@exposed("scheduler.devices.add")
def add(call: Call, hostname: str, type_name: str, worker_hostname: str | None = None, user_name: str | None = None,
        group_name: str | None = None, public: bool = True, health: str | None = None,
        description: str | None = None) -> None:
    """Add a device (state Idle, health Unknown unless given). As in `update`, the user or group
    becomes the physical-access contact; `public` is ignored (device owners restrict devices)."""
    user = call.require("lava_scheduler_app.add_device")
    data = {"hostname": string(hostname, "hostname"), "device_type": string(type_name, "type_name"),
            **_changes(worker=worker_hostname, physical_user=user_name, physical_group=group_name,
                       health=health, description=description)}
    try:
        devices.create_device(data, call.settings, user.username)
    except ApiError as exc:
        raise _fault(exc) from None


def _fault(exc: ApiError) -> Fault:
    if exc.status == CONFLICT:  # LAVA answers a duplicate with a 400
        return Fault(BAD_REQUEST, f"Bad request: {exc.message}")
    if exc.status == BAD_REQUEST and exc.path in ("device_type", "worker") and "does not exist" in exc.message:
        return Fault(NOT_FOUND, lava_message(exc.message))
    return Fault(exc.status, lava_message(exc.message))


@exposed("scheduler.devices.update")
def update(call: Call, hostname: str, worker_hostname: str | None = None, user_name: str | None = None,
           group_name: str | None = None, public: bool | None = True, health: str | None = None,
           description: str | None = None, device_type: str | None = None, reason: str | None = None) -> None:
    """Change a device; arguments left nil stay as they are. Accepts the 7-, 8- and 9-argument
    forms lavacli sends to servers before 2022.04, before 2025.12 and since."""
    user = call.require("lava_scheduler_app.change_device")
    changes = _changes(worker=worker_hostname, physical_user=user_name, physical_group=group_name,
                       health=health, description=description, device_type=device_type,
                       reason=optional_text(reason))
    if "health" in changes and "reason" not in changes:
        changes["reason"] = f"set by {user.username} (XML-RPC)"
    try:
        devices.update_device(string(hostname, "hostname"), changes, call.settings, user.username)
    except ApiError as exc:
        raise _fault(exc) from None


@exposed("scheduler.devices.delete")
def delete(call: Call, hostname: str) -> None:
    """Remove a device that runs no job."""
    call.require("lava_scheduler_app.delete_device")
    devices.delete_device(string(hostname, "hostname"))


@exposed("scheduler.devices.get_dictionary")
def get_dictionary(call: Call, hostname: str, render: bool = False, context: str | None = None) -> Any:
    """The device dictionary (jinja2), or with `render` the device configuration (YAML) for a
    job `context` given as YAML. Owners and admins only."""
    device = devices.read_dictionary(string(hostname, "hostname"), call.user)
    if not device.dictionary.strip():
        raise Fault(NOT_FOUND, f"Device '{hostname}' does not have a configuration")
    if not render:
        return binary(device.dictionary)
    return binary(devices.render_dictionary(device, call.settings, _context(context)))


def _context(text: Any) -> dict | None:
    if text in (None, ""):
        return None
    try:
        context = yaml.safe_load(str(text))
    except yaml.YAMLError as exc:
        raise Fault(BAD_REQUEST, f"Job Context '{text}' is not valid: {exc}") from None
    if not isinstance(context, dict):
        raise Fault(BAD_REQUEST, f"Job Context '{text}' is not valid: it must be a mapping")
    return context


@exposed("scheduler.devices.set_dictionary")
def set_dictionary(call: Call, hostname: str, dictionary: str) -> bool:
    """Store the device dictionary (it must render); an empty string removes it."""
    call.require("lava_scheduler_app.change_device")
    devices.set_dictionary(string(hostname, "hostname"), string(dictionary, "dictionary"), call.settings)
    return True


@exposed("scheduler.devices.tags.list")
def tags_list(call: Call, hostname: str) -> list:
    """The device's tags, sorted."""
    return devices.device_tags(devices.get_device(string(hostname, "hostname")))


@exposed("scheduler.devices.tags.add")
def tags_add(call: Call, hostname: str, name: str) -> None:
    """Tag the device; the tag is created when missing."""
    call.require("lava_scheduler_app.change_device")
    devices.add_device_tags(string(hostname, "hostname"), [string(name, "name")])


@exposed("scheduler.devices.tags.delete")
def tags_delete(call: Call, hostname: str, name: str) -> None:
    """Remove a tag from the device."""
    call.require("lava_scheduler_app.change_device")
    devices.remove_device_tags(string(hostname, "hostname"), [string(name, "name")], strict=True)


@exposed("scheduler.devices.perms_list")
def perms_list(call: Call, hostname: str) -> list:
    """[{name, group}]: the owner group may submit to the device."""
    return _permissions(devices.device_json(devices.get_device(string(hostname, "hostname"))))
