"""The database: one proxy the models bind to, filled from a URL at start-up.

`sqlite:///...` and `postgresql://...` run the same code; SQLite gets WAL and a busy timeout so
the web server, the queue consumer and the CLI can share one file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from peewee import DatabaseProxy, PostgresqlDatabase, Query, Select, SqliteDatabase
from playhouse.db_url import connect as url_connect

database = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 30000,  # ms; writers queue instead of failing under concurrent submissions
    "foreign_keys": 1,
    "synchronous": "normal",
}


def open_database(url: str) -> SqliteDatabase | PostgresqlDatabase:
    """Open the database named by `url` and bind the model proxy to it."""
    if url.startswith("sqlite:"):
        db = url_connect(url, pragmas=SQLITE_PRAGMAS)
        path = getattr(db, "database", "")
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
    else:
        db = url_connect(url.replace("postgres://", "postgresql://", 1))
    database.initialize(db)
    return db


def describe() -> str:
    """Where the database is, for error messages (never its password)."""
    db = database.obj
    if isinstance(db, SqliteDatabase):
        return f"SQLite {db.database}"
    params = getattr(db, "connect_params", {}) or {}
    return f"PostgreSQL {params.get('host', 'localhost')}:{params.get('port', 5432)}/{getattr(db, 'database', '')}"


def is_sqlite() -> bool:
    return isinstance(database.obj, SqliteDatabase)


_PREBUILT: dict[tuple[str, type], str] = {}


def prebuilt(name: str, build: Callable[..., Query], params: Sequence[Any]) -> str:
    """The SQL of the fixed-shape statement `name`, built by peewee once per kind of database.

    Peewee builds a statement's SQL anew on every execute (0.1-0.3 ms, more than SQLite takes
    to run it); the worker API's statements differ only in their values. `build(*params)` makes
    the query; the first build checks that peewee's parameters are exactly `params` (same order,
    no conversion), so the cached SQL is right for the values of every later call.
    """
    key = (name, type(database.obj))
    sql = _PREBUILT.get(key)
    if sql is None:
        sql, built = build(*params).sql()
        if list(built) != list(params):
            raise ValueError(f"prebuilt {name}: peewee's parameters {built!r} are not the ones given {params!r}")
        _PREBUILT[key] = sql
    return sql


def execute_prebuilt(name: str, build: Callable[..., Query], *params: Any) -> Any:
    """Run `prebuilt(name, build, params)` with `params`: the DB-API cursor."""
    return database.execute_sql(prebuilt(name, build, params), params)


def rows_prebuilt(model: type, name: str, build: Callable[..., Query], *params: Any) -> list:
    """`model` instances of the prebuilt SELECT `name` (its columns: `model`'s, plus any extra)."""
    return list(model.raw(prebuilt(name, build, params), *params))


@contextmanager
def write_txn() -> Iterator[None]:
    """A transaction that will write.

    On SQLite it takes the write lock up front (BEGIN IMMEDIATE): a deferred transaction that
    reads, then writes, fails with "database is locked" when another writer got in between.
    """
    if is_sqlite():
        with database.obj.atomic(lock_type="IMMEDIATE"):
            yield
    else:
        with database.atomic():
            yield


def for_update(query: Select) -> Select:
    """Inside a write transaction: `query`, its rows locked until the commit (SQLite has no row
    locks and needs none: BEGIN IMMEDIATE already admits one writer at a time)."""
    return query if is_sqlite() else query.for_update()


def exclusive(key: int) -> None:
    """Inside a write transaction: wait until no other transaction holds `key`, until commit.

    SQLite's BEGIN IMMEDIATE already admits one writer at a time; PostgreSQL takes an advisory
    transaction lock, so transactions that update many rows in no fixed order cannot deadlock.
    """
    if not is_sqlite():
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))


@contextmanager
def connection() -> Iterator[None]:
    """Hold a connection for a unit of work (a request, a task) and always give it back."""
    opened = database.connect(reuse_if_open=True)
    try:
        yield
    finally:
        if opened and not database.is_closed():
            database.close()
