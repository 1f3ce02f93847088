"""Devices, their dictionaries and tags, and device health: the one transition and its history.

A device has one owner (a user or a group; only owners may submit to it and read its
dictionary) and one physical-access contact (a user or a group, informational). Every health
change, whoever makes it (an admin, a health check, a worker's health, maintenance), goes
through `set_health`, which records who and why and applies LAVA's rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import auth, devicecfg, events
from ..config import Settings
from ..db import write_txn
from ..errors import ApiError, bad_request, conflict, forbidden
from ..models import Device, DeviceTag, DeviceType, Group, HealthHistory, Tag, TestJob, User, Worker
from ..states import DeviceHealth, DeviceState, JobState, WorkerHealth
from ..templating import TemplateError, load_device_config
from .checks import check_fields, insert, iso, label, lookup, name, names_by_id, string_list, text
from .device_types import get_device_type
from .tags import ensure_tags, get_tag
from .users import get_group, get_user

#: who the health history names for the lab's own decisions (health checks, lost workers,
#: maintenance); also the user that submits health-check jobs
HEALTH_ACTOR = "dutlab-health"
#: who the health history names for changes made without a named user (the admin CLI's fallback)
ADMIN_ACTOR = "dutlab-admin"

DEVICE_FIELDS = ("hostname", "device_type", "worker", "description", "health", "reason", "owner_user",
                 "owner_group", "physical_user", "physical_group", "tags", "dictionary")
#: (user field, group field) pairs of which at most one is set
OWNER_PAIRS = (("owner_user", "owner_group"), ("physical_user", "physical_group"))

# Health ###########################################################################


def set_health(device: Device, health: DeviceHealth, reason: str, actor: str) -> bool:
    """Set `device`'s health and record it; return False when it already had that health.

    A Retired device stops its job (LAVA cancels it too); a device that may run jobs again
    asks for a scheduling pass.
    """
    current = Device.get_by_id(device.id)
    if current.health == health:
        return False
    Device.update(health=health).where(Device.id == device.id).execute()
    entry = HealthHistory.create(device=device, old_health=current.health, new_health=health, reason=reason,
                                 actor=actor)
    device.health = health
    events.publish(events.DEVICE_HEALTH, device.id, entry.id, int(health))
    if health == DeviceHealth.RETIRED and current.current_job_id:
        TestJob.update(state=JobState.CANCELING).where(
            TestJob.id == current.current_job_id,
            TestJob.state.in_([JobState.SCHEDULED, JobState.RUNNING]),
        ).execute()
        events.wake_worker(current.worker_id)
    if health in (DeviceHealth.GOOD, DeviceHealth.UNKNOWN, DeviceHealth.LOOPING):
        events.schedule_soon(f"device {device.hostname} is {health.label}")
    return True


def follow_worker_health(worker: Worker, old: WorkerHealth, health: WorkerHealth, why: str, actor: str) -> None:
    """LAVA's rules for a worker's devices: → Active makes Good devices Unknown (a health check
    proves them again), unless the worker leaves retirement; → Retired retires every device not
    Bad or Retired; → Maintenance changes no device (the scheduler skips workers not Active)."""
    if health == WorkerHealth.ACTIVE and old != WorkerHealth.RETIRED:
        for device in Device.select().where(Device.worker == worker, Device.health == DeviceHealth.GOOD):
            set_health(device, DeviceHealth.UNKNOWN, why, actor)
    elif health == WorkerHealth.RETIRED:
        keep = (DeviceHealth.BAD, DeviceHealth.RETIRED)
        for device in Device.select().where(Device.worker == worker, Device.health.not_in(keep)):
            set_health(device, DeviceHealth.RETIRED, why, actor)


def health_history(hostname: str) -> list[HealthHistory]:
    device = get_device(hostname)
    return list(HealthHistory.select().where(HealthHistory.device == device).order_by(HealthHistory.id.desc()))


def history_json(entry: HealthHistory) -> dict:
    """The one JSON shape of a health-history entry."""
    return {
        "time": iso(entry.time),
        "old_health": DeviceHealth(entry.old_health).label,
        "new_health": DeviceHealth(entry.new_health).label,
        "reason": entry.reason,
        "actor": entry.actor,
    }


# Devices ##########################################################################


def get_device(hostname: str, path: str | None = None) -> Device:
    return lookup(Device, "hostname", hostname, "device", path)


class DeviceNames:
    """The names a page of devices refers to, read in a fixed number of queries whatever the page's
    size: device types, workers, owner and physical-access users and groups, tags."""

    def __init__(self, devices: list[Device]) -> None:
        self.types = names_by_id(DeviceType, "name", {d.device_type_id for d in devices})
        self.workers = names_by_id(Worker, "hostname", {d.worker_id for d in devices})
        self.users = names_by_id(User, "username", {d.owner_user_id for d in devices}
                                 | {d.physical_user_id for d in devices})
        self.groups = names_by_id(Group, "name", {d.owner_group_id for d in devices}
                                  | {d.physical_group_id for d in devices})
        self.tags: dict[int, list[str]] = {}
        for device_id, tag in (DeviceTag.select(DeviceTag.device, Tag.name).join(Tag)
                               .where(DeviceTag.device.in_([d.id for d in devices])).order_by(Tag.name).tuples()):
            self.tags.setdefault(device_id, []).append(tag)


def device_tags(device: Device) -> list[str]:
    return [t.name for t in Tag.select(Tag.name).join(DeviceTag).where(DeviceTag.device == device)
            .order_by(Tag.name)]


def device_json(device: Device, names: DeviceNames | None = None) -> dict:
    """The one JSON shape of a device: everything but its dictionary (GET .../dictionary, for owners);
    `names`, those of a page of devices (`devices_json`)."""
    names = names or DeviceNames([device])
    return {
        "hostname": device.hostname,
        "device_type": names.types.get(device.device_type_id),
        "worker": names.workers.get(device.worker_id),
        "description": device.description,
        "state": DeviceState(device.state).label,
        "health": DeviceHealth(device.health).label,
        "owner_user": names.users.get(device.owner_user_id),
        "owner_group": names.groups.get(device.owner_group_id),
        "physical_user": names.users.get(device.physical_user_id),
        "physical_group": names.groups.get(device.physical_group_id),
        "tags": names.tags.get(device.id, []),
        "current_job": device.current_job_id,
        "last_health_report_job": device.last_health_report_job_id,
        "has_dictionary": bool(device.dictionary.strip()),
    }


def devices_json(devices: list[Device]) -> list[dict]:
    """`device_json` of each device, in a fixed number of queries."""
    names = DeviceNames(devices)
    return [device_json(d, names) for d in devices]


def _worker(hostname: Any, path: str) -> Worker:
    # looked up here, not through workers.py: that module depends on this one (worker health)
    return lookup(Worker, "hostname", hostname, "worker", path)


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
        query = query.where(Device.worker == _worker(filters["worker"], "worker"))
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
        fields["worker"] = _worker(data["worker"], "worker") if data["worker"] is not None else None
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


def create_device(data: Mapping[str, Any], settings: Settings, actor: str = ADMIN_ACTOR) -> Device:
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


def update_device(hostname: str, changes: Mapping[str, Any], settings: Settings | None,
                  actor: str = ADMIN_ACTOR) -> Device:
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


def delete_device(hostname: str) -> None:
    device = get_device(hostname)
    if device.current_job_id is not None:
        raise conflict(f"device '{hostname}' is running job {device.current_job_id}; "
                       "cancel it or wait for it to end first")
    device.delete_instance()


# Dictionaries #####################################################################


def read_dictionary(hostname: str, user: User | None, trusted: bool = False) -> Device:
    """The device, if `user` may read its dictionary: admins and those who may submit to it."""
    device = get_device(hostname)
    if trusted:
        return device
    if user is None:
        raise ApiError(401, "authentication required: a device dictionary is shown to its owners only")
    if not auth.may_read_device(user, device):
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

