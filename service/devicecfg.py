"""Where templates and health checks are found, and a device's configuration for a job.

Admin folders come first, then what dutlab ships (design principle 4: the DB holds dictionaries
and health checks; templates are files with an admin override folder searched first).
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import Settings
from .errors import ApiError
from .models import Device, DeviceType, TestJob
from .templating import TemplateError, extends_of, render_device_config, shipped_device_types_dir


def device_search_path(settings: Settings) -> list[Path]:
    return [Path(d) for d in settings.template_dirs] + [shipped_device_types_dir()]


def render(device: Device, settings: Settings, context: dict | None = None) -> str:
    """The device's dictionary rendered through its template with a job context."""
    if not device.dictionary.strip():
        raise ApiError(409, f"device '{device.hostname}' has no dictionary; set one with "
                            "'dutlab-server manage devices update --dictionary FILE'")
    try:
        return render_device_config(
            device.dictionary,
            hostname=device.hostname,
            device_type=device.device_type.name,
            context=context or {},
            search_path=device_search_path(settings),
        )
    except TemplateError as exc:
        raise ApiError(409, f"device '{device.hostname}': {exc}", "dictionary") from None


def render_for_job(job: TestJob, settings: Settings) -> str:
    device = Device.get_by_id(job.actual_device_id)
    context = json.loads(job.definition).get("context") or {}
    return render(device, settings, context)


def template_name(device_type: DeviceType) -> str:
    return device_type.template or device_type.name


def template_text(device_type: DeviceType, settings: Settings) -> str | None:
    name = template_name(device_type) + ".jinja2"
    for folder in device_search_path(settings):
        path = folder / name
        if path.is_file():
            return path.read_text()
    return None


def health_check_definition(device: Device, settings: Settings) -> str | None:
    """The health-check job for `device`: the device type's own, else health-checks/<template>.yaml.

    As in LAVA, <template> is what the dictionary extends (qemu for qemu.jinja2).
    """
    dtype = device.device_type
    if dtype.health_check.strip():
        return dtype.health_check
    try:
        name = extends_of(device.dictionary) or template_name(dtype)
    except TemplateError:
        name = template_name(dtype)  # the broken dictionary is reported when it is rendered
    for folder in [Path(settings.health_checks_dir), shipped_device_types_dir() / "health-checks"]:
        for ext in (".yaml", ".yml"):
            path = folder / f"{name}{ext}"
            if path.is_file():
                return path.read_text()
    return None
