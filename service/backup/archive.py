"""The backup format and the database commands both writing and restoring use.

FORMAT changes when an archive of one dutlab cannot be read by another's restore.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

FORMAT = 1
MANIFEST = "MANIFEST.json"
DB_MEMBER = {"sqlite": "database/dutlab.sqlite3", "postgresql": "database/dutlab.pgdump"}

#: where progress lines go (print, or a test's list.append)
Say = Callable[[str], None]


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what to do."""


def database_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite:") else "postgresql"


def sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def pg_env(url: str) -> dict[str, str]:
    """libpq variables for `url`, so the password never shows in a process list."""
    parts = urlparse(url)
    env = dict(os.environ)
    values = {"PGHOST": parts.hostname, "PGPORT": parts.port, "PGUSER": parts.username,
              "PGPASSWORD": parts.password, "PGDATABASE": parts.path.lstrip("/")}
    env.update({k: unquote(str(v)) for k, v in values.items() if v})
    return env


def run_pg(command: list[str], url: str) -> None:
    try:
        proc = subprocess.run(command, env=pg_env(url), capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError(f"{command[0]} is not installed (apt-get install postgresql-client)") from None
    if proc.returncode != 0:
        raise BackupError(f"{command[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
