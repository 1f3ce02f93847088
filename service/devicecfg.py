"""Where templates and health checks are found, and a device's configuration for a job.

Admin folders come first, then what dutlab ships (design principle 4: the DB holds dictionaries
and health checks; templates are files with an admin override folder searched first).

Renders are cached: every submission and every job fetch renders a device's dictionary, and a
lab repeats the same few (dictionary, context) pairs. The key holds the template folders' state
(looked at once a second at most), so a template edited on disk misses the cache.
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

from .config import Settings
from .errors import ApiError
from .models import Device, DeviceType, TestJob, device_by_id
from .templating import TemplateError, extends_of, render_device_config, shipped_device_types_dir


class Lru:
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


_RENDERS = Lru(2048)  # one render per device of a 1,000-device lab stays cached (a few KB each)
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


def device_search_path(settings: Settings) -> list[Path]:
    return [Path(d) for d in settings.template_dirs] + [shipped_device_types_dir()]


def render(device: Device, settings: Settings, context: dict | None = None, state: tuple | None = None) -> str:
    """The device's dictionary rendered through its template with a job context (`state`: the
    template folders' `templates_state`, when the caller has it already)."""
    if not device.dictionary.strip():
        raise ApiError(409, f"device '{device.hostname}' has no dictionary; set one with "
                            "'dutlab-server manage devices update --dictionary FILE'")
    search_path = device_search_path(settings)
    context = context or {}
    state = templates_state(search_path) if state is None else state
    key = (device.hostname, device.device_type_id, device.dictionary, json.dumps(context, sort_keys=True), state)

    def make() -> str | TemplateError:
        try:
            return render_device_config(device.dictionary, hostname=device.hostname,
                                        device_type=device.device_type.name, context=context,
                                        search_path=search_path, state=state)
        except TemplateError as exc:
            return exc  # cached too: the same broken dictionary fails the same way

    text = _RENDERS.get(key, make)
    if isinstance(text, TemplateError):
        raise ApiError(409, f"device '{device.hostname}': {text}", "dictionary") from None
    return text


def render_for_job(job: TestJob, settings: Settings) -> str:
    device = device_by_id(job.actual_device_id)
    if device is None:
        raise Device.DoesNotExist(f"job {job.id}'s device {job.actual_device_id} does not exist")
    context = json.loads(job.definition).get("context") or {}
    return render(device, settings, context)


def template_name(device_type: DeviceType) -> str:
    return device_type.template or device_type.name


def template_text(device_type: DeviceType, settings: Settings) -> str | None:
    name = template_name(device_type) + ".jinja2"
    for folder in device_search_path(settings):
        path = folder / name
        if path.is_file():
            return path.read_text()
    return None


def health_check_definition(device: Device, settings: Settings) -> str | None:
    """The health-check job for `device`: the device type's own, else health-checks/<template>.yaml.

    As in LAVA, <template> is what the dictionary extends (qemu for qemu.jinja2).
    """
    dtype = device.device_type
    if dtype.health_check.strip():
        return dtype.health_check
    try:
        name = extends_of(device.dictionary) or template_name(dtype)
    except TemplateError:
        name = template_name(dtype)  # the broken dictionary is reported when it is rendered
    for folder in [Path(settings.health_checks_dir), shipped_device_types_dir() / "health-checks"]:
        for ext in (".yaml", ".yml"):
            path = folder / f"{name}{ext}"
            if path.is_file():
                return path.read_text()
    return None
