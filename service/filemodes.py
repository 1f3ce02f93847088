"""Files at rest: what holds password hashes, token hashes or the secret key is private.

The SQLite database and queue, the secret key and backup archives are created 0600 (the
server's user); 0640 is accepted too, for a service group. Every `dutlab-server` command
also narrows its umask to 027, as the shipped systemd unit does, so a server started by hand
or by `become_user` creates nothing world-readable. At start-up, `broad_files` names every
such file whose mode says more, and the server logs a warning with the chmod that fixes it
(it does not change modes itself: an admin may have reasons).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .config import Settings

#: the most a private file may allow: read and write for its owner, read for its group
ALLOWED = 0o640
UMASK = 0o027
SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")

log = logging.getLogger("dutlab.server")


def narrow_umask() -> None:
    """Add 027 to the process umask (never widen what the caller chose)."""
    os.umask(os.umask(UMASK) | UMASK)


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///...` database or queue URL (None for other backends)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":", 1)[1].lstrip("/")
    return Path("/" + path) if path and path != ":memory:" else None


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists. SQLite gives its -wal and -shm files
    the mode of the database file, so creating the database this way covers them too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def prepare(settings: Settings) -> None:
    """Create the SQLite database and queue files 0600 before anything opens them."""
    for url in (settings.database, settings.queue):
        path = sqlite_file(url)
        if path is not None:
            create_private(path)


def private_files(settings: Settings) -> list[Path]:
    """The files that must stay private, as far as they exist."""
    candidates: list[Path] = []
    for url in (settings.database, settings.queue):
        path = sqlite_file(url)
        if path is not None:
            candidates += [Path(f"{path}{suffix}") for suffix in SQLITE_SIDE_FILES]
    candidates.append(Path(settings.secret_key_file))
    backups = Path(settings.data_dir) / "backups"
    if backups.is_dir():
        candidates += sorted(backups.glob("*.tar.gz"))
    return [p for p in candidates if p.is_file()]


def broad_files(settings: Settings) -> list[tuple[Path, int]]:
    """(path, mode) of each private file that allows more than rw-r-----."""
    out = []
    for path in private_files(settings):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # removed meanwhile
        if mode & ~ALLOWED:
            out.append((path, mode))
    return out


def warn_broad_files(settings: Settings) -> list[str]:
    """Log a warning for each file `broad_files` finds; return the warnings."""
    warnings = [f"{path} has mode {mode:04o}: it holds password or token hashes or the secret key; "
                f"run 'chmod 600 {path}' (or 640 with the service group)" for path, mode in broad_files(settings)]
    for warning in warnings:
        log.warning(warning)
    return warnings
