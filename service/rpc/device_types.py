"""scheduler.device_types.* over lab/device_types.py; templates are files in the admin template folder."""

from __future__ import annotations

from typing import Any

from .. import devicecfg
from ..errors import ApiError
from ..lab import device_types
from ..lab.devices import devices_json, list_devices
from . import BAD_REQUEST, CONFLICT, NOT_FOUND, Call, Fault, binary, exposed, lava_message, string


@exposed("scheduler.device_types.list")
def list_types(call: Call, show_all: bool = False) -> list:
    """Device types with their device count; `show_all` adds hidden types and installed
    templates that are not device types yet (installed: false)."""
    infos = device_types.device_types_json(device_types.list_device_types(include_hidden=bool(show_all)),
                                           call.settings, full=False)
    rows = [{"name": i["name"], "devices": len(i["devices"]), "installed": True, "template": i["template_found"]}
            for i in infos]
    if show_all:
        known = {r["name"] for r in rows}
        rows += [{"name": name, "devices": 0, "installed": False, "template": True}
                 for name in device_types.available_templates(call.settings) if name not in known]
    return sorted(rows, key=lambda r: r["name"])


@exposed("scheduler.device_types.show")
def show(call: Call, name: str) -> dict:
    """Details of one device type."""
    dtype = device_types.get_device_type(string(name, "name"))
    info = device_types.device_type_json(dtype, call.settings)
    return {
        "name": dtype.name,
        "description": info["description"],
        "display": info["display"],
        "health_disabled": info["disable_health_checks"],
        "health_denominator": info["health_denominator"],
        "health_frequency": info["health_frequency"],
        "aliases": [],
        "devices": info["devices"],
        "default_template": not device_types.template_overridden(dtype, call.settings),
        "permissions": [],
    }


def _fields(description: Any, display: Any, health_frequency: Any, health_denominator: Any,
            health_disabled: Any = None) -> dict:
    given = {"description": description, "display": display, "health_frequency": health_frequency,
             "health_denominator": health_denominator, "disable_health_checks": health_disabled}
    return {key: value for key, value in given.items() if value is not None}


def _fault(exc: ApiError) -> Fault:
    if exc.status == CONFLICT:  # LAVA answers a duplicate name with a 400
        return Fault(BAD_REQUEST, f"Bad request: {exc.message}")
    return Fault(exc.status, lava_message(exc.message))


@exposed("scheduler.device_types.add")
def add(call: Call, name: str, description: str | None = None, display: bool = True, owners_only: bool = False,
        health_frequency: int = 24, health_denominator: str = "hours") -> None:
    """Add a device type (its template is <name>.jinja2). `owners_only` is ignored: device
    owners restrict devices in dutlab."""
    call.require("lava_scheduler_app.add_devicetype")
    try:
        device_types.create_device_type({"name": string(name, "name"),
                                        **_fields(description, display, health_frequency, health_denominator)})
    except ApiError as exc:
        raise _fault(exc) from None


@exposed("scheduler.device_types.update")
def update(call: Call, name: str, description: str | None = None, display: bool | None = None,
           owners_only: bool | None = None, health_frequency: int | None = None,
           health_denominator: str | None = None, health_disabled: bool | None = None) -> None:
    """Change a device type; nil arguments stay as they are."""
    call.require("lava_scheduler_app.change_devicetype")
    try:
        device_types.update_device_type(string(name, "name"), _fields(description, display, health_frequency,
                                                                     health_denominator, health_disabled))
    except ApiError as exc:
        raise _fault(exc) from None


@exposed("scheduler.device_types.devices")
def devices(call: Call, name: str, health: str | None = None) -> list:
    """[{hostname, health, state}] of the type's devices, optionally of one health."""
    dtype = device_types.get_device_type(string(name, "name"))
    infos = devices_json(list_devices(device_type=dtype.name, health=health))
    return [{"hostname": i["hostname"], "health": i["health"], "state": i["state"]} for i in infos]


@exposed("scheduler.device_types.aliases.list")
def aliases_list(call: Call, name: str) -> list:
    """Device-type aliases: dutlab has none, so always []."""
    device_types.get_device_type(string(name, "name"))
    return []


@exposed("scheduler.device_types.get_template")
def get_template(call: Call, name: str) -> Any:
    """The jinja2 template devices of this type extend (admin override first)."""
    dtype = device_types.get_device_type(string(name, "name"))
    text = devicecfg.template_text(dtype, call.settings)
    if text is None:
        raise Fault(NOT_FOUND, f"Device-type '{name}' template was not found.")
    return binary(text)


@exposed("scheduler.device_types.set_template")
def set_template(call: Call, name: str, config: str) -> None:
    """Install a template override in the admin folder; an empty string removes the override
    (the shipped template, if any, applies again)."""
    call.require("lava_scheduler_app.change_devicetype")
    try:
        device_types.set_template(string(name, "name"), string(config, "config"), call.settings)
    except ApiError as exc:
        if exc.status == BAD_REQUEST:
            raise Fault(BAD_REQUEST, f"Bad request: {exc.message}") from None
        raise


@exposed("scheduler.device_types.get_health_check")
def get_health_check(call: Call, name: str) -> Any:
    """The health-check job definition of this type (its own, else the shipped file)."""
    text, _source = device_types.health_check_text(string(name, "name"), call.settings)
    if text is None:
        raise Fault(NOT_FOUND, f"Device-type '{name}' health-check was not found.")
    return binary(text)


@exposed("scheduler.device_types.set_health_check")
def set_health_check(call: Call, name: str, config: str) -> None:
    """Store the type's health-check definition (validated like a job); empty: the shipped file."""
    call.require("lava_scheduler_app.change_devicetype")
    device_types.update_device_type(string(name, "name"), {"health_check": string(config, "config")})
