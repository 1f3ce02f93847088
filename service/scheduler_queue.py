"""The queue as one pass reads it: Submitted jobs in scheduling order, a page at a time.

One statement per page reads the columns the rules need and each job's tags (a correlated
subquery on job_tag, so the page stays in index order: the partial indexes of m0007). The first page
is sized from the number of free devices, each next one is twice as large and starts after the
last row of the one before (keyset), and the pass stops reading once no free device can take a
job: a pass reads each queued row at most once, and only as deep as its free devices need.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from .db import database, is_sqlite
from .models import GroupMember, JobTag, TestJob, User
from .scheduler_groups import Queued
from .scheduler_index import FreeDevice
from .states import JobState

_MAX_TYPES = 500  # below any SQLite variable limit; more types are filtered here instead


def _fit_clause(p: str, n_tags: int, restricted: bool) -> str:
    """Only the rows a single job could take the one free device with (first_fit's rules: pinned
    to it or to none, its tags a subset of the device's, a submitter who may use it); every
    MultiNode sub-job stays, groups are planned as a whole. Parameters: the device id, its tags,
    True, and for a device with owners True, the owner user, the owner group."""
    j, u, m = "j", "u", "m"
    col = {name: f'{j}."{field.column_name}"' for name, field in TestJob._meta.fields.items()}
    jt, gm = JobTag._meta, GroupMember._meta
    extra = f' AND x."{jt.fields["tag"].column_name}" NOT IN ({", ".join([p] * n_tags)})' if n_tags else ""
    tags = (f'NOT EXISTS (SELECT 1 FROM "{jt.table_name}" x WHERE x."{jt.fields["job"].column_name}" = '
            f'{col["id"]}{extra})')
    uid = f'{u}."{User.id.column_name}"'
    owners = (f' AND ({u}."{User.is_superuser.column_name}" = {p} OR {uid} = {p} OR {uid} IN (SELECT '
              f'{m}."{gm.fields["user"].column_name}" FROM "{gm.table_name}" {m} WHERE '
              f'{m}."{gm.fields["group"].column_name}" = {p}))') if restricted else ""
    # who may use the device: one uncorrelated subquery (read once, hashed), not a lookup per row
    user = (f'{col["submitter"]} IN (SELECT {uid} FROM "{User._meta.table_name}" {u} '
            f'WHERE {u}."{User.is_active.column_name}" = {p}{owners})')
    pinned = f"({col['requested_device']} IS NULL OR {col['requested_device']} = {p})"
    return f" AND (COALESCE({col['target_group']}, '') <> '' OR ({pinned} AND {tags} AND {user}))"


def _fit_params(device: FreeDevice) -> list:
    restricted = device.owner_user_id is not None or device.owner_group_id is not None
    return [device.id, *sorted(device.tags), True] + (
        [True, device.owner_user_id, device.owner_group_id] if restricted else [])


@functools.cache
def _statement(sqlite: bool, p: str, n_types: int, limited: bool, after: bool,
               fit: tuple[int, bool] | None = None) -> str:
    j, jt = TestJob._meta, JobTag._meta
    col = {name: f'j."{field.column_name}"' for name, field in j.fields.items()}
    tag_job, tag = f't."{jt.fields["job"].column_name}"', f't."{jt.fields["tag"].column_name}"'
    agg = f"group_concat({tag})" if sqlite else f"string_agg({tag}::text, ',')"
    types = f" AND {col['requested_device_type']} IN ({', '.join([p] * n_types)})" if n_types else ""
    # the next page starts after the last row read (submit_time is NOT NULL: no NULL ordering)
    # SQLite's planner prefers the state index and sorts the whole queue: name the index (one
    # device type: its own range of the per-type index; several: the queue order, filtered)
    hint = "" if not sqlite else " INDEXED BY test_job_queue_type" if n_types == 1 else " INDEXED BY test_job_queue"
    # (the leading `priority <=` is implied by the rest; it lets the index seek to the page's start)
    keyset = (f" AND {col['priority']} <= {p} AND ({col['priority']} < {p} OR ({col['priority']} = {p} AND "
              f"({col['submit_time']}, {col['id']}) > ({p}, {p})))") if after else ""
    return (
        f"SELECT {col['id']}, {col['requested_device_type']}, {col['submitter']}, {col['requested_device']}, "
        f"{col['target_group']}, (SELECT {agg} FROM \"{jt.table_name}\" t WHERE {tag_job} = {col['id']}), "
        f"{col['priority']}, {col['submit_time']} "
        f"FROM \"{j.table_name}\" j{hint} "
        f"WHERE {col['state']} = {int(JobState.SUBMITTED)} "
        f"AND {col['actual_device']} IS NULL{types}{_fit_clause(p, *fit) if fit else ''}{keyset} "
        f"ORDER BY {col['priority']} DESC, {col['submit_time']}, {col['id']}" + (f" LIMIT {p}" if limited else "")
    )


def pages(device_types: set[int], first: int | None = None, only: FreeDevice | None = None) -> Iterator[list[Queued]]:
    """Submitted jobs of these device types in scheduling order (priority, submit time, id):
    pages of `first`, then twice as many each, each after the last row of the one before;
    all in one page when `first` is None. `only`: the pass's one free device; single jobs that
    cannot take it are left out in SQL (they would get nothing), so the pass reads the few rows
    it needs however deep in the queue the first fitting job is."""
    types = sorted(device_types)
    if not types:
        return
    fit = (len(only.tags), only.owner_user_id is not None or only.owner_group_id is not None) if only else None
    filtered = len(types) <= _MAX_TYPES
    wanted = None if filtered else set(types)
    tag_sets: dict[str | None, frozenset[int]] = {None: frozenset()}
    limit, last = first, None
    while True:
        params: list = list(types) if filtered else []
        if only is not None:
            params += _fit_params(only)
        if last is not None:
            params += [last[0], last[0], last[0], last[1], last[2]]
        if limit is not None:
            params.append(limit)
        sql = _statement(is_sqlite(), database.param, len(types) if filtered else 0, limit is not None,
                         last is not None, fit)
        rows = database.execute_sql(sql, params).fetchall()
        page = []
        for job_id, dtype, submitter, requested, group, tags, _priority, _submitted in rows:
            if wanted is not None and dtype not in wanted:
                continue
            tag_set = tag_sets.get(tags)
            if tag_set is None:
                tag_set = tag_sets[tags] = frozenset(int(t) for t in tags.split(","))
            page.append(Queued(job_id, dtype, submitter, requested, tag_set, group or ""))
        yield page
        if limit is None or len(rows) < limit:
            return  # that was the end of the queue
        last = (rows[-1][6], rows[-1][7], rows[-1][0])
        limit *= 2


def with_queue_timeout() -> list[tuple[int, object, int]]:
    """(id, submit time, queue timeout) of the Submitted jobs that have a queue timeout, through
    their own partial index (m0007): a queue without timeouts costs one index probe, not a scan."""
    j = TestJob._meta
    col = {name: f'"{field.column_name}"' for name, field in j.fields.items()}
    hint = " INDEXED BY test_job_queue_timeout" if is_sqlite() else ""
    sql = (f"SELECT {col['id']}, {col['submit_time']}, {col['queue_timeout']} FROM \"{j.table_name}\"{hint} "
           f"WHERE {col['state']} = {int(JobState.SUBMITTED)} AND {col['queue_timeout']} IS NOT NULL")
    to_datetime = TestJob.submit_time.python_value
    return [(job_id, to_datetime(submitted), timeout)
            for job_id, submitted, timeout in database.execute_sql(sql).fetchall()]
