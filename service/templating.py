"""Render device dictionaries through device-type templates into device configurations.

A device dictionary is a Jinja2 child template (`{% extends 'qemu.jinja2' %}` plus
`{% set %}` lines) stored in the database. It is rendered with the job `context` as
template variables, in a sandbox, and the result is the YAML device configuration the
dispatcher reads. Templates are looked up in `search_path` in order, so an admin
override directory listed before the shipped `device-types/` wins.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import shlex
import threading
import traceback
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2
import jinja2.bccache
import jinja2.nodes
import yaml
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_SUFFIX = ".jinja2"


class TemplateError(Exception):
    """A dictionary or template that does not render, or renders to invalid YAML.

    :param template: name of the template at fault (`qemu01.jinja2`, `base.jinja2`).
    :param line: 1-based line in that template (or in the rendered output for YAML
        errors, see `load_device_config`), None when unknown.
    """

    def __init__(self, template: str, line: int | None, message: str) -> None:
        self.template = template
        self.line = line
        self.message = message
        where = f"{template} line {line}" if line else template
        super().__init__(f"{where}: {message}")


# Filters ##########################################################################


def yaml_quote(value: Any) -> str:
    """Return `value` as one line of YAML that loads back to the same value.

    Strings are always double-quoted (so `yes`, `1024` or `a: b` stay strings and a
    newline cannot start a new key); undefined and None become `null`; numbers,
    booleans, lists and mappings are written in flow style.
    """
    if isinstance(value, jinja2.Undefined) or value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        if value.isascii() and value.isprintable():
            # the text PyYAML writes for printable ASCII (only " and \ escaped), at a fraction of
            # the cost: a render quotes ~40 values, and the dump was 60 % of its time
            return json.dumps(value)
        return yaml.safe_dump(value, default_style='"', width=float("inf")).rstrip("\n")
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n...\n").rstrip("\n")


def qemu_guest_fs_interface(arch: Any, guestfs_interface: Any = None) -> str:
    """Disk interface for the guest filesystem drive: the one asked for, else by arch."""
    if guestfs_interface and not isinstance(guestfs_interface, jinja2.Undefined):
        return str(guestfs_interface)
    return "ide" if arch in ("amd64", "x86_64", "i386") else "virtio"


def _shlex_quote(value: Any) -> str:
    return shlex.quote(str(value))


# Environment ######################################################################


class _MemoryBytecodeCache(jinja2.BytecodeCache):
    # A one-off environment (a dictionary checked on its way in) would recompile base.jinja2
    # and qemu.jinja2 every time (~40 ms). Compiled code is keyed by template name and source
    # checksum, so sharing it between environments with the same settings is safe.
    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._codes: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with self._lock:
            code = self._codes.get((bucket.key, bucket.checksum))
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with self._lock:
            self._codes[(bucket.key, bucket.checksum)] = bucket.bytecode_to_string()
            while len(self._codes) > self._size:
                self._codes.popitem(last=False)


_BYTECODE = _MemoryBytecodeCache()
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~5x faster


def _new_environment(search_path: Iterable[Path], auto_reload: bool) -> SandboxedEnvironment:
    # The dictionary is not in the loader (it is compiled from its text, below): a device named
    # like a template cannot shadow it, and the environment holds nothing of one device.
    loader = jinja2.FileSystemLoader([str(p) for p in search_path])
    env = SandboxedEnvironment(loader=loader, autoescape=False, trim_blocks=True, bytecode_cache=_BYTECODE,
                               auto_reload=auto_reload)
    env.filters["shlex_quote"] = _shlex_quote
    env.filters["yaml_quote"] = yaml_quote
    env.filters["qemu_guest_fs_interface"] = qemu_guest_fs_interface
    env.globals["qemu_guest_fs_interface"] = qemu_guest_fs_interface
    return env


class _Templates:
    """An environment over one search path and the dictionaries compiled in it (thread-safe:
    Jinja2 environments render concurrently once set up)."""

    CODES = 1024  # one compiled dictionary per device of a 1,000-device lab

    def __init__(self, search_path: list[Path], auto_reload: bool) -> None:
        self.search_path = search_path
        self.env = _new_environment(search_path, auto_reload)
        self._codes: OrderedDict[tuple[str, str], tuple[str, CodeType]] = OrderedDict()
        self._lock = threading.Lock()

    def dictionary(self, dictionary: str, hostname: str) -> tuple[str, jinja2.Template]:
        """The dictionary's name and its template; a syntax error raises TemplateSyntaxError."""
        key = (hostname, dictionary)
        with self._lock:
            hit = self._codes.get(key)
            if hit is not None:
                self._codes.move_to_end(key)
        if hit is None:
            name = _dictionary_name(hostname, self.search_path)
            hit = (name, self.env.compile(dictionary, name=name, filename=name))
            with self._lock:
                self._codes[key] = hit
                while len(self._codes) > self.CODES:
                    self._codes.popitem(last=False)
        name, code = hit
        return name, self.env.template_class.from_code(self.env, code, self.env.make_globals(None), None)


