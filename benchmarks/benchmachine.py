"""The machine a benchmark run measured on: hardware, versions, and how fast it is right now."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from labkit import REPO, pg_version


def machine_info() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "kernel": platform.release(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_mb"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        from dutlab.service import __version__
        info["dutlab_version"] = __version__
    except ImportError:
        info["dutlab_version"] = "not installed"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    info["git_commit"] = git("rev-parse", "HEAD")
    info["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
        info["qemu"] = out[0] if out else ""
    try:
        import peewee
        info["peewee"] = peewee.__version__
    except ImportError:
        pass
    try:
        import psycopg2
        info["psycopg2"] = psycopg2.__version__.split()[0]
        info["postgresql"] = pg_version()
    except ImportError:
        pass
    import sqlite3
    info["sqlite"] = sqlite3.sqlite_version
    return info


def calibrate() -> dict[str, float]:
    """How fast this machine is right now: a fixed pure-Python loop and 200 SQLite commits (ms, best of 3).

    Taken at the start and the end of a run: when they differ, the load on the machine changed
    while the benchmarks ran, and figures from different sections compare less well.
    """
    import sqlite3
    import tempfile

    def loop() -> float:
        t0 = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i % 7
        return (time.perf_counter() - t0) * 1000

    def commits() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            conn = sqlite3.connect(Path(tmp) / "c.sqlite3", isolation_level=None)
            conn.execute("PRAGMA journal_mode=wal")
            conn.execute("PRAGMA synchronous=normal")
            conn.execute("CREATE TABLE t (x INTEGER)")
            t0 = time.perf_counter()
            for i in range(200):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t VALUES (?)", (i,))
                conn.execute("COMMIT")
            elapsed = (time.perf_counter() - t0) * 1000
            conn.close()
        return elapsed

    return {"python_loop_ms": round(min(loop() for _ in range(3)), 1),
            "sqlite_200_commits_ms": round(min(commits() for _ in range(3)), 1),
            "loadavg_1min": round(os.getloadavg()[0], 2)}
