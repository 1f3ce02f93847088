"""The pipeline a job gets on the devices it may run on: the part of the one verdict that needs a
device configuration (docs/architecture.md, "One verdict per job definition").

At submission the server renders the configuration of the job's candidate devices, one device
per distinct dictionary, with the job's context, and builds the pipeline dutlab-run will build
(`definitions.pipeline`). The job is runnable when one of them accepts it; otherwise the answer
is the first device's refusal, in dutlab-run's words. A device without a dictionary, or whose
dictionary does not render, cannot tell: it is left out (the scheduler's health checks and the
job fetch report it), and a type with no such device gets no pipeline verdict at all.

Submissions repeat the same few definitions on the same few devices, so both steps are cached:
renders by (device, dictionary, context, the template folders' state), verdicts by (definition,
render). A template edited on disk changes the folders' state (looked at once a second at most)
and so misses the cache.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import yaml

from .. import devicecfg
from ..config import Settings
from ..errors import ApiError
from ..models import Device
from .definitions import ConfigurationError, pipeline

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Lru:
    """A small thread-safe LRU map (server threads submit concurrently)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # outside the lock: a render may take milliseconds
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


_RENDERS = _Lru(512)
_VERDICTS = _Lru(2048)
#: seconds a look at the template folders is reused: an edit is seen by submissions after that
STATE_TTL = 1.0
_STATE: dict[tuple, tuple[float, tuple]] = {}
_STATE_LOCK = threading.Lock()


def templates_state(folders: Iterable[Path]) -> tuple:
    """What changes when a template is added, removed or edited in one of `folders`."""
    folders = tuple(folders)
    now = time.monotonic()
    with _STATE_LOCK:
        seen = _STATE.get(folders)
        if seen is not None and now - seen[0] < STATE_TTL:
            return seen[1]
    state = []
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                stats = sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries
                               if e.name.endswith(".jinja2"))
        except OSError:
            stats = []
        state.append((str(folder), tuple(stats)))
    with _STATE_LOCK:
        _STATE[folders] = (now, tuple(state))
    return tuple(state)


def _rendered(device: Device, context: dict, settings: Settings, state: tuple) -> str | None:
    """The device's configuration text for this context; None when it has none that renders."""
    if not device.dictionary.strip():
        return None
    key = (device.hostname, device.device_type_id, device.dictionary, json.dumps(context, sort_keys=True), state)

    def render() -> str | None:
        try:
            return devicecfg.render(device, settings, context)
        except ApiError:
            return None

    return _RENDERS.get(key, render)


def _verdict(job: dict, definition_key: str, text: str) -> dict | ApiError | None:
    """The pipeline description, the refusal, or None (the configuration itself is unusable)."""

    def check() -> dict | ApiError | None:
        try:
            config = yaml.load(text, Loader=_YAML_LOADER)
            if not isinstance(config, dict):
                return None
            return pipeline(job, config)
        except ApiError as exc:
            return exc
        except (ConfigurationError, yaml.YAMLError):
            return None

    return _VERDICTS.get((definition_key, text), check)


def runnable(job: dict, devices: list[Device], settings: Settings) -> dict | None:
    """The pipeline description of `job` on the first of `devices` that can run it, or None when
    none of them has a configuration to tell; ApiError(400, dutlab-run's message, path) when none
    of those that can tell would run it."""
    context = job.get("context") or {}
    definition_key = json.dumps(job, sort_keys=True, default=str)
    state = templates_state(devicecfg.device_search_path(settings))
    refusal: ApiError | None = None
    seen: set[str] = set()
    for device in sorted(devices, key=lambda d: d.hostname):
        if device.dictionary in seen:
            continue  # the same dictionary renders the same pipeline (only the hostname differs)
        seen.add(device.dictionary)
        text = _rendered(device, context, settings, state)
        if text is None:
            continue
        verdict = _verdict(job, definition_key, text)
        if isinstance(verdict, dict):
            return verdict
        if isinstance(verdict, ApiError):
            refusal = refusal or verdict
    if refusal is not None:
        raise ApiError(refusal.status, refusal.message, refusal.path)
    return None