_SHARED: OrderedDict[tuple, _Templates] = OrderedDict()
_SHARED_LOCK = threading.Lock()
_SHARED_SIZE = 4  # a server has one search path, and only its newest state is rendered with


def _templates(search_path: list[Path], state: Hashable | None) -> _Templates:
    """Templates for one render. With the folders' `state` (what changes when a template is added,
    removed or edited) the environment is shared, so templates are loaded and compiled once per
    state; without it a new one sees the folders as they are now."""
    if state is None:
        return _Templates(search_path, auto_reload=True)
    key = (tuple(str(p) for p in search_path), state)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is not None:
            _SHARED.move_to_end(key)
            return found
    made = _Templates(search_path, auto_reload=False)  # a changed file changes `state`
    with _SHARED_LOCK:
        found = _SHARED.setdefault(key, made)
        while len(_SHARED) > _SHARED_SIZE:
            _SHARED.popitem(last=False)
    return found


def _dictionary_name(hostname: str, search_path: Iterable[Path]) -> str:
    # LAVA names the dictionary <hostname>.jinja2. The dictionary is compiled from its text, so
    # it cannot shadow a template of that name; its messages must not look like the template's.
    name = hostname + TEMPLATE_SUFFIX
    if any((Path(folder) / name).exists() for folder in search_path):
        return "devices/" + name
    return name


def _template_frame(exc: BaseException) -> tuple[str, int | None]:
    # Jinja2 rewrites tracebacks so template code appears with the template's filename
    # and line; the innermost such frame is where the error happened.
    found: tuple[str, int | None] = ("", None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(TEMPLATE_SUFFIX):
            found = (Path(frame.filename).name, frame.lineno)
    return found


def _describe(exc: BaseException, search_path: list[Path]) -> str:
    if isinstance(exc, jinja2.TemplateNotFound):
        where = ", ".join(str(p) for p in search_path) or "an empty search path"
        return f"template {exc.name!r} not found in {where}"
    if isinstance(exc, jinja2.TemplateError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


# Public API #######################################################################


def render_device_config(
    dictionary: str,
    *,
    hostname: str,
    device_type: str,
    context: Mapping[str, Any] | None,
    search_path: list[Path],
    state: Hashable | None = None,
) -> str:
    """Render a device dictionary with a job context; return the YAML text.

    :param search_path: template directories, searched in order (admin overrides first,
        the shipped `device-types/` last).
    :param state: what identifies the folders' templates now (devicecfg.templates_state): with
        it, templates and dictionaries compiled for an earlier render are reused.
    :raises TemplateError: naming the template and line at fault.
    """
    variables = dict(context or {})
    variables.update(scheduled_device_name=hostname, scheduled_device_type=device_type)
    name = hostname + TEMPLATE_SUFFIX
    try:
        name, template = _templates(search_path, state).dictionary(dictionary, hostname)
        return template.render(variables)
    except jinja2.TemplateSyntaxError as exc:
        template = exc.name or (Path(exc.filename).name if exc.filename else name)
        raise TemplateError(template, exc.lineno, exc.message or "syntax error") from exc
    except Exception as exc:  # any failure inside template code is the template's fault
        template, line = _template_frame(exc)
        raise TemplateError(template or name, line, _describe(exc, search_path)) from exc


def load_device_config(
    dictionary: str,
    *,
    hostname: str,
    device_type: str,
    context: Mapping[str, Any] | None,
    search_path: list[Path],
) -> dict[str, Any]:
    """Render like `render_device_config` and parse the YAML.

    A YAML error raises TemplateError whose `template` is `<dictionary> (rendered)` and
    whose `line` is the line of the rendered output, quoted in the message.
    """
    text = render_device_config(
        dictionary, hostname=hostname, device_type=device_type, context=context, search_path=search_path
    )
    label = f"{_dictionary_name(hostname, search_path)} (rendered)"
    try:
        config = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        quoted = text.splitlines()[line - 1].strip() if line and line <= len(text.splitlines()) else ""
        raise TemplateError(label, line, f"{exc.problem or exc.context}: {quoted!r}") from exc
    except yaml.YAMLError as exc:
        raise TemplateError(label, None, str(exc)) from exc
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise TemplateError(label, None, f"the device configuration must be a mapping, not {kind}")
    return config


def extends_of(dictionary: str) -> str | None:
    """The template a dictionary extends, without `.jinja2` ('qemu'), or None.

    :raises TemplateError: when the dictionary is not valid Jinja2.
    """
    try:
        tree = jinja2.Environment().parse(dictionary)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError("dictionary", exc.lineno, exc.message or "syntax error") from exc
    for node in tree.find_all(jinja2.nodes.Extends):
        if isinstance(node.template, jinja2.nodes.Const) and isinstance(node.template.value, str):
            return node.template.value.removesuffix(TEMPLATE_SUFFIX)
    return None


@functools.cache
def shipped_device_types_dir() -> Path:
    """The `device-types/` folder shipped with dutlab (templates + health-checks/): the package
    `dutlab.device_types`, wherever it is installed (a checkout's folder in an editable install)."""
    return Path(str(importlib.resources.files("dutlab.device_types")))
