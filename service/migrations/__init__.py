"""Ordered schema migrations recorded in the `schema_version` table.

Each module `mNNNN_name.py` has `up(db)`. `migrate()` applies the ones not yet recorded, each in
its own transaction, so an upgrade never needs a wipe and a re-run does nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType

from ..db import database
from ..models import SchemaVersion


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    module: ModuleType


def available() -> list[Migration]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("m") and info.name[1:5].isdigit():
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append(Migration(int(info.name[1:5]), info.name[6:], module))
    return sorted(found, key=lambda m: m.version)


def current_version() -> int:
    if not database.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def latest_version() -> int:
    migrations = available()
    return migrations[-1].version if migrations else 0


def migrate() -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    database.create_tables([SchemaVersion], safe=True)
    done = current_version()
    applied = []
    for m in available():
        if m.version <= done:
            continue
        with database.atomic():
            m.module.up(database)
            SchemaVersion.create(version=m.version, name=m.name)
        applied.append(f"{m.version:04d}_{m.name}")
    return applied
