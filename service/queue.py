"""The one place that picks the task queue backend from a URL.

`sqlite:////path` → SqliteStorage, `redis://...` → PriorityRedisStorage, `memory:` → in process
(tests). Tasks live in tasks.py, which registers them on `huey` below; a queued message names
`module.function`, so tasks must not move.

This module imports no tasks (huey's "config" module): the entry points import `tasks` after
`configure`, so the queue sits below everything that enqueues and no import runs in a circle.
"""

from __future__ import annotations

from pathlib import Path

from huey import Huey
from huey.storage import MemoryStorage, PriorityRedisStorage, SqliteStorage

from .config import Settings

huey = Huey("dutlab", results=False, utc=True, storage_class=MemoryStorage)
_settings: Settings | None = None


def configure(settings: Settings) -> Huey:
    global _settings
    url = settings.queue
    if url.startswith("sqlite:"):
        path = Path("/" + url.split(":", 1)[1].lstrip("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        huey.storage_class, huey.storage_kwargs = SqliteStorage, {"filename": str(path), "timeout": 30}
    elif url.startswith("redis:"):
        huey.storage_class, huey.storage_kwargs = PriorityRedisStorage, {"url": url}
    else:
        huey.storage_class, huey.storage_kwargs = MemoryStorage, {}
    huey.storage = huey.create_storage()
    _settings = settings
    return huey


def settings() -> Settings:
    if _settings is None:
        raise RuntimeError("queue.configure(settings) was not called")
    return _settings
