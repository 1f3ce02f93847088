"""The worker's local state: which jobs it started, and how to find their processes again.

One SQLite file, `<work-dir>/worker.sqlite3` (mode 0600: it holds job tokens). A job is recorded
before its dutlab-run is spawned and removed once the server has its finish, so a worker that
restarts at any moment finds every job it still owes the server something for. A process is
identified by its pid AND its start time from /proc/<pid>/stat: after a reboot or a long pause
the pid may belong to someone else.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

RUNNING = "running"
#: SIGTERM sent; `updated` is when, so the SIGKILL deadline survives a worker restart
CANCELING = "canceling"
#: dutlab-run ended; the finish may not have reached the server yet
FINISHED = "finished"
#: the server no longer knows the job: stop it, report nothing
FORGOTTEN = "forgotten"
STATES = (RUNNING, CANCELING, FINISHED, FORGOTTEN)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL,
    job_dir TEXT NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    start_ticks INTEGER,
    state TEXT NOT NULL,
    exit_status INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL
)
"""


@dataclass
class Job:
    id: int
    token: str
    job_dir: str
    pid: int | None
    pgid: int | None
    #: process start time in clock ticks since boot (field 22 of /proc/<pid>/stat)
    start_ticks: int | None
    state: str
    #: as Popen.returncode (negative: killed by that signal); None when nobody saw the exit
    exit_status: int | None
    created: float
    updated: float

    def alive(self) -> bool:
        """True while the recorded process exists and is the one we started."""
        return self.pid is not None and process_start_ticks(self.pid) == self.start_ticks


def process_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...: field 3 on),
    or None when there is no live process with that pid (none, or only a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields


def process_start_ticks(pid: int) -> int | None:
    """Start time of a live process, or None if there is none (or only a zombie) with that pid."""
    fields = process_stat(pid)
    return None if fields is None else int(fields[19])


class JobsDB:
    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        # Autocommit: every change is durable at once, a worker may die between any two lines.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # Each change returns the job as stored now, so callers never hold a stale copy.

    def add(self, job_id: int, token: str, job_dir: Path) -> Job:
        now = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO jobs (id, token, job_dir, state, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?)", (job_id, token, str(job_dir), RUNNING, now, now))
        return self._get(job_id)

    def set_process(self, job_id: int, pid: int, pgid: int, start_ticks: int | None) -> Job:
        self._db.execute("UPDATE jobs SET pid = ?, pgid = ?, start_ticks = ?, updated = ? WHERE id = ?",
                         (pid, pgid, start_ticks, time.time(), job_id))
        return self._get(job_id)

    def set_state(self, job_id: int, state: str, exit_status: int | None = None) -> Job:
        if state not in STATES:
            raise ValueError(f"job state must be one of {', '.join(STATES)}, not '{state}'")
        self._db.execute("UPDATE jobs SET state = ?, exit_status = COALESCE(?, exit_status), updated = ?"
                         " WHERE id = ?", (state, exit_status, time.time(), job_id))
        return self._get(job_id)

    def get(self, job_id: int) -> Job | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job(*row) if row else None

    def _get(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"job {job_id} is not in the worker's jobs DB")
        return job

    def all(self) -> list[Job]:
        return [Job(*row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id")]

    def remove(self, job_id: int) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


_COLUMNS = "id, token, job_dir, pid, pgid, start_ticks, state, exit_status, created, updated"
