"""Restoring a backup into a fresh install of the same dutlab version.

It checks the manifest, refuses a target holding data (unless forced), verifies every checksum
in a staging folder before touching anything, loads the dump, puts the files in place, and sets
every device that is not Retired to Maintenance so nothing runs on hardware whose state nobody
has checked since the backup.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from .. import __version__, migrations
from ..config import Settings
from ..db import connection, database, open_database
from ..lab.maintenance import maintenance
from ..models import TestJob
from ..states import JobState
from .archive import DB_MEMBER, FORMAT, MANIFEST, BackupError, Say, database_kind, pg_env, run_pg, sqlite_path

#: who the health history names for the devices a restore puts into Maintenance
RESTORE_ACTOR = "dutlab-restore"
CHUNK = 1024 * 1024


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


def load_database(dump: Path, url: str) -> None:
    """Replace the target database's content with the dump (the caller checked it may)."""
    if database_kind(url) == "sqlite":
        database.close()
        target = sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm", "-journal"):
            # a stale write-ahead log beside the new file would be replayed into it
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        tmp = target.with_name(target.name + ".restoring")
        shutil.copyfile(dump, tmp)
        os.chmod(tmp, 0o600)  # it holds password and token hashes
        os.replace(tmp, target)
        return
    _drop_tables()
    database.close()
    run_pg(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
             f"--dbname={pg_env(url)['PGDATABASE']}", str(dump)], url)


def _drop_tables() -> None:
    # an empty install may be migrated already; the dump brings its own schema
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
    reason = f"restored from backup {Path(archive).name} (made {created}); check before use"
    return maintenance(actor=RESTORE_ACTOR, reason=reason)


def active_jobs() -> list[int]:
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
