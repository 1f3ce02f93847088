"""The conditional UPDATEs that reserve a device for a job, one at a time or a pass's batch.

Plain SQL built once per driver: a pass may make a thousand assignments, and building each
statement with peewee's query builder cost more than running it. Every UPDATE is conditional
(device Idle and free, job Submitted), so a reservation that lost a race changes no row.
"""

from __future__ import annotations

import functools
from typing import Protocol

from peewee import Field

from .db import database
from .models import Device, TestJob, utcnow
from .states import DeviceState, JobState

_BATCH = 300  # assignments per statement: 3 parameters each, below any SQLite variable limit


class Placed(Protocol):
    id: int
    worker_id: int


def _col(field: Field) -> str:
    return f'"{field.column_name}"'


_DEVICE, _JOB = f'"{Device._meta.table_name}"', f'"{TestJob._meta.table_name}"'


def reserve(job_id: int, device: Placed) -> bool:
    """The two conditional UPDATEs of an assignment; the caller holds a write transaction."""
    device_sql, job_sql, undo_sql = _statements(database.param)
    params = (int(DeviceState.RESERVED), job_id, device.id, int(DeviceState.IDLE))
    if database.execute_sql(device_sql, params).rowcount != 1:
        return False
    now = TestJob.scheduled_time.db_value(utcnow())
    params = (int(JobState.SCHEDULED), device.id, device.worker_id, now, job_id, int(JobState.SUBMITTED))
    if database.execute_sql(job_sql, params).rowcount != 1:
        database.execute_sql(undo_sql, (int(DeviceState.IDLE), device.id))
        return False
    return True


def reserve_many(pairs: list[tuple[int, Placed]]) -> bool:
    """All of these (job id, device) assignments, two UPDATE ... FROM (VALUES ...) statements per
    batch; False when any of them lost a race (the caller rolls back its savepoint)."""
    p = database.param
    now = TestJob.scheduled_time.db_value(utcnow())
    pairs = sorted(pairs, key=lambda pair: pair[0])  # in job id order: neighbouring B-tree pages
    for start in range(0, len(pairs), _BATCH):
        chunk = pairs[start:start + _BATCH]
        device_sql, job_sql = _batch_statements(p, len(chunk))
        device_params = [v for job_id, device in chunk for v in (device.id, job_id)]
        if database.execute_sql(device_sql, device_params).rowcount != len(chunk):
            return False
        job_params = [now] + [v for job_id, device in chunk for v in (job_id, device.id, device.worker_id)]
        if database.execute_sql(job_sql, job_params).rowcount != len(chunk):
            return False
    return True


@functools.cache
def _statements(p: str) -> tuple[str, str, str]:
    """The statements for a driver whose placeholder is `p` ('?' for SQLite, '%s' for psycopg2)."""
    return (
        f"UPDATE {_DEVICE} SET {_col(Device.state)} = {p}, {_col(Device.current_job)} = {p} "
        f"WHERE {_col(Device.id)} = {p} AND {_col(Device.state)} = {p} AND {_col(Device.current_job)} IS NULL",
        f"UPDATE {_JOB} SET {_col(TestJob.state)} = {p}, {_col(TestJob.actual_device)} = {p}, "
        f"{_col(TestJob.worker)} = {p}, {_col(TestJob.scheduled_time)} = {p} "
        f"WHERE {_col(TestJob.id)} = {p} AND {_col(TestJob.state)} = {p}",
        f"UPDATE {_DEVICE} SET {_col(Device.state)} = {p}, {_col(Device.current_job)} = NULL "
        f"WHERE {_col(Device.id)} = {p}",
    )


@functools.cache
def _batch_statements(p: str, n: int) -> tuple[str, str]:
    """UPDATE ... FROM a VALUES list (SQLite ≥ 3.33 and PostgreSQL): its columns are column1..."""
    pairs = ", ".join([f"({p}, {p})"] * n)
    triples = ", ".join([f"({p}, {p}, {p})"] * n)
    return (
        f"UPDATE {_DEVICE} SET {_col(Device.state)} = {int(DeviceState.RESERVED)}, "
        f"{_col(Device.current_job)} = v.column2 FROM (VALUES {pairs}) AS v "
        f"WHERE {_DEVICE}.{_col(Device.id)} = v.column1 AND {_DEVICE}.{_col(Device.state)} = {int(DeviceState.IDLE)} "
        f"AND {_DEVICE}.{_col(Device.current_job)} IS NULL",
        f"UPDATE {_JOB} SET {_col(TestJob.state)} = {int(JobState.SCHEDULED)}, "
        f"{_col(TestJob.actual_device)} = v.column2, {_col(TestJob.worker)} = v.column3, "
        f"{_col(TestJob.scheduled_time)} = {p} FROM (VALUES {triples}) AS v "
        f"WHERE {_JOB}.{_col(TestJob.id)} = v.column1 AND {_JOB}.{_col(TestJob.state)} = {int(JobState.SUBMITTED)}",
    )
