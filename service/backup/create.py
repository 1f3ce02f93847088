"""Writing a backup archive: the database dump first, then the files, the manifest last.

The manifest is written last because the checksums are taken from the very bytes archived while
live logs may still grow; the files come after the dump so that job folders are at least as new
as the rows that name them (logs only grow), never older.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import socket
import sqlite3
import tarfile
import tempfile
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from .. import __version__, migrations
from ..config import Settings
from ..models import Device, TestJob, WorkerFile
from .archive import DB_MEMBER, FORMAT, MANIFEST, BackupError, Say, database_kind, run_pg, sqlite_path

#: per-job lock files and half-written files are recreated or discarded by the log store
SKIP_SUFFIXES = (".lock", ".tmp", ".partial")


def tree_members(root: Path, prefix: str) -> list[tuple[str, Path]]:
    """(archive name, file) for every regular file under `root` (symlinks followed)."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(SKIP_SUFFIXES):
            found.append((f"{prefix}/{path.relative_to(root).as_posix()}", path))
    return found


def config_members(settings: Settings, config_file: str | None) -> list[tuple[str, Path]]:
    """The settings file and the admin files it names (not the shipped ones: they come with the package)."""
    found = []
    if config_file and Path(config_file).is_file():
        found.append(("config/server.yaml", Path(config_file)))
    if Path(settings.secret_key_file).is_file():
        found.append(("config/secret_key", Path(settings.secret_key_file)))
    for i, folder in enumerate(settings.template_dirs):
        found += tree_members(Path(folder), f"config/template_dirs/{i}")
    found += tree_members(Path(settings.health_checks_dir), "config/health_checks")
    return found


def dump_database(url: str, workdir: Path) -> Path:
    """A consistent dump of the live database, in `workdir`."""
    if database_kind(url) == "sqlite":
        return _dump_sqlite(sqlite_path(url), workdir / "dutlab.sqlite3")
    dest = workdir / "dutlab.pgdump"
    run_pg(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={dest}"], url)
    return dest


def _dump_sqlite(source: Path, dest: Path) -> Path:
    if not source.is_file():
        raise BackupError(f"the database file {source} does not exist")
    # the online backup API copies a snapshot while the server keeps writing (WAL readers never block)
    with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    return dest


class _HashingReader:
    """Reads at most `size` bytes of a file (a log may grow meanwhile) and hashes what it gave."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh, self.left, self.sha = fh, size, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        self.sha.update(data)
        return data


def add_file(tar: tarfile.TarFile, name: str, path: Path, members: dict[str, dict]) -> None:
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), st.st_mode & 0o777
        reader = _HashingReader(fh, st.st_size)
        tar.addfile(info, reader)  # type: ignore[arg-type]  # tarfile only calls read()
    members[name] = {"sha256": reader.sha.hexdigest(), "size": info.size}


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(dt.datetime.now().timestamp()), 0o600
    tar.addfile(info, io.BytesIO(data))


def default_output(settings: Settings) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.data_dir) / "backups" / f"dutlab-backup-{stamp}.tar.gz"


def base_manifest(settings: Settings, config_file: str | None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "dutlab_version": __version__,
        "schema_version": migrations.current_version(),
        "database": database_kind(settings.database),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "source": {"settings_file": config_file or "", "data_dir": settings.data_dir,
                   "output_dir": settings.output_dir, "template_dirs": settings.template_dirs,
                   "health_checks_dir": settings.health_checks_dir, "secret_key_file": settings.secret_key_file},
        "counts": {"jobs": TestJob.select().count(), "devices": Device.select().count(),
                   "worker_files": WorkerFile.select().count()},
    }


def create_backup(settings: Settings, config_file: str | None, output: str | None = None,
                  say: Say = print) -> Path:
    """Write the archive (0600: it holds password hashes and the secret key); return its path."""
    manifest = base_manifest(settings, config_file)
    out = Path(output) if output else default_output(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    members: dict[str, dict] = {}
    # the dump goes next to the archive: same disk, and /tmp may be small
    with tempfile.TemporaryDirectory(prefix=".dutlab-dump-", dir=out.parent) as work:
        dump = dump_database(settings.database, Path(work))
        say(f"database: {manifest['database']} dump of schema {manifest['schema_version']} "
            f"({dump.stat().st_size} bytes)")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            add_file(tar, DB_MEMBER[manifest["database"]], dump, members)
            files = config_members(settings, config_file) + tree_members(Path(settings.output_dir), "jobs")
            for name, path in files:
                try:
                    add_file(tar, name, path, members)
                except FileNotFoundError:
                    pass  # deleted since the listing (e.g. a job removed): nothing to keep
            manifest["members"] = members
            add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    os.replace(partial, out)
    jobs = {name.split("/")[1] for name in members if name.startswith("jobs/")}
    say(f"files: {len(jobs)} job folders, {sum(n.startswith('config/') for n in members)} config files")
    return out
