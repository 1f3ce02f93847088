"""Where a lab keeps its data: SQLite files in its folder, or PostgreSQL + Redis.

Tests take the backends from the environment, so the same tests run on both:
  DUTLAB_TEST_DATABASE  postgresql://user:pw@127.0.0.1/postgres  (a fresh database per test is
                        created next to the one named, and dropped afterwards); default SQLite
  DUTLAB_TEST_QUEUE     redis://127.0.0.1:6379/15 (flushed per test); default SqliteHuey
Benchmarks ask for PostgreSQL themselves (DUTLAB_BENCH_PG, else the test suite's role on the
local cluster, which `ensure_postgres` starts when it is down).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

PG_ADMIN_URL = os.environ.get("DUTLAB_BENCH_PG", "postgresql://dutlab_test:dutlab_test@127.0.0.1:5432/postgres")


def sqlite_urls(root: Path) -> tuple[str, str]:
    """(database, queue) URLs of SQLite files in root/data."""
    return f"sqlite:///{root / 'data' / 'dutlab.sqlite3'}", f"sqlite:///{root / 'data' / 'queue.sqlite3'}"


@contextmanager
def pg_database(admin_url: str = PG_ADMIN_URL, prefix: str = "dutlab_bench_") -> Iterator[str]:
    """A fresh PostgreSQL database next to the one `admin_url` names (dropped afterwards); its URL."""
    import psycopg2

    name = prefix + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rpartition("/")[0] + "/" + name
    finally:
        cur = admin.cursor()
        # our own sessions only: an autovacuum worker there runs as a superuser (DROP DATABASE stops it)
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND usename = current_user AND pid <> pg_backend_pid()", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def backend_urls(tmp: Path) -> tuple[str, str, Callable[[], None]]:
    """(database URL, queue URL, cleanup) for one test, on the backends the environment names."""
    stack = ExitStack()
    database, queue = sqlite_urls(tmp)
    db = os.environ.get("DUTLAB_TEST_DATABASE", "")
    if db.startswith("postgres"):
        database = stack.enter_context(pg_database(db, "dutlab_t_"))
    redis_url = os.environ.get("DUTLAB_TEST_QUEUE", "")
    if redis_url.startswith("redis"):
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        queue = redis_url
    return database, queue, stack.close


def pg_available(admin_url: str = PG_ADMIN_URL) -> tuple[bool, str]:
    try:
        import psycopg2
    except ImportError:
        return False, "psycopg2 is not installed (pip install dutlab[postgres])"
    try:
        psycopg2.connect(admin_url, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return False, f"cannot connect to {admin_url.rpartition('@')[2]}: {str(exc).strip()}"
    return True, ""


def pg_version(admin_url: str = PG_ADMIN_URL) -> str:
    ok, _ = pg_available(admin_url)
    if not ok:
        return "not running"
    import psycopg2

    conn = psycopg2.connect(admin_url)
    try:
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        return cur.fetchone()[0]
    finally:
        conn.close()


def ensure_postgres() -> str:
    """Start the Debian cluster `main` if it is down; return its version when this call started it.

    Also makes the test suite's role (dutlab_test, CREATEDB) when missing, as scripts/test.sh
    does. A silent no-op where PostgreSQL is not installed or DUTLAB_BENCH_PG names another one.
    """
    if os.environ.get("DUTLAB_BENCH_PG") or shutil.which("pg_lsclusters") is None:
        return ""
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout.split("\n")
    rows = [line.split() for line in out if line.strip()]
    main = next((r for r in rows if len(r) >= 4 and r[1] == "main"), None)
    if main is None:
        return ""
    started = ""
    if main[3] != "online" and subprocess.run(["pg_ctlcluster", main[0], "main", "start"]).returncode == 0:
        started = main[0]
        print(f"  (started PostgreSQL {main[0]}/main; it is stopped again at the end)", flush=True)
    has_role = subprocess.run(["su", "postgres", "-c", "psql -qtAc \"SELECT 1 FROM pg_roles WHERE "
                               "rolname='dutlab_test'\""], capture_output=True, text=True).stdout.strip()
    if has_role != "1":
        subprocess.run(["su", "postgres", "-c", "psql -qc \"CREATE ROLE dutlab_test LOGIN CREATEDB PASSWORD "
                        "'dutlab_test'\""], capture_output=True)
    return started


def stop_postgres(version: str) -> None:
    """Stop the cluster `ensure_postgres` started."""
    subprocess.run(["pg_ctlcluster", version, "main", "stop"])
