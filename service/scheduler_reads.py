"""The small reads of a scheduling pass, as plain SQL written once per kind of database.

A pass after one device freed is a dozen statements that each return a few rows; peewee's query
builder cost more than running them (~0.2-0.3 ms a statement). Each read here is one statement
whose text is made once per (database kind, shape) and cached, its parameters bound at execute
time, and folds in what used to be separate reads: the workers with their busy device counts;
the Idle devices with their type's health-check rule, their last health report's submit time
and their tags; the submitters with their groups.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import NamedTuple

from peewee import Field

from .db import database, is_sqlite
from .models import Device, DeviceTag, DeviceType, GroupMember, TestJob, User, Worker
from .scheduler_index import FreeDevice, Submitter
from .states import DeviceState


class WorkerRow(NamedTuple):
    id: int
    hostname: str
    state: int
    health: int
    job_limit: int | None
    last_ping: datetime | None
    busy: int  # its devices Reserved or Running


class TypeRule(NamedTuple):
    """What health_check_due reads of a device type."""

    disable_health_checks: bool
    health_denominator: str
    health_frequency: int


def _c(alias: str, field: Field) -> str:
    return f'{alias}."{field.column_name}"'


def _t(model) -> str:
    return f'"{model._meta.table_name}"'


def _csv(sqlite: bool, alias: str, field: Field) -> str:
    return f"group_concat({_c(alias, field)})" if sqlite else f"string_agg({_c(alias, field)}::text, ',')"


def _ids(csv: str | None) -> frozenset[int]:
    return frozenset(int(v) for v in csv.split(",")) if csv else frozenset()


@functools.cache
def _workers_sql() -> str:
    busy = f"{int(DeviceState.RESERVED)}, {int(DeviceState.RUNNING)}"
    # one aggregate over the busy devices (the state index), not a count per worker
    return (f"SELECT {_c('w', Worker.id)}, {_c('w', Worker.hostname)}, {_c('w', Worker.state)}, "
            f"{_c('w', Worker.health)}, {_c('w', Worker.job_limit)}, {_c('w', Worker.last_ping)}, COALESCE(b.n, 0) "
            f"FROM {_t(Worker)} w LEFT JOIN (SELECT {_c('d', Device.worker)} AS worker, COUNT(*) AS n "
            f"FROM {_t(Device)} d WHERE {_c('d', Device.state)} IN ({busy}) GROUP BY {_c('d', Device.worker)}) b "
            f"ON b.worker = {_c('w', Worker.id)}")


def workers() -> list[WorkerRow]:
    """Every worker, with how many of its devices are Reserved or Running: one statement."""
    to_datetime = Worker.last_ping.python_value
    return [WorkerRow(wid, hostname, state, health, limit, to_datetime(ping), busy)
            for wid, hostname, state, health, limit, ping, busy in database.execute_sql(_workers_sql()).fetchall()]


@functools.cache
def _idle_sql(sqlite: bool, p: str, n_healths: int) -> str:
    d, t = "d", "t"
    cols = ", ".join(_c(d, f) for f in (Device.id, Device.device_type, Device.worker, Device.health,
                                         Device.last_health_report_job, Device.owner_user, Device.owner_group))
    rule = ", ".join(_c(t, f) for f in (DeviceType.disable_health_checks, DeviceType.health_denominator,
                                         DeviceType.health_frequency))
    last = (f"(SELECT {_c('r', TestJob.submit_time)} FROM {_t(TestJob)} r "
            f"WHERE {_c('r', TestJob.id)} = {_c(d, Device.last_health_report_job)})")
    tags = (f"(SELECT {_csv(sqlite, 'g', DeviceTag.tag)} FROM {_t(DeviceTag)} g "
            f"WHERE {_c('g', DeviceTag.device)} = {_c(d, Device.id)})")
    healths = ", ".join([p] * n_healths)
    return (f"SELECT {cols}, {rule}, {last}, {tags} FROM {_t(Device)} {d} "
            f"INNER JOIN {_t(DeviceType)} {t} ON {_c(d, Device.device_type)} = {_c(t, DeviceType.id)} "
            f"WHERE {_c(d, Device.state)} = {int(DeviceState.IDLE)} AND {_c(d, Device.current_job)} IS NULL "
            f"AND {_c(d, Device.health)} IN ({healths}) AND {_c(t, DeviceType.display)} = {p} "
            f"ORDER BY {_c(t, DeviceType.name)}, {_c(d, Device.hostname)}")


def idle_devices(capacity: dict[int, int], healths: tuple[int, ...]) -> tuple[list[FreeDevice], dict[int, TypeRule]]:
    """Idle devices of shown types on usable workers, by type name and hostname (each with its
    tags and its last health report's submit time), and the health-check rule of their types."""
    if not capacity:
        return [], {}
    sql = _idle_sql(is_sqlite(), database.param, len(healths))
    rows = database.execute_sql(sql, [*map(int, healths), True]).fetchall()
    to_datetime = TestJob.submit_time.python_value
    devices: list[FreeDevice] = []
    rules: dict[int, TypeRule] = {}
    for row in rows:
        if row[2] not in capacity:
            continue
        devices.append(FreeDevice(*row[:7], to_datetime(row[10]), _ids(row[11])))
        if row[1] not in rules:
            rules[row[1]] = TypeRule(bool(row[7]), row[8], row[9])
    return devices, rules


@functools.cache
def _users_sql(sqlite: bool, p: str, n: int) -> str:
    groups = (f"(SELECT {_csv(sqlite, 'm', GroupMember.group)} FROM {_t(GroupMember)} m "
              f"WHERE {_c('m', GroupMember.user)} = {_c('u', User.id)})")
    return (f"SELECT {_c('u', User.id)}, {_c('u', User.is_active)}, {_c('u', User.is_superuser)}, {groups} "
            f"FROM {_t(User)} u WHERE {_c('u', User.id)} IN ({', '.join([p] * n)})")


def load_submitters(users: dict[int, Submitter], memberships: dict[int, set[int]], ids: set[int]) -> None:
    """Add the users `ids` names that `users` lacks, and their groups to `memberships`."""
    missing = sorted(ids - users.keys())
    for start in range(0, len(missing), 256):
        chunk = missing[start:start + 256]
        size = 1 << (len(chunk) - 1).bit_length()  # IN lists padded to a power of two: few statements to cache
        params = chunk + [chunk[-1]] * (size - len(chunk))
        for user_id, active, superuser, groups in database.execute_sql(
                _users_sql(is_sqlite(), database.param, size), params).fetchall():
            users[user_id] = Submitter(user_id, bool(active), bool(superuser))
            memberships[user_id] = set(_ids(groups))
