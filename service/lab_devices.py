"""Device types, devices, device dictionaries, device health and device tags.

A device has one owner (a user or a group; only owners may submit to it and read its
dictionary) and one physical-access contact (a user or a group, informational).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import auth, devicecfg, events
from .config import Settings
from .db import write_txn
from .devices import set_health
from .errors import ApiError, bad_request, conflict, forbidden
from .lab import (
    CLI_ACTOR,
    boolean,
    check_fields,
    ensure_tags,
    get_tag,
    get_worker,
    insert,
    integer,
    iso,
    label,
    lookup,
    name,
    string_list,
    text,
)
from .lab_users import get_group, get_user
from .models import Device, DeviceTag, DeviceType, HealthHistory, Tag, TestJob, User, Worker
from .states import DeviceHealth, DeviceState
from .templating import TemplateError, load_device_config

DEVICE_TYPE_FIELDS = ("name", "description", "template", "health_frequency", "health_denominator",
                      "disable_health_checks", "display", "health_check")
DEVICE_FIELDS = ("hostname", "device_type", "worker", "description", "health", "reason", "owner_user",
                 "owner_group", "physical_user", "physical_group", "tags", "dictionary")
#: (user field, group field) pairs of which at most one is set
OWNER_PAIRS = (("owner_user", "owner_group"), ("physical_user", "physical_group"))

# Device types #####################################################################


def get_device_type(type_name: str, path: str | None = None) -> DeviceType:
    return lookup(DeviceType, "name", type_name, "device type", path)


def device_type_json(dtype: DeviceType, settings: Settings | None = None, full: bool = True) -> dict:
    out = {
        "name": dtype.name,
        "description": dtype.description,
        "template": devicecfg.template_name(dtype),
        "health_frequency": dtype.health_frequency,
        "health_denominator": dtype.health_denominator,
        "disable_health_checks": dtype.disable_health_checks,
        "display": dtype.display,
        "devices": [d.hostname for d in dtype.devices.order_by(Device.hostname)],
    }
    if settings is not None:
        out["template_found"] = devicecfg.template_text(dtype, settings) is not None
    if full:
        out["health_check"] = dtype.health_check
    return out


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
    """A health-check job definition, validated like a submission; '' means the shipped file."""
    from dutlab.dispatcher.schema.common import JobDefinitionError
    from dutlab.dispatcher.schema.job import validate_job
    from dutlab.dispatcher.schema.loader import parse_job

    definition = text(value, "health_check")
    if definition.strip():
        try:
            validate_job(parse_job(definition))
        except JobDefinitionError as exc:
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


# Devices ##########################################################################


def get_device(hostname: str, path: str | None = None) -> Device:
    return lookup(Device, "hostname", hostname, "device", path)


def _username(user_id: int | None) -> str | None:
    return User.get_by_id(user_id).username if user_id else None


def _groupname(group_id: int | None) -> str | None:
    from .models import Group

    return Group.get_by_id(group_id).name if group_id else None


def device_tags(device: Device) -> list[str]:
    return [t.name for t in Tag.select(Tag.name).join(DeviceTag).where(DeviceTag.device == device)
            .order_by(Tag.name)]


def device_json(device: Device) -> dict:
    """Everything about a device except its dictionary (GET .../dictionary, for owners)."""
    return {
        "hostname": device.hostname,
        "device_type": device.device_type.name,
        "worker": get_worker_name(device.worker_id),
        "description": device.description,
        "state": DeviceState(device.state).label,
        "health": DeviceHealth(device.health).label,
        "owner_user": _username(device.owner_user_id),
        "owner_group": _groupname(device.owner_group_id),
        "physical_user": _username(device.physical_user_id),
        "physical_group": _groupname(device.physical_group_id),
        "tags": device_tags(device),
        "current_job": device.current_job_id,
        "last_health_report_job": device.last_health_report_job_id,
        "has_dictionary": bool(device.dictionary.strip()),
    }


def get_worker_name(worker_id: int | None) -> str | None:
    return Worker.get_by_id(worker_id).hostname if worker_id else None


def list_devices(include_retired: bool = True, **filters: Any) -> list[Device]:
    """Devices filtered by `state`, `health`, `device_type`, `worker` and `tag` (names/labels)."""
    query = Device.select().order_by(Device.hostname)
    if not include_retired:
        query = query.where(Device.health != DeviceHealth.RETIRED)
    if filters.get("state"):
        query = query.where(Device.state == label(DeviceState, filters["state"], "state"))
    if filters.get("health"):
        query = query.where(Device.health == label(DeviceHealth, filters["health"], "health"))
    if filters.get("device_type"):
        query = query.where(Device.device_type == get_device_type(filters["device_type"], "device_type"))
    if filters.get("worker"):
        query = query.where(Device.worker == get_worker(filters["worker"], "worker"))
    if filters.get("tag"):
        tagged = DeviceTag.select(DeviceTag.device).where(DeviceTag.tag == get_tag(filters["tag"], "tag"))
        query = query.where(Device.id.in_(tagged))
    return list(query)


def _owner_fields(data: Mapping[str, Any]) -> dict:
    """Resolve owner/physical user or group; setting one side clears the other."""
    fields: dict[str, Any] = {}
    for user_key, group_key in OWNER_PAIRS:
        user_name, group_name = data.get(user_key), data.get(group_key)
        if user_name and group_name:
            raise bad_request(f"give '{user_key}' or '{group_key}', not both: a device has one of them",
                              group_key)
        if user_key in data:
            fields[user_key] = get_user(text(user_name, user_key), user_key) if user_name else None
            if user_name:
                fields[group_key] = None
        if group_key in data:
            fields[group_key] = get_group(text(group_name, group_key), group_key) if group_name else None
            if group_name:
                fields[user_key] = None
    return fields


def _device_fields(data: Mapping[str, Any]) -> dict:
    fields = _owner_fields(data)
    if "device_type" in data:
        fields["device_type"] = get_device_type(data["device_type"], "device_type")
    if "worker" in data:
        fields["worker"] = get_worker(data["worker"], "worker") if data["worker"] is not None else None
    if "description" in data:
        fields["description"] = text(data["description"], "description")
    return fields


def check_dictionary(value: Any, hostname: str, dtype: DeviceType, settings: Settings) -> str:
    """A dictionary that renders (empty context) to a YAML mapping; '' removes it."""
    dictionary = text(value, "dictionary")
    if dictionary.strip():
        try:
            load_device_config(dictionary, hostname=hostname, device_type=dtype.name, context={},
                               search_path=devicecfg.device_search_path(settings))
        except TemplateError as exc:
            raise bad_request(f"the dictionary does not render: {exc}", "dictionary") from None
    return dictionary


def create_device(data: Mapping[str, Any], settings: Settings, actor: str = CLI_ACTOR) -> Device:
    """Add a device: state Idle, health Unknown unless `health` says otherwise."""
    check_fields(data, DEVICE_FIELDS, required=("hostname", "device_type"))
    hostname = name(data["hostname"], "hostname", "device hostname", 200)
    if Device.get_or_none(Device.hostname == hostname):
        raise conflict(f"device '{hostname}' already exists", "hostname")
    fields = _device_fields(data)
    fields["health"] = label(DeviceHealth, data.get("health") or "Unknown", "health")
    if "dictionary" in data:
        fields["dictionary"] = check_dictionary(data["dictionary"], hostname, fields["device_type"], settings)
    tags = ensure_tags(string_list(data["tags"], "tags"), "tags") if data.get("tags") else []
    with write_txn():
        device = insert(lambda: Device.create(hostname=hostname, **fields), f"device '{hostname}'", "hostname")
        for tag in tags:
            DeviceTag.create(device=device, tag=tag)
    events.schedule_soon(f"device {hostname} added")
    return device


def update_device(hostname: str, changes: Mapping[str, Any], settings: Settings,
                  actor: str = CLI_ACTOR) -> Device:
    """Change the given fields; `health` (with an optional `reason`) goes into the health history."""
    device = get_device(hostname)
    check_fields(changes, DEVICE_FIELDS)
    if "hostname" in changes and changes["hostname"] != hostname:
        raise bad_request("a device cannot be renamed; add a new one", "hostname")
    if "reason" in changes and changes.get("health") is None:
        raise bad_request("'reason' explains a health change; give 'health' too", "reason")
    fields = _device_fields(changes)
    if "dictionary" in changes:
        dtype = fields.get("device_type", device.device_type)
        fields["dictionary"] = check_dictionary(changes["dictionary"], hostname, dtype, settings)
    health = label(DeviceHealth, changes["health"], "health") if changes.get("health") is not None else None
    tags = ensure_tags(string_list(changes["tags"], "tags"), "tags") if "tags" in changes else None
    with write_txn():
        if fields:
            Device.update(**fields).where(Device.id == device.id).execute()
        if tags is not None:
            _replace_tags(device, tags)
        if health is not None:
            set_health(device, health, text(changes.get("reason"), "reason") or f"set by {actor}", actor)
    events.wake_worker(device.worker_id)
    events.schedule_soon(f"device {hostname} changed")
    return Device.get_by_id(device.id)


def set_device_health(hostname: str, health: Any, reason: Any = "", actor: str = CLI_ACTOR) -> Device:
    return update_device(hostname, {"health": health, "reason": reason or ""}, settings=None, actor=actor)


def delete_device(hostname: str) -> None:
    device = get_device(hostname)
    if device.current_job_id is not None:
        raise conflict(f"device '{hostname}' is running job {device.current_job_id}; "
                       "cancel it or wait for it to end first")
    device.delete_instance()


def health_history(hostname: str) -> list[HealthHistory]:
    device = get_device(hostname)
    return list(HealthHistory.select().where(HealthHistory.device == device).order_by(HealthHistory.id.desc()))


def history_json(entry: HealthHistory) -> dict:
    return {
        "time": iso(entry.time),
        "old_health": DeviceHealth(entry.old_health).label,
        "new_health": DeviceHealth(entry.new_health).label,
        "reason": entry.reason,
        "actor": entry.actor,
    }


# Dictionaries #####################################################################


def read_dictionary(hostname: str, user: User | None, trusted: bool = False) -> Device:
    """The device, if `user` may read its dictionary: admins and those who may submit to it."""
    device = get_device(hostname)
    if trusted:
        return device
    if user is None:
        raise ApiError(401, "authentication required: a device dictionary is shown to its owners only")
    if not auth.is_admin(user) and not auth.may_submit_to(user, device):
        raise forbidden(f"user '{user.username}' may not read the dictionary of '{hostname}' (not an owner)")
    return device


def render_dictionary(device: Device, settings: Settings, context: Any = None) -> str:
    if context is not None and not isinstance(context, dict):
        raise bad_request("the job context must be a mapping", "context")
    return devicecfg.render(device, settings, context or {})


def set_dictionary(hostname: str, dictionary: Any, settings: Settings) -> Device:
    return update_device(hostname, {"dictionary": dictionary}, settings)


# Device tags ######################################################################


def _replace_tags(device: Device, tags: list[Tag]) -> None:
    keep = [t.id for t in tags] or [0]
    DeviceTag.delete().where(DeviceTag.device == device, DeviceTag.tag.not_in(keep)).execute()
    for tag in tags:
        DeviceTag.get_or_create(device=device, tag=tag)


def add_device_tags(hostname: str, names: list[str]) -> list[str]:
    """Tag a device (tags are created when missing); return its tags."""
    device = get_device(hostname)
    tags = ensure_tags(string_list(names, "tags"), "tags")
    with write_txn():
        for tag in tags:
            DeviceTag.get_or_create(device=device, tag=tag)
    events.schedule_soon(f"device {hostname} tagged")
    return device_tags(device)


def remove_device_tags(hostname: str, names: list[str], strict: bool = False) -> list[str]:
    """Untag a device; `strict` makes a tag the device does not carry a 404."""
    device = get_device(hostname)
    for i, tag_name in enumerate(string_list(names, "tags")):
        tag = get_tag(tag_name, None if strict else f"tags[{i}]")
        removed = DeviceTag.delete().where(DeviceTag.device == device, DeviceTag.tag == tag).execute()
        if strict and not removed:
            raise ApiError(404, f"device '{hostname}' has no tag '{tag_name}'")
    return device_tags(device)

