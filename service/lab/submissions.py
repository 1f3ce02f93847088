"""What a job definition must satisfy before anything is stored: one function,
`check_definition`, gives REST validate and submit, XML-RPC validate and submit, the admin CLI
and the scheduler's health checks their verdict: the schema's, then the lab's (device type, usable
devices, tags, visibility, permissions, notify), then the pipeline's on the devices it may use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peewee import fn

from .. import auth
from ..config import Settings
from ..errors import ApiError, bad_request, forbidden
from ..models import Device, DeviceTag, DeviceType, Group, Tag, User
from ..notify.rules import check_notify
from ..states import PRIORITY_NAMES, DeviceHealth
from . import multinode
from .definitions import compatibility, parse, seconds
from .pipelines import runnable

# Validation #######################################################################


@dataclass
class Submission:
    """A validated job definition and what it asks for, ready to store."""

    text: str
    job: dict
    device_type: DeviceType
    tags: list[Tag]
    priority: int
    visibility: str
    viewing_groups: list[Group]
    queue_timeout: int | None
    #: the highest compatibility of its methods (dispatcher/actions/compatibility.py)
    compatibility: int = 1
    #: the pipeline it gets on a device of its type (None: no device configuration to build it)
    description: dict | None = None
    #: a MultiNode group: its sub-jobs (the fields above are the group's; device_type is the first role's)
    roles: list[multinode.RoleJob] = field(default_factory=list)


def check_definition(user: User | None, text: str, settings: Settings, device: Device | None = None) -> Submission:
    """Validate `text` for `user` (None: the lab itself, no permission checks); raise
    ApiError(4xx, sentence, path) on the first problem: the schema's, the lab's, then the
    pipeline's on the devices it may use (`device`: on that one, as for a health check)."""
    job = parse(text)
    group = multinode.is_group(job)
    if not group:
        device_type = DeviceType.get_or_none(DeviceType.name == job["device_type"])
        if device_type is None:
            names = ", ".join(t.name for t in DeviceType.select().order_by(DeviceType.name)) or "none yet"
            raise bad_request(f"device type '{job['device_type']}' does not exist (known: {names})", "device_type")
        tags = _tags(job.get("tags") or [])
    groups = _viewing_groups(job.get("visibility", "public"))
    if user is not None and not settings.open_submission and not auth.has_perm(user, "submit"):
        raise forbidden(f"user '{user.username}' may not submit jobs (needs the 'submit' permission)")
    roles = multinode.check_group(user, job) if group else []
    if group:
        device_type, tags = roles[0].device_type, []
    else:
        devices = [device] if device is not None else _check_devices(user, device_type, tags)
    check_notify(job.get("notify"))
    description = None
    for role in roles:  # each sub-job's pipeline on the devices of its role
        _role_runnable(user, role, settings)
    if not group:
        description = runnable(job, devices, settings)
    visibility = job.get("visibility", "public")
    return Submission(
        text=text,
        job=job,
        device_type=device_type,
        tags=tags,
        priority=_priority(job.get("priority", "medium")),
        visibility=visibility if isinstance(visibility, str) else "group",
        viewing_groups=groups,
        queue_timeout=_queue_timeout(job, settings),
        compatibility=compatibility(job),
        description=description,
        roles=roles,
    )


def _tags(names: list[str]) -> list[Tag]:
    tags = []
    for i, name in enumerate(names):
        tag = Tag.get_or_none(Tag.name == name)
        if tag is None:
            raise bad_request(f"device tag '{name}' does not exist; ask an admin to create it", f"tags[{i}]")
        tags.append(tag)
    return tags


def _viewing_groups(visibility: object) -> list[Group]:
    if not isinstance(visibility, dict):
        return []
    groups = []
    for i, name in enumerate(visibility.get("group") or []):
        group = Group.get_or_none(Group.name == name)
        if group is None:
            raise bad_request(f"group '{name}' does not exist", f"visibility.group[{i}]")
        groups.append(group)
    return groups


def _priority(value: object) -> int:
    if isinstance(value, str):
        return PRIORITY_NAMES[value]
    return int(value)  # the schema allows 0..100


def _queue_timeout(job: dict, settings: Settings) -> int | None:
    queue = (job.get("timeouts") or {}).get("queue")
    if queue:
        return seconds(queue)
    return settings.queue_timeout_hours * 3600 or None


def _role_runnable(user: User | None, role: multinode.RoleJob, settings: Settings) -> None:
    """The pipeline check of one MultiNode sub-job; a refusal names its role."""
    try:
        runnable(role.definition, _check_devices(user, role.device_type, role.tags), settings)
    except ApiError as exc:
        raise ApiError(exc.status, f"role '{role.role}': {exc.message}", exc.path) from None


def _check_devices(user: User | None, device_type: DeviceType, tags: list[Tag]) -> list[Device]:
    """LAVA's submit-time check: some non-retired device of the type may run this job. Returns one
    device per distinct dictionary among those that may (the first by hostname: what the pipeline
    check renders), in a fixed number of queries whatever the size of the lab."""
    query = Device.select().where(Device.device_type == device_type, Device.health != DeviceHealth.RETIRED)
    if not query.exists():
        raise bad_request(f"device type '{device_type.name}' has no usable device (all retired or none)",
                          "device_type")
    if tags:
        wanted = {t.id for t in tags}
        carrying = (DeviceTag.select(DeviceTag.device).where(DeviceTag.tag.in_(list(wanted)))
                    .group_by(DeviceTag.device).having(fn.COUNT(DeviceTag.tag.distinct()) == len(wanted)))
        query = query.where(Device.id.in_(carrying))
    if user is not None:
        query = query.where(auth.may_submit_where(user))
    firsts = query.select(fn.MIN(Device.hostname)).group_by(Device.dictionary)
    usable = list(Device.select().where(Device.hostname.in_(firsts)).order_by(Device.hostname))
    if usable:
        return usable
    names = ", ".join(t.name for t in tags)
    if tags:
        raise bad_request(
            f"no device of type '{device_type.name}' that you may use carries all tags: {names}", "tags"
        )
    raise forbidden(f"every device of type '{device_type.name}' is restricted to other owners")


def first_problem(user: User | None, text: str, settings: Settings) -> ApiError | None:
    """None when `user` may submit `text`, else its first problem: the one verdict of every validate."""
    try:
        check_definition(user, text, settings)
    except ApiError as exc:
        return exc
    return None


# Submitting, canceling ############################################################
