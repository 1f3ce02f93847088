"""Backups and restores of a lab server (docs/backup.md).

A backup is one tar.gz: the database dump, the settings file, the admin config the settings point
at (template and health-check folders, the secret key) and every job output folder, plus
MANIFEST.json (versions, database kind, time, a sha256 per member). The manifest is written last
because the checksums are taken from the very bytes archived while live logs may still grow.

The database is dumped first and the files copied after it: job folders are then at least as new
as the rows that name them (logs only grow), never older.

A restore goes into a fresh install of the same dutlab version: it checks the manifest, refuses a
target holding data (unless forced), verifies every checksum in a staging folder before touching
anything, loads the dump, puts the files in place, and sets every device that is not Retired to
Maintenance so nothing runs on hardware whose state nobody has checked since the backup.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlparse

from .config import Settings

FORMAT = 1
MANIFEST = "MANIFEST.json"
DB_MEMBER = {"sqlite": "database/dutlab.sqlite3", "postgresql": "database/dutlab.pgdump"}
RESTORE_ACTOR = "dutlab-restore"
#: per-job lock files and half-written files are recreated or discarded by the log store
SKIP_SUFFIXES = (".lock", ".tmp", ".partial")
CHUNK = 1024 * 1024

Say = Callable[[str], None]


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what to do."""


# -- what goes in -----------------------------------------------------------------------------------

def database_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite:") else "postgresql"


def sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


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
    _run_pg(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={dest}"], url)
    return dest


def _dump_sqlite(source: Path, dest: Path) -> Path:
    if not source.is_file():
        raise BackupError(f"the database file {source} does not exist")
    # the online backup API copies a snapshot while the server keeps writing (WAL readers never block)
    with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    return dest


def _pg_env(url: str) -> dict[str, str]:
    """libpq variables for `url`, so the password never shows in a process list."""
    parts = urlparse(url)
    env = dict(os.environ)
    values = {"PGHOST": parts.hostname, "PGPORT": parts.port, "PGUSER": parts.username,
              "PGPASSWORD": parts.password, "PGDATABASE": parts.path.lstrip("/")}
    env.update({k: unquote(str(v)) for k, v in values.items() if v})
    return env


def _run_pg(command: list[str], url: str) -> None:
    try:
        proc = subprocess.run(command, env=_pg_env(url), capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError(f"{command[0]} is not installed (apt-get install postgresql-client)") from None
    if proc.returncode != 0:
        raise BackupError(f"{command[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


# -- writing the archive -----------------------------------------------------------------------------

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
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(dt.datetime.now().timestamp()), 0o600
    tar.addfile(info, io.BytesIO(data))


def default_output(settings: Settings) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.data_dir) / "backups" / f"dutlab-backup-{stamp}.tar.gz"


def base_manifest(settings: Settings, config_file: str | None) -> dict[str, Any]:
    from . import __version__, migrations
    from .models import Device, TestJob

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
        "counts": {"jobs": TestJob.select().count(), "devices": Device.select().count()},
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


# -- reading and checking an archive -----------------------------------------------------------------

def read_manifest(archive: str | Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            try:
                member = tar.getmember(MANIFEST)
            except KeyError:
                raise BackupError(f"{archive}: no {MANIFEST}: not a dutlab backup, or cut short") from None
            manifest = json.load(tar.extractfile(member))  # type: ignore[arg-type]
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise BackupError(f"{archive}: cannot read the archive: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: unknown backup format {manifest.get('format')!r} (this dutlab reads {FORMAT})")
    return manifest


def check_compatible(manifest: dict[str, Any], target_url: str) -> None:
    """Refuse what this install cannot load as is: another version, schema or database kind."""
    from . import __version__, migrations

    made_by, schema = manifest.get("dutlab_version"), manifest.get("schema_version")
    if made_by != __version__:
        raise BackupError(f"this backup was made by dutlab {made_by} (database schema {schema}); this is dutlab "
                          f"{__version__}. Install dutlab {made_by} (pip install 'dutlab=={made_by}'), restore, "
                          f"then upgrade and run 'dutlab-server migrate'")
    if schema != migrations.latest_version():
        raise BackupError(f"this backup holds database schema {schema}, this dutlab {__version__} expects schema "
                          f"{migrations.latest_version()}. Install the dutlab release that made the backup "
                          f"(dutlab {made_by} with schema {schema}) and restore with it")
    kind = database_kind(target_url)
    if manifest.get("database") != kind:
        raise BackupError(f"this backup holds a {manifest.get('database')} database and the settings name a {kind} "
                          f"one; set 'database:' to an empty {manifest.get('database')} database")


def tables_with_rows() -> list[str]:
    """Tables of the open database holding data (the schema_version bookkeeping does not count)."""
    from .db import database

    found = []
    for table in database.get_tables():
        if table == "schema_version" or table.startswith("sqlite_"):
            continue
        if database.execute_sql(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():
            found.append(table)
    return found


def target_problems(settings: Settings) -> list[str]:
    """Why restoring here would overwrite something (empty: a fresh install)."""
    problems = []
    tables = tables_with_rows()
    if tables:
        problems.append(f"the database holds data (tables {', '.join(tables)})")
    output = Path(settings.output_dir)
    if output.is_dir() and any(output.iterdir()):
        problems.append(f"the job output folder {output} is not empty")
    host, port = settings.host_port
    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) == 0:
            problems.append(f"something listens on {settings.listen}: stop dutlab-server serve and consumer first")
    return problems


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"{name}: unsafe path in the archive")
    return path


def extract_verified(archive: str | Path, manifest: dict[str, Any], staging: Path) -> None:
    """Unpack every member into `staging`, checking each against the manifest's sha256."""
    expected: dict[str, dict] = manifest.get("members") or {}
    seen = set()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name == MANIFEST:
                continue
            if member.name not in expected or not member.isfile():
                raise BackupError(f"{member.name}: in the archive but not in its manifest: the archive was altered")
            dest = staging.joinpath(*_safe_name(member.name).parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            with tar.extractfile(member) as src, open(dest, "wb") as out:  # type: ignore[union-attr]
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    sha.update(chunk)
                    out.write(chunk)
            if sha.hexdigest() != expected[member.name]["sha256"]:
                raise BackupError(f"{member.name}: checksum mismatch: the archive is damaged")
            seen.add(member.name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"the archive lacks {len(missing)} files its manifest lists, e.g. {missing[0]}")


# -- loading ------------------------------------------------------------------------------------------

def load_database(dump: Path, url: str) -> None:
    """Replace the target database's content with the dump (the caller checked it may)."""
    from .db import database

    if database_kind(url) == "sqlite":
        database.close()
        target = sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm", "-journal"):
            # a stale write-ahead log beside the new file would be replayed into it
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        tmp = target.with_name(target.name + ".restoring")
        shutil.copyfile(dump, tmp)
        os.replace(tmp, target)
        return
    _drop_tables()
    database.close()
    _run_pg(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
             f"--dbname={_pg_env(url)['PGDATABASE']}", str(dump)], url)


def _drop_tables() -> None:
    # an empty install may be migrated already; the dump brings its own schema
    from .db import database

    with database.atomic():
        for table in database.get_tables():
            database.execute_sql(f'DROP TABLE IF EXISTS "{table}" CASCADE')


def _move_tree(src: Path, dest: Path) -> int:
    """Move every file of `src` under `dest`, replacing same-named files; return how many."""
    count = 0
    for path in sorted(src.rglob("*")):
        if path.is_file():
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
            count += 1
    return count


def _replace_job_folders(src: Path, dest: Path) -> int:
    """Move each archived job folder into `dest`, replacing a folder of the same job (after --force)."""
    if not src.is_dir():
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for folder in sorted(src.iterdir()):
        target = dest / folder.name
        if target.exists():
            shutil.rmtree(target)  # a mix of two installs' files for one job id would be worse than either
        shutil.move(folder, target)
        count += 1
    return count


def restore_files(staging: Path, settings: Settings, config_file: str | None) -> list[str]:
    """Put the archived files where this install's settings say; return notes for the admin."""
    notes = []
    config = staging / "config"
    jobs = _replace_job_folders(staging / "jobs", Path(settings.output_dir))
    notes.append(f"{jobs} job output folders into {settings.output_dir}")
    if (config / "secret_key").is_file():
        key = Path(settings.secret_key_file)
        key.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(config / "secret_key", key)
        key.chmod(0o600)
        notes.append(f"the secret key into {key}")
    for folder in sorted((config / "template_dirs").glob("*"), key=lambda p: int(p.name)):
        index = int(folder.name)
        # a target with fewer template folders gets the extra ones merged into its first
        dest = settings.template_dirs[min(index, len(settings.template_dirs) - 1)] if settings.template_dirs else ""
        if dest:
            notes.append(f"{_move_tree(folder, Path(dest))} device-type templates into {dest}")
    if (config / "health_checks").is_dir():
        count = _move_tree(config / "health_checks", Path(settings.health_checks_dir))
        notes.append(f"{count} health-check definitions into {settings.health_checks_dir}")
    archived = config / "server.yaml"
    if archived.is_file() and config_file:
        current = Path(config_file)
        if not current.is_file() or current.read_bytes() != archived.read_bytes():
            # never replace the running settings: they name this install's database and folders
            aside = current.with_name(current.name + ".from-backup")
            shutil.move(archived, aside)
            notes.append(f"the backed-up settings as {aside}: compare them with {current} and merge by hand")
    return notes


def put_devices_in_maintenance(archive: str | Path, created: str) -> list[str]:
    """Every device not Retired goes to Maintenance: nobody checked the hardware since the backup."""
    from .lab.maintenance import maintenance

    reason = f"restored from backup {Path(archive).name} (made {created}); check before use"
    return maintenance(actor=RESTORE_ACTOR, reason=reason)


def active_jobs() -> list[int]:
    from .models import TestJob
    from .states import JobState

    active = (JobState.SCHEDULING, JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING)
    return [j.id for j in TestJob.select(TestJob.id).where(TestJob.state.in_(active)).order_by(TestJob.id)]


@contextmanager
def staging_dir(settings: Settings) -> Iterator[Path]:
    """A scratch folder on the data disk (moves into place are then renames), removed afterwards."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".restore-", dir=settings.data_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unwritable(settings: Settings, config_file: str | None) -> list[str]:
    """Destinations restore would write but may not: checked before the database is touched."""
    wanted = [settings.output_dir, str(Path(settings.secret_key_file).parent), settings.health_checks_dir,
              *settings.template_dirs[:1]]
    if config_file:
        wanted.append(str(Path(config_file).parent))  # server.yaml.from-backup may go there
    out = []
    for path in wanted:
        existing = Path(path)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK):
            out.append(f"{path} (checked {existing})")
    return out


def restore(archive: str | Path, settings: Settings, config_file: str | None, force: bool = False,
            say: Say = print) -> None:
    """Restore `archive` into the install `settings` describe (its database must be open)."""
    from . import migrations
    from .db import connection, open_database
    from .models import TestJob
    from .states import JobState

    manifest = read_manifest(archive)
    check_compatible(manifest, settings.database)
    with connection():
        problems = target_problems(settings)
    if problems and not force:
        raise BackupError("this install is not empty: " + "; ".join(problems) +
                          ". Restore into a fresh install, or pass --force to replace what is there")
    blocked = unwritable(settings, config_file)
    if blocked:
        raise BackupError("cannot write " + ", ".join(blocked) + f" as user {getpass.getuser()}; run the "
                          "restore as a user who can (e.g. root), then give the data folder back to the server's user")
    with staging_dir(settings) as staging:
        extract_verified(archive, manifest, staging)
        say(f"verified {len(manifest['members'])} files of {Path(archive).name} "
            f"(dutlab {manifest['dutlab_version']}, schema {manifest['schema_version']}, made {manifest['created']})")
        load_database(staging / DB_MEMBER[manifest["database"]], settings.database)
        open_database(settings.database)
        say(f"database: loaded into {_display_url(settings.database)}")
        for note in restore_files(staging, settings, config_file):
            say(f"files: {note}")
    with connection():
        if migrations.current_version() != manifest["schema_version"]:
            raise BackupError(f"the loaded database is at schema {migrations.current_version()}, "
                              f"expected {manifest['schema_version']}")
        changes = put_devices_in_maintenance(archive, manifest["created"])
        stale = active_jobs()
        queued = TestJob.select().where(TestJob.state == JobState.SUBMITTED).count()
    for line in changes:
        say(f"maintenance: {line}")
    if queued:
        say(f"queue: {queued} submitted jobs wait for devices to come out of Maintenance")
    say_next_steps(stale, config_file, say)


def _display_url(url: str) -> str:
    parts = urlparse(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def say_next_steps(stale_jobs: list[int], config_file: str | None, say: Say) -> None:
    config = f" --config {config_file}" if config_file else ""
    steps = [f"start the server: dutlab-server{config} serve, and dutlab-server{config} consumer",
             f"check: dutlab-server{config} manage devices list --health GOOD (and UNKNOWN, LOOPING) lists nothing"]
    if stale_jobs:
        ids = " ".join(map(str, stale_jobs))
        steps.append(f"jobs {ids} were active when the backup was made; cancel them "
                     f"(lavacli jobs cancel ID, or POST /api/v1/jobs/ID/cancel) unless their workers still run them")
    steps += [f"bring each device back after checking it: dutlab-server{config} manage devices update HOST "
              "--health UNKNOWN (a health check runs first)",
              "start the workers last; they keep their tokens"]
    say("restore complete. Next:")
    for i, step in enumerate(steps, 1):
        say(f"  {i}. {step}")
