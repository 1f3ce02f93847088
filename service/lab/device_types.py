"""Device types: their template (a file, admin folder first), health-check definition and frequency.

Templates are files (design principle 4): the shipped ones come with the package and an admin
override goes into the first `template_dirs` folder, searched before them. Health-check
definitions live in the database unless a type has none, then health-checks/<template>.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from .. import devicecfg, events
from ..config import Settings
from ..errors import ApiError, bad_request, conflict
from ..models import Device, DeviceType, TestJob
from .checks import boolean, check_fields, grouped, insert, integer, lookup, name, text
from .definitions import parse

DEVICE_TYPE_FIELDS = ("name", "description", "template", "health_frequency", "health_denominator",
                      "disable_health_checks", "display", "health_check")


def get_device_type(type_name: str, path: str | None = None) -> DeviceType:
    return lookup(DeviceType, "name", type_name, "device type", path)


def device_type_json(dtype: DeviceType, settings: Settings | None = None, full: bool = True,
                     hostnames: list[str] | None = None) -> dict:
    """The one JSON shape of a device type; `settings` adds `template_found`, `full` the health check;
    `hostnames`, its devices as `device_types_json` read them for a whole page."""
    if hostnames is None:
        hostnames = device_hostnames([dtype]).get(dtype.id, [])
    out = {
        "name": dtype.name,
        "description": dtype.description,
        "template": devicecfg.template_name(dtype),
        "health_frequency": dtype.health_frequency,
        "health_denominator": dtype.health_denominator,
        "disable_health_checks": dtype.disable_health_checks,
        "display": dtype.display,
        "devices": hostnames,
    }
    if settings is not None:
        out["template_found"] = devicecfg.template_text(dtype, settings) is not None
    if full:
        out["health_check"] = dtype.health_check
    return out


def device_hostnames(dtypes: list[DeviceType]) -> dict[int, list[str]]:
    """{type id: its devices' hostnames, sorted} for these types, in one query."""
    query = (Device.select(Device.device_type, Device.hostname).where(Device.device_type.in_([t.id for t in dtypes]))
             .order_by(Device.hostname).tuples())
    return grouped(query)


def device_types_json(dtypes: list[DeviceType], settings: Settings | None = None, full: bool = True) -> list[dict]:
    """`device_type_json` of each type, in a fixed number of queries."""
    hostnames = device_hostnames(dtypes)
    return [device_type_json(t, settings, full, hostnames.get(t.id, [])) for t in dtypes]


def list_device_types(include_hidden: bool = True) -> list[DeviceType]:
    query = DeviceType.select().order_by(DeviceType.name)
    if not include_hidden:
        query = query.where(DeviceType.display == True)  # noqa: E712 (peewee expression)
    return list(query)


def available_templates(settings: Settings) -> list[str]:
    """Template names in the search path that a device type can use (LAVA skips base*)."""
    found = set()
    for folder in devicecfg.device_search_path(settings):
        if folder.is_dir():
            found.update(p.stem for p in folder.glob("*.jinja2") if not p.name.startswith("base"))
    return sorted(found)


def _device_type_fields(data: Mapping[str, Any]) -> dict:
    fields: dict[str, Any] = {}
    if "description" in data:
        fields["description"] = text(data["description"], "description")
    if "template" in data:
        fields["template"] = name(data["template"], "template", "template name") if data["template"] else ""
    if "health_frequency" in data:
        fields["health_frequency"] = integer(data["health_frequency"], "health_frequency", 1)
    if "health_denominator" in data:
        if data["health_denominator"] not in ("hours", "jobs"):
            raise bad_request(f"health_denominator must be 'hours' or 'jobs', not {data['health_denominator']!r}",
                              "health_denominator")
        fields["health_denominator"] = data["health_denominator"]
    for key in ("disable_health_checks", "display"):
        if key in data:
            fields[key] = boolean(data[key], key)
    if "health_check" in data:
        fields["health_check"] = _health_check(data["health_check"])
    return fields


def _health_check(value: Any) -> str:
    """A health-check job definition, checked against the job schema; '' means the shipped file.

    Only the schema: the lab's checks (devices, tags, owners) apply when the check is scheduled,
    and a type gets its health check before it has devices.
    """
    definition = text(value, "health_check")
    if definition.strip():
        try:
            parse(definition)
        except ApiError as exc:
            raise bad_request(f"health_check: {exc.message}", f"health_check.{exc.path}".rstrip(".")) from None
    return definition


def create_device_type(data: Mapping[str, Any]) -> DeviceType:
    check_fields(data, DEVICE_TYPE_FIELDS, required=("name",))
    type_name = name(data["name"], "name", "device type name")
    if DeviceType.get_or_none(DeviceType.name == type_name):
        raise conflict(f"device type '{type_name}' already exists", "name")
    fields = _device_type_fields(data)
    return insert(lambda: DeviceType.create(name=type_name, **fields), f"device type '{type_name}'", "name")


def update_device_type(type_name: str, changes: Mapping[str, Any]) -> DeviceType:
    dtype = get_device_type(type_name)
    check_fields(changes, DEVICE_TYPE_FIELDS)
    if "name" in changes and changes["name"] != type_name:
        raise bad_request("a device type cannot be renamed", "name")
    fields = _device_type_fields(changes)
    if fields:
        DeviceType.update(**fields).where(DeviceType.id == dtype.id).execute()
        events.schedule_soon(f"device type {type_name} changed")
    return DeviceType.get_by_id(dtype.id)


def delete_device_type(type_name: str) -> None:
    dtype = get_device_type(type_name)
    count = dtype.devices.count()
    if count:
        raise conflict(f"device type '{type_name}' still has {count} device(s); delete or move them first")
    if TestJob.select().where(TestJob.requested_device_type == dtype).exists():
        raise conflict(f"device type '{type_name}' has jobs in its history; hide it instead (display: false)")
    dtype.delete_instance()


def health_check_text(type_name: str, settings: Settings) -> tuple[str | None, str]:
    """The health-check definition devices of this type run and where it comes from:
    'database' (set through the API), 'file' (health-checks/<template>.yaml) or 'none'."""
    dtype = get_device_type(type_name)
    if dtype.health_check.strip():
        return dtype.health_check, "database"
    found = devicecfg.health_check_definition(Device(device_type=dtype, dictionary=""), settings)
    return found, "file" if found is not None else "none"


# Templates ########################################################################


def template_overridden(dtype: DeviceType, settings: Settings) -> bool:
    """Whether an admin folder holds this type's template (it then wins over the shipped one)."""
    file_name = f"{devicecfg.template_name(dtype)}.jinja2"
    return any((Path(d) / file_name).is_file() for d in settings.template_dirs)


def set_template(type_name: str, template: str, settings: Settings) -> None:
    """Install a template override in the first admin folder; '' removes the override (the
    shipped template, if any, applies again). A template that is not valid jinja2 is refused."""
    dtype = get_device_type(type_name)
    if not settings.template_dirs:
        raise bad_request("the server has no admin template folder (template_dirs)", "template_dirs")
    path = Path(settings.template_dirs[0]) / f"{devicecfg.template_name(dtype)}.jinja2"
    try:
        if not template.strip():
            path.unlink(missing_ok=True)
            return
        jinja2.Environment(autoescape=False).parse(template)  # refuse what no device could render  # nosec
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(template)
        tmp.replace(path)
    except jinja2.TemplateSyntaxError as exc:
        raise bad_request(f"the template is not valid jinja2: line {exc.lineno}: {exc}", "template") from None
    except OSError as exc:
        raise bad_request(f"unable to write {path}: {exc.strerror}", "template") from None
