"""The coordinator's local store: each group's state as one JSON row in a small SQLite file.

A change is written before the reply that reports it goes out, so a restarted coordinator
picks up every group where its clients left it (members, messages, sync counters) and their
retried requests simply go on (docs/coordinator.md, "Restarts"). Polls that change nothing
(lava_wait, a lava_sync still waiting) write nothing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ..settings_file import SettingsError


class GroupStore:
    """name -> state mapping of the groups in `path` (created with its folder when missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, state TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise SettingsError(f"state_file: cannot use {path}: {exc}") from None

    def load(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT name, state FROM groups").fetchall()
        return {name: json.loads(state) for name, state in rows}

    def save(self, name: str, state: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO groups (name, state) VALUES (?, ?)", (name, json.dumps(state)))

    def delete(self, name: str) -> None:
        self.db.execute("DELETE FROM groups WHERE name = ?", (name,))

    def close(self) -> None:
        self.db.close()
