"""The durable-commit ceiling of a lab's database, with the server's own connection settings.

A submission is answered only after its transaction committed, so one client submitting serially
can never beat single-row commits/s; concurrent clients can only pass it by sharing commits. Both
rates are measured on the lab's own database file / PostgreSQL database, in a scratch table.
"""

from __future__ import annotations

import time

TABLE = "bench_commit_ceiling"


def _connect(url: str, full: bool = False):
    from peewee import SqliteDatabase
    from playhouse.db_url import connect

    from dutlab.service.db import SQLITE_PRAGMAS

    if url.startswith("sqlite:"):  # as service/db.py opens it: WAL, synchronous=NORMAL, ...
        pragmas = {**SQLITE_PRAGMAS, "synchronous": "full"} if full else SQLITE_PRAGMAS
        return SqliteDatabase(url.split(":///", 1)[1], pragmas=pragmas)
    return connect(url.replace("postgres://", "postgresql://", 1))


def commit_ceiling(url: str, duration: float, full: bool = False) -> dict[str, float | str]:
    """Single-row commits/s and rows/s inside one transaction, each for `duration` seconds.

    full=True (SQLite): synchronous=FULL instead of the server's NORMAL, an fsync per commit, the
    figure that also survives a power loss (NORMAL in WAL mode survives a process crash only).
    """
    db = _connect(url, full)
    db.connect()
    try:
        db.execute_sql(f"DROP TABLE IF EXISTS {TABLE}")
        db.execute_sql(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, v TEXT)")
        row = "x" * 200  # about a job row's width in the columns a submission writes
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration:
            with db.atomic():
                db.execute_sql(f"INSERT INTO {TABLE} (id, v) VALUES ({n}, '{row}')")
            n += 1
        single = n / (time.perf_counter() - t0)
        m, t0 = 0, time.perf_counter()
        with db.atomic():
            while time.perf_counter() - t0 < duration:
                db.execute_sql(f"INSERT INTO {TABLE} (id, v) VALUES ({n + m}, '{row}')")
                m += 1
        batched = m / (time.perf_counter() - t0)
        if url.startswith("sqlite:"):
            mode = db.execute_sql("PRAGMA journal_mode").fetchone()[0]
            sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[db.execute_sql("PRAGMA synchronous").fetchone()[0]]
            settings = f"journal_mode={mode}, synchronous={sync}"
        else:
            settings = "synchronous_commit=" + db.execute_sql("SHOW synchronous_commit").fetchone()[0]
        return {"single": single, "batched": batched, "settings": settings}
    finally:
        try:
            db.execute_sql(f"DROP TABLE IF EXISTS {TABLE}")
        finally:
            db.close()
