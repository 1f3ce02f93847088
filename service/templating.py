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
import shlex
import threading
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
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
    if isinstance(value, str):
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
    # Each render builds a fresh environment (below), which would recompile base.jinja2
    # and qemu.jinja2 every time (~40 ms). Compiled code is keyed by template name and
    # source checksum, so sharing it between environments with the same settings is safe.
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


class _NamedDictLoader(jinja2.DictLoader):
    # DictLoader reports no filename, so tracebacks would show "<template>"; giving the
    # template name as filename lets errors name the dictionary and its line.
    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        source, _, uptodate = super().get_source(environment, template)
        return source, template, uptodate


def _environment(dictionary_name: str, dictionary: str, search_path: Iterable[Path]) -> SandboxedEnvironment:
    # A fresh environment per render: the dictionary changes every call and renders can
    # run concurrently in server threads, so nothing is shared between calls.
    loader = jinja2.ChoiceLoader(
        [
            _NamedDictLoader({dictionary_name: dictionary}),
            jinja2.FileSystemLoader([str(p) for p in search_path]),
        ]
    )
    env = SandboxedEnvironment(loader=loader, autoescape=False, trim_blocks=True, bytecode_cache=_BYTECODE)
    env.filters["shlex_quote"] = _shlex_quote
    env.filters["yaml_quote"] = yaml_quote
    env.filters["qemu_guest_fs_interface"] = qemu_guest_fs_interface
    env.globals["qemu_guest_fs_interface"] = qemu_guest_fs_interface
    return env


def _dictionary_name(dictionary: str, hostname: str, search_path: Iterable[Path]) -> str:
    # LAVA names the dictionary <hostname>.jinja2. A device called like a template ("qemu",
    # "base") would then shadow that template and extend itself forever, so that case
    # gets a name no template can have.
    name = hostname + TEMPLATE_SUFFIX
    try:
        parent = extends_of(dictionary)
    except TemplateError:
        return name  # rendering reports the syntax error under the usual name
    if parent == hostname or any((Path(folder) / name).exists() for folder in search_path):
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
) -> str:
    """Render a device dictionary with a job context; return the YAML text.

    :param search_path: template directories, searched in order (admin overrides first,
        the shipped `device-types/` last).
    :raises TemplateError: naming the template and line at fault.
    """
    name = _dictionary_name(dictionary, hostname, search_path)
    env = _environment(name, dictionary, search_path)
    variables = dict(context or {})
    variables.update(scheduled_device_name=hostname, scheduled_device_type=device_type)
    try:
        return env.get_template(name).render(variables)
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
    label = f"{_dictionary_name(dictionary, hostname, search_path)} (rendered)"
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
