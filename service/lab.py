"""The lab's objects: checks shared by every front end, workers, tags and maintenance.

The admin CLI (`manage.py`), the REST API (`api/`), XML-RPC and the Ansible modules all call
the functions here and in `lab_users.py` (users, groups, tokens) and `lab_devices.py` (device
types, devices, dictionaries, device tags). Every function validates its input and raises
`ApiError(4xx, sentence, path)`; changes are given as dicts so that "only the given fields
change" (PATCH) and "unknown field" errors work the same everywhere.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from peewee import IntegrityError, Model

from . import auth, events, jobs
from .db import database, write_txn
from .devices import set_health
from .errors import ApiError, bad_request, conflict
from .models import Device, Tag, TestJob, User, Worker
from .states import DeviceHealth, JobState, Labelled, WorkerHealth, WorkerState

#: hostnames, worker names, device-type and tag names: no '/', no spaces, no leading '.'
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: who the health history names for changes the CLI makes
CLI_ACTOR = "dutlab-admin"

# Checks ###########################################################################


def check_fields(data: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    """Refuse unknown fields (naming the first) and missing required ones."""
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            raise bad_request(f"unknown field '{key}'; known fields: {', '.join(allowed)}", str(key))
    for key in required:
        if data.get(key) in (None, ""):
            raise bad_request(f"'{key}' is required", key)


def name(value: Any, path: str, what: str, max_length: int = 100) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(f"{what} must be a non-empty string", path)
    if len(value) > max_length or not NAME_RE.match(value):
        raise bad_request(f"{what} '{value}' is not valid: use at most {max_length} letters, digits, "
                          "'.', '_', '+' or '-', starting with a letter or digit", path)
    return value


def text(value: Any, path: str, max_length: int | None = None) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"'{path}' must be a string, not {type(value).__name__}", path)
    if max_length is not None and len(value) > max_length:
        raise bad_request(f"'{path}' is longer than {max_length} characters", path)
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"'{path}' must be true or false, not {value!r}", path)
    return value


def integer(value: Any, path: str, minimum: int = 0) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"'{path}' must be an integer, not {value!r}", path)
    if value < minimum:
        raise bad_request(f"'{path}' must be >= {minimum}, not {value}", path)
    return value


def string_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad_request(f"'{path}' must be a list of names", path)
    return list(dict.fromkeys(value))


def label(enum: type[Labelled], value: Any, path: str) -> Labelled:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(f"'{path}' must be one of {', '.join(enum.labels())}", path)
    try:
        return enum.parse(value)
    except ValueError as exc:
        raise bad_request(str(exc), path) from None


def lookup(model: type[Model], field: str, value: Any, what: str, path: str | None = None) -> Any:
    """The row whose `field` is `value`: a 404, or a 400 at `path` when it is named inside a body."""
    row = model.get_or_none(getattr(model, field) == value) if isinstance(value, str) else None
    if row is None:
        if path is None:
            raise ApiError(404, f"{what} '{value}' does not exist")
        raise bad_request(f"{what} '{value}' does not exist", path)
    return row


def insert(create: Callable[[], Model], what: str, path: str) -> Model:
    """Run `create` in a savepoint; a unique-constraint race becomes a 409, not a 500."""
    try:
        with database.atomic():
            return create()
    except IntegrityError:
        raise conflict(f"{what} already exists", path) from None


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def page(rows: list, limit: Any = None, offset: Any = None, serialize: Callable = lambda r: r) -> dict:
    """One page of a list as `{"count": N, "results": [...]}` (LAVA's LimitOffset, 50 by default)."""
    limit = min(integer(limit, "limit", 1), 1000) if limit not in (None, "") else 50
    offset = integer(offset, "offset") if offset not in (None, "") else 0
    return {"count": len(rows), "results": [serialize(r) for r in rows[offset:offset + limit]]}


# Workers ##########################################################################

WORKER_FIELDS = ("hostname", "description", "health", "job_limit")


def get_worker(hostname: str, path: str | None = None) -> Worker:
    return lookup(Worker, "hostname", hostname, "worker", path)


def worker_json(worker: Worker, devices: bool = True) -> dict:
    out = {
        "hostname": worker.hostname,
        "description": worker.description,
        "state": WorkerState(worker.state).label,
        "health": WorkerHealth(worker.health).label,
        "job_limit": worker.job_limit,
        "version": worker.version,
        "last_ping": iso(worker.last_ping),
    }
    if devices:
        out["devices"] = [d.hostname for d in worker.devices.order_by(Device.hostname)]
    return out


def list_workers(include_retired: bool = True, health: Any = None, state: Any = None) -> list[Worker]:
    query = Worker.select().order_by(Worker.hostname)
    if not include_retired:
        query = query.where(Worker.health != WorkerHealth.RETIRED)
    if health not in (None, ""):
        query = query.where(Worker.health == label(WorkerHealth, health, "health"))
    if state not in (None, ""):
        query = query.where(Worker.state == label(WorkerState, state, "state"))
    return list(query)


def create_worker(data: Mapping[str, Any]) -> tuple[Worker, str]:
    """Add a worker; return it and its token (the only time the token is shown)."""
    check_fields(data, WORKER_FIELDS, required=("hostname",))
    hostname = name(data["hostname"], "hostname", "worker hostname", 200)
    if Worker.get_or_none(Worker.hostname == hostname):
        raise conflict(f"worker '{hostname}' already exists", "hostname")
    health = label(WorkerHealth, data.get("health") or "Active", "health")
    secret = auth.new_secret()
    worker = insert(lambda: Worker.create(
        hostname=hostname,
        description=text(data.get("description"), "description"),
        health=health,
        job_limit=integer(data.get("job_limit") or 0, "job_limit"),
        token_hash=auth.hash_secret(secret),
    ), f"worker '{hostname}'", "hostname")
    return worker, secret


def update_worker(hostname: str, changes: Mapping[str, Any], actor: str = CLI_ACTOR) -> Worker:
    """Change the given fields; a `health` change (with an optional `reason`) applies LAVA's
    rules to the worker's devices."""
    worker = get_worker(hostname)
    check_fields(changes, WORKER_FIELDS + ("reason",))
    if "hostname" in changes and changes["hostname"] != hostname:
        raise bad_request("a worker cannot be renamed; add a new one and move its devices", "hostname")
    fields: dict[str, Any] = {}
    if "description" in changes:
        fields["description"] = text(changes["description"], "description")
    if "job_limit" in changes:
        fields["job_limit"] = integer(changes["job_limit"], "job_limit")
    new_health = None
    if changes.get("health") is not None:
        new_health = label(WorkerHealth, changes["health"], "health")
    reason = text(changes.get("reason"), "reason")
    with write_txn():
        if fields:
            Worker.update(**fields).where(Worker.id == worker.id).execute()
        if new_health is not None and new_health != worker.health:
            _worker_health(worker, new_health, actor, reason)
    events.wake_worker(worker.id)
    events.schedule_soon(f"worker {hostname} changed")
    return Worker.get_by_id(worker.id)


def _worker_health(worker: Worker, health: WorkerHealth, actor: str, reason: str) -> None:
    """LAVA's rules: → Active makes Good devices Unknown (a health check proves them again),
    unless the worker leaves retirement; → Retired retires every device not Bad or Retired;
    → Maintenance changes no device (the scheduler skips workers that are not Active)."""
    old = WorkerHealth(worker.health)
    Worker.update(health=health).where(Worker.id == worker.id).execute()
    why = f"worker {worker.hostname} {old.label} → {health.label}" + (f" ({reason})" if reason else "")
    if health == WorkerHealth.ACTIVE and old != WorkerHealth.RETIRED:
        for device in Device.select().where(Device.worker == worker, Device.health == DeviceHealth.GOOD):
            set_health(device, DeviceHealth.UNKNOWN, why, actor)
    elif health == WorkerHealth.RETIRED:
        keep = (DeviceHealth.BAD, DeviceHealth.RETIRED)
        for device in Device.select().where(Device.worker == worker, Device.health.not_in(keep)):
            set_health(device, DeviceHealth.RETIRED, why, actor)
    worker.health = health


def delete_worker(hostname: str) -> None:
    worker = get_worker(hostname)
    names = [d.hostname for d in worker.devices.order_by(Device.hostname)]
    if names:
        raise conflict(f"worker '{hostname}' still has devices ({', '.join(names)}); "
                       "move them to another worker or delete them first")
    worker.delete_instance()


def regenerate_worker_token(hostname: str) -> str:
    """A new token for the worker; the old one stops working at once."""
    worker = get_worker(hostname)
    secret = auth.new_secret()
    Worker.update(token_hash=auth.hash_secret(secret)).where(Worker.id == worker.id).execute()
    return secret


# Tags #############################################################################


def tag_json(tag: Tag, devices: bool = False) -> dict:
    out = {"name": tag.name, "description": tag.description}
    if devices:
        from .models import DeviceTag

        rows = Device.select(Device.hostname).join(DeviceTag).where(DeviceTag.tag == tag).order_by(Device.hostname)
        out["devices"] = [d.hostname for d in rows]
    return out


def get_tag(tag_name: str, path: str | None = None) -> Tag:
    return lookup(Tag, "name", tag_name, "tag", path)


def list_tags() -> list[Tag]:
    return list(Tag.select().order_by(Tag.name))


def create_tag(data: Mapping[str, Any]) -> Tag:
    check_fields(data, ("name", "description"), required=("name",))
    tag_name = name(data["name"], "name", "tag name")
    if Tag.get_or_none(Tag.name == tag_name):
        raise conflict(f"tag '{tag_name}' already exists", "name")
    description = text(data.get("description"), "description")
    return insert(lambda: Tag.create(name=tag_name, description=description), f"tag '{tag_name}'", "name")


def ensure_tags(names: list[str], path: str) -> list[Tag]:
    """The named tags, created when missing (as LAVA's `devices add --tags` does)."""
    tags = []
    for i, tag_name in enumerate(names):
        name(tag_name, f"{path}[{i}]", "tag name")
        tags.append(Tag.get_or_none(Tag.name == tag_name) or
                    insert(lambda n=tag_name: Tag.create(name=n), f"tag '{tag_name}'", f"{path}[{i}]"))
    return tags


def update_tag(tag_name: str, changes: Mapping[str, Any]) -> Tag:
    tag = get_tag(tag_name)
    check_fields(changes, ("name", "description"))
    if "name" in changes and changes["name"] != tag_name:
        raise bad_request("a tag cannot be renamed", "name")
    if "description" in changes:
        Tag.update(description=text(changes["description"], "description")).where(Tag.id == tag.id).execute()
    return Tag.get_by_id(tag.id)


def delete_tag(tag_name: str) -> None:
    get_tag(tag_name).delete_instance()


# Maintenance ######################################################################


def maintenance(force: bool = False, dry_run: bool = False, actor: str = "dutlab-health",
                reason: str = "lab maintenance") -> list[str]:
    """Put every device that is not Retired into Maintenance; `force` also cancels their jobs.

    Returns one line per change (what would change, with `dry_run`).
    """
    done = []
    devices = Device.select().where(Device.health.not_in([DeviceHealth.RETIRED, DeviceHealth.MAINTENANCE]))
    for device in devices.order_by(Device.hostname):
        done.append(f"{device.hostname}: {DeviceHealth(device.health).label} → Maintenance")
        if not dry_run:
            with write_txn():
                set_health(device, DeviceHealth.MAINTENANCE, reason, actor)
    if force:
        done += _cancel_running(dry_run, actor)
    if done and not dry_run:
        events.schedule_soon("lab maintenance")
    return done


def _cancel_running(dry_run: bool, actor: str) -> list[str]:
    # the CLI acts as the lab's administrator: a superuser that need not exist as a row
    admin = User(username=actor, is_superuser=True)
    active = (JobState.SCHEDULING, JobState.SCHEDULED, JobState.RUNNING)
    query = TestJob.select().where(TestJob.state.in_(active), TestJob.actual_device.is_null(False))
    done = []
    for job in query.order_by(TestJob.id):
        done.append(f"job {job.id}: {JobState(job.state).label} → Canceling")
        if not dry_run:
            jobs.cancel(admin, job)
    return done
