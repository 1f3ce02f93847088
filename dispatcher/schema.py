"""Validate LAVA job definitions for the features dutlab supports.

Choices, and why:

* Hand-written checks instead of voluptuous: voluptuous collects every error in an order
  that depends on the schema's internals and words them for programmers ("extra keys not
  allowed @ data[...]"). Here each check raises the first error with a path into the
  document (`actions[1].boot.method`, 0-based list indices) and one sentence saying what
  is allowed, and the order is fixed: in a mapping, unknown keys first (document order),
  then missing required keys, then values in the order of the tables below; whole-job
  rules (timeouts against the job timeout, namespaces, MultiNode roles) run last.
* Strict: unknown keys are rejected at the top level and in actions, although LAVA
  accepts unknown top-level keys by default. A typo such as `timeout:` for `timeouts:`
  would otherwise be ignored silently, and dutlab validates everything before anything
  runs. LAVA options dutlab does not implement get their own message, so a LAVA user
  learns the job is understood but not supported.
* Duplicate keys in the YAML are an error (the YAML spec says so; PyYAML keeps the last).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

Check = Callable[[Any, str], None]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: What dutlab runs, as data so docs and errors reuse it. deploy/boot: values of `to:` /
#: `method:`; test: the key that selects the kind of test; command: its required key.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "deploy": ("tmpfs", "downloads"),
    "boot": ("qemu", "minimal"),
    "test": ("definitions", "monitors", "interactive"),
    "command": ("name",),
}

# LAVA's method names (reference §5.4/5.5), to tell "not supported yet" from a typo.
LAVA_DEPLOY_METHODS = _words(
    "avh docker download downloads fastboot flasher fvp iso-installer mps musca nbd nfs overlay qdl "
    "recovery sata sd ssh tftp tmpfs u-boot-ums usb usbg-ms uuu vemsd"
)
LAVA_BOOT_METHODS = _words(
    "avh barebox bootloader cmsis-dap depthcharge dfu docker fastboot fvp gdb grub grub-efi ipxe jlink "
    "kexec minimal monitor musca new_connection nodebooter openocd pyocd qdl qemu qemu-iso qemu-nfs "
    "recovery schroot ssh u-boot uefi uefi-menu uuu"
)
LAVA_UNSUPPORTED_KEYS = _words(
    "device worker reboot_to_fastboot docker services lava-xnbd postprocess uefi authorize "
    "overlay_backend archive use_cache partition sparse commands use_bootscript"
)
CONTEXT_VARIABLES = _words(
    "arch boot_console boot_root cpu extra_options guestfs_driveid guestfs_interface guestfs_size "
    "machine memory model monitor netdevice no_kvm no_network serial vga booti_dtb_addr "
    "booti_kernel_addr booti_ramdisk_addr bootm_dtb_addr bootm_kernel_addr bootm_ramdisk_addr "
    "bootz_dtb_addr bootz_kernel_addr bootz_ramdisk_addr deploy_character_delay "
    "boot_character_delay boot_retry bootloader_prompt console_device custom_kernel_args "
    "extra_kernel_args extra_nfsroot_args failure_retry kernel_loglevel kernel_start_message "
    "lava_test_results_dir menu_interrupt_prompt mustang_menu_list test_character_delay "
    "tftp_mac_address uboot_extra_error_message uboot_needs_interrupt uboot_altbank"
)
TIMEOUT_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
NAME_PATTERN = r"[-_a-zA-Z0-9.]+"
MAX_NODES = 100_000  # after alias expansion; a job definition is a few hundred nodes
MAX_DEPTH = 100


class JobDefinitionError(ValueError):
    """A job definition dutlab cannot run.

    :param path: where in the document (`actions[1].boot.method`, `timeouts.job`, or ''
        for the whole document).
    :param message: one sentence saying what is allowed or what to fix.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def _fail(path: str, message: str) -> NoReturn:
    raise JobDefinitionError(path, message)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), f"a {type(value).__name__}")


def _sentence_part(text: Any) -> str:
    # exception texts may span lines or end in a period; messages are one sentence
    return " ".join(str(text).split()).rstrip(".")


def _one_of(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


# Building blocks ##################################################################


def _string(pattern: str | None = None, hint: str = "", max_len: int = 0) -> Check:
    regex = re.compile(pattern) if pattern else None

    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            advice = "; quote it" if isinstance(value, (int, float)) else ""  # YAML read 1234567 as a number
            _fail(path, f"Expected a string, got {_kind(value)}{advice}.")
        if not value.strip():
            _fail(path, "The value must not be empty.")
        if max_len and len(value) > max_len:
            _fail(path, f"The value is {len(value)} characters long; at most {max_len} are allowed.")
        if regex and not regex.fullmatch(value):
            _fail(path, f"The value {value!r} is not valid: {hint}.")

    return check


def _choice(*values: Any) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or value not in values:
            _fail(path, f"The value {value!r} is not allowed; use one of: {_one_of(values)}.")

    return check


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        _fail(path, f"Expected true or false, got {_kind(value)}.")


def _integer(low: int, high: int | None = None) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, f"Expected an integer, got {_kind(value)}.")
        if value < low or (high is not None and value > high):
            allowed = f"{low} to {high}" if high is not None else f"{low} or more"
            _fail(path, f"The value {value} is out of range; use {allowed}.")

    return check


def _list(item: Check, min_items: int = 0) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            _fail(path, f"Expected a list, got {_kind(value)}.")
        if len(value) < min_items:
            _fail(path, f"The list needs at least {min_items} item{'s' if min_items > 1 else ''}.")
        for index, entry in enumerate(value):
            item(entry, f"{path}[{index}]")

    return check


def _unknown_key(key: Any, allowed: Iterable[str], path: str) -> NoReturn:
    allowed = list(allowed)
    if key in LAVA_UNSUPPORTED_KEYS:
        _fail(path, f"The LAVA option {key!r} is not supported by dutlab; remove it "
                    f"(allowed: {_one_of(allowed)}).")
    close = difflib.get_close_matches(str(key), allowed, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    _fail(path, f"Unknown key {key!r}{guess}; allowed keys here: {_one_of(allowed)}.")


def _mapping(fields: dict[str, Check], required: Iterable[str] = ()) -> Check:
    required = tuple(required)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, f"Expected a mapping, got {_kind(value)}.")
        for key in value:
            if key not in fields:
                _unknown_key(key, fields, _join(path, key))
        for key in required:
            if key not in value:
                _fail(_join(path, key), f"The required key {key!r} is missing.")
        for key, sub in fields.items():
            if key in value:
                sub(value[key], _join(path, key))

    return check


def _dict_of(item: Check, min_items: int = 0, key_pattern: str = r".+", key_hint: str = "") -> Check:
    key_regex = re.compile(key_pattern)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, f"Expected a mapping, got {_kind(value)}.")
        if len(value) < min_items:
            _fail(path, f"The mapping needs at least {min_items} entr{'ies' if min_items > 1 else 'y'}.")
        for key, entry in value.items():
            if not isinstance(key, str) or not key_regex.fullmatch(key):
                hint = f": {key_hint}" if key_hint else ""
                _fail(_join(path, key), f"The name {key!r} is not valid{hint}.")
            item(entry, _join(path, key))

    return check


def _scalar(value: Any, path: str) -> None:
    if not isinstance(value, (str, int, float, bool)):
        _fail(path, f"Expected a string, number or true/false, got {_kind(value)}.")


def _single_line(value: Any, path: str) -> None:
    # Context values are rendered into the YAML device configuration and QEMU's command
    # line; control characters there are never intended.
    if not isinstance(value, (str, int)):  # bool is an int
        _fail(path, f"Expected a string, an integer or true/false, got {_kind(value)}.")
    if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
        _fail(path, "The value must be one line without control characters.")


def _url(schemes: tuple[str, ...] = ("http", "https", "file")) -> Check:
    def check(value: Any, path: str) -> None:
        _string()(value, path)
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            _fail(path, f"The URL {value!r} must start with one of: {_one_of(s + '://' for s in schemes)}.")
        if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
            _fail(path, f"The file URL {value!r} needs an absolute path, as in file:///srv/images/vmlinuz.")
        if parts.scheme != "file" and not parts.hostname:
            _fail(path, f"The URL {value!r} has no host name.")

    return check


def _regex(value: Any, path: str) -> None:
    _string()(value, path)
    try:
        re.compile(value)
    except re.error as exc:
        _fail(path, f"The regular expression {value!r} does not compile: {_sentence_part(exc)}.")


def _hex(length: int) -> Check:
    return _string(f"[0-9a-fA-F]{{{length}}}", f"expected {length} hexadecimal digits")


_STRINGS = _list(_string())
_NAME = _string(NAME_PATTERN, "use letters, digits, '-', '_' and '.' only")
_PARAMETERS = _dict_of(_scalar, key_pattern=r"[A-Za-z_][A-Za-z0-9_]*",
                       key_hint="parameter names become shell variables (letters, digits, '_')")
_HEADERS = _dict_of(_string())
_ANY_MAPPING = _dict_of(lambda value, path: None)  # free-form: metadata, test install steps

# Timeouts #########################################################################


def _check_timeout(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        _fail(path, f"A timeout is a mapping such as {{minutes: 5}}, got {_kind(value)}.")
    for key in value:
        if key not in TIMEOUT_UNITS and key != "skip":
            _unknown_key(key, [*TIMEOUT_UNITS, "skip"], _join(path, key))
    units = [key for key in value if key in TIMEOUT_UNITS]
    if len(units) != 1:
        _fail(path, f"A timeout needs exactly one of {_one_of(TIMEOUT_UNITS)}, found {len(units)}.")
    _integer(1)(value[units[0]], _join(path, units[0]))
    if "skip" in value:
        _boolean(value["skip"], _join(path, "skip"))


def timeout_seconds(mapping: Any, path: str = "") -> int:
    """Seconds in a timeout mapping such as {minutes: 5}; JobDefinitionError if invalid."""
    _check_timeout(mapping, path)
    return sum(TIMEOUT_UNITS[unit] * count for unit, count in mapping.items() if unit in TIMEOUT_UNITS)


def _describe_timeout(mapping: dict[str, Any]) -> str:
    unit, count = next((u, c) for u, c in mapping.items() if u in TIMEOUT_UNITS)
    return f"{count} {unit[:-1] if count == 1 else unit}"


_TIMEOUTS = _dict_of(_check_timeout)
_JOB_TIMEOUTS = _mapping(
    {"job": _check_timeout, "action": _check_timeout, "actions": _TIMEOUTS, "connection": _check_timeout,
     "connections": _TIMEOUTS, "queue": _check_timeout},
    required=("job",),
)

# Actions ##########################################################################


def _namespace(value: Any, path: str) -> None:
    _string()(value, path)
    if value in ("common", "docker-test-shell"):
        _fail(path, f"The namespace {value!r} is reserved; choose another name.")


_COMMON = {
    "timeout": _check_timeout, "timeouts": _TIMEOUTS, "failure_retry": _integer(1),
    "failure_retry_interval": _integer(1), "repeat": _integer(1), "namespace": _namespace,
    "connection-namespace": _namespace, "role": _list(_string(), min_items=1),
    "protocols": _dict_of(_list(_mapping({"action": _string(), "request": _string(), "messageID": _string(),
                                          "message": _dict_of(_scalar), "timeout": _check_timeout})),
                          key_pattern="lava-multinode", key_hint="only lava-multinode is supported"),
}

_IMAGE = _mapping(
    {"url": _url(), "headers": _HEADERS, "compression": _choice("gz", "xz", "bz2", "zstd"),
     "md5sum": _hex(32), "sha256sum": _hex(64), "sha512sum": _hex(128), "image_arg": _string(),
     "format": _choice("cpio.newc", "ext4", "tar"), "overlays": _mapping({"lava": _boolean})},
    required=("url",),
)
_IMAGES = _dict_of(_IMAGE, min_items=1, key_pattern=r"[A-Za-z0-9_-]+",
                   key_hint="image names are used as {name} in image_arg (letters, digits, '-', '_')")
_DEPLOY = {
    "tmpfs": _mapping({"to": _string(), "images": _IMAGES, "os": _string(), **_COMMON}, ("images",)),
    "downloads": _mapping(
        {"to": _string(), "images": _IMAGES, "uniquify": _boolean, "os": _string(), **_COMMON}, ("images",)
    ),
}


def _prompts(value: Any, path: str) -> None:
    if isinstance(value, str):
        _regex(value, path)
    else:
        _list(_regex, min_items=1)(value, path)


def _auto_login(value: Any, path: str) -> None:
    fields = {"login_prompt": _regex, "username": _string(), "password_prompt": _regex,
              "password": _string(), "login_commands": _STRINGS}
    _mapping(fields, required=("login_prompt", "username"))(value, path)
    if ("password_prompt" in value) != ("password" in value):
        missing = "password" if "password_prompt" in value else "password_prompt"
        _fail(_join(path, missing), "Set password_prompt and password together, or neither.")


def _transfer_overlay(value: Any, path: str) -> None:
    _mapping({"download_command": _string(), "unpack_command": _string(), "transfer_method": _choice("zmodem")},
             required=("unpack_command",))(value, path)
    if "transfer_method" not in value and "download_command" not in value:
        _fail(_join(path, "download_command"), "Set download_command, or transfer_method: zmodem.")


_BOOT_COMMON = {
    "method": _string(), "prompts": _prompts, "auto_login": _auto_login, "transfer_overlay": _transfer_overlay,
    "parameters": _mapping({"kernel-start-message": _string(), "shutdown-message": _string(),
                            "bootloader-final-message": _string()}),
    "ignore_kernel_messages": _boolean, "soft_reboot": _string(), **_COMMON,
}
_BOOT = {
    "qemu": _mapping({**_BOOT_COMMON, "connection": _choice("serial"), "media": _choice("tmpfs")}),
    "minimal": _mapping({**_BOOT_COMMON, "reset": _boolean, "pre_power_command": _boolean,
                         "pre_os_command": _boolean}),
}

# Test action ######################################################################


def _testdef_name(value: Any, path: str) -> None:
    _NAME(value, path)
    if value == "lava":
        _fail(path, "The name 'lava' is reserved for the job's own results; choose another.")


_TESTDEF = _mapping(
    {"metadata": _mapping({"format": _choice("Lava-Test Test Definition 1.0"), "name": _string(),
                           "description": _string(), "maintainer": _STRINGS, "os": _STRINGS,
                           "scope": _STRINGS, "devices": _STRINGS, "environment": _STRINGS},
                          required=("format", "name")),
     "install": _ANY_MAPPING, "run": _mapping({"steps": _list(_string())}, required=("steps",)),
     "parse": _mapping({"pattern": _regex, "fixupdict": _dict_of(_string())}),
     "params": _PARAMETERS, "parameters": _PARAMETERS, "expected": _STRINGS},
    required=("metadata",),
)
_DEFINITION_COMMON = {
    "from": _string(), "name": _testdef_name, "path": _string(), "parameters": _PARAMETERS,
    "params": _PARAMETERS, "expected": _STRINGS, "lava-signal": _choice("kmsg", "stdout"),
    "skip_install": _list(_choice("keys", "sources", "deps", "steps", "git-repos", "all")),
}
_DEFINITION_REQUIRED = ("repository", "name", "path")
_DEFINITION = {
    "git": _mapping({**_DEFINITION_COMMON, "repository": _string(), "branch": _string(),
                     "revision": _string(), "history": _boolean, "recursive": _boolean}, _DEFINITION_REQUIRED),
    "url": _mapping({**_DEFINITION_COMMON, "repository": _url(), "headers": _HEADERS,
                     "compression": _choice("gz", "xz", "bz2", "zstd")}, _DEFINITION_REQUIRED),
    "inline": _mapping({**_DEFINITION_COMMON, "repository": _TESTDEF}, _DEFINITION_REQUIRED),
}


def _definition(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        _fail(path, f"A test definition is a mapping, got {_kind(value)}.")
    if "from" not in value:
        _fail(_join(path, "from"), f"The required key 'from' is missing; use one of: {_one_of(_DEFINITION)}.")
    kind = value["from"]
    if not isinstance(kind, str) or kind not in _DEFINITION:
        _fail(_join(path, "from"), f"Test definitions come from {_one_of(_DEFINITION)}; got {kind!r}.")
    _DEFINITION[kind](value, path)


_MONITOR = _mapping({"name": _testdef_name, "start": _string(), "end": _string(), "pattern": _regex,
                     "fixupdict": _dict_of(_choice("pass", "fail", "skip", "unknown")), "expected": _STRINGS},
                    required=("name", "start", "end", "pattern"))
_MESSAGE = _mapping({"message": _string(), "error": _string(),
                     "exception": _choice("InfrastructureError", "JobError", "TestError")}, ("message",))


def _command_or_null(value: Any, path: str) -> None:
    if value is not None:
        _string()(value, path)


_INTERACTIVE = _mapping(
    {"name": _testdef_name, "prompts": _list(_string(), min_items=1), "echo": _choice("discard"),
     "expected": _STRINGS,
     "script": _list(_mapping({"command": _command_or_null, "name": _NAME, "delay": _integer(0),
                               "wait_for_prompt": _boolean, "successes": _list(_MESSAGE),
                               "failures": _list(_MESSAGE)}, required=("command",)), min_items=1)},
    required=("name", "prompts", "script"),
)
_TEST_KINDS = {"definitions": _definition, "monitors": _MONITOR, "interactive": _INTERACTIVE}


def _unique_names(items: list[dict[str, Any]], path: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item["name"] in seen:
            _fail(f"{path}[{index}].name", f"The name {item['name']!r} is used twice in this test action; "
                                            "names must be unique.")
        seen.add(item["name"])


def _test(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        _fail(path, f"A test action is a mapping, got {_kind(value)}.")
    kinds = [key for key in value if key in _TEST_KINDS]
    if len(kinds) > 1:
        _fail(_join(path, kinds[1]), f"A test action has one of {_one_of(_TEST_KINDS)}, not both "
                                     f"{kinds[0]} and {kinds[1]}; split it into two test actions.")
    lists = {kind: _list(check, min_items=1) for kind, check in _TEST_KINDS.items()}
    _mapping({**_COMMON, **lists})(value, path)
    if not kinds:
        _fail(path, f"A test action needs one of: {_one_of(_TEST_KINDS)}.")
    _unique_names(value[kinds[0]], _join(path, kinds[0]))


# Actions list #####################################################################


def _by_method(kind: str, key: str, table: dict[str, Check], lava_names: frozenset[str]) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, f"A {kind} action is a mapping, got {_kind(value)}.")
        if key not in value:
            _fail(_join(path, key), f"The required key {key!r} is missing; use one of: {_one_of(table)}.")
        method = value[key]
        if not isinstance(method, str) or method not in table:
            known = isinstance(method, str) and method in lava_names
            what = "a LAVA method dutlab does not support yet" if known else "unknown"
            _fail(_join(path, key), f"The {kind} method {method!r} is {what}; use one of: {_one_of(table)}.")
        table[method](value, path)

    return check


_ACTIONS = {
    "deploy": _by_method("deploy", "to", _DEPLOY, LAVA_DEPLOY_METHODS),
    "boot": _by_method("boot", "method", _BOOT, LAVA_BOOT_METHODS),
    "test": _test,
    "command": _mapping({"name": _string(), **_COMMON}, required=("name",)),
}


def _action(value: Any, path: str) -> None:
    if not isinstance(value, dict) or len(value) != 1:
        got = f"{len(value)} keys" if isinstance(value, dict) else _kind(value)
        _fail(path, f"Each action is a mapping with exactly one key ({_one_of(_ACTIONS)}); got {got}.")
    (kind, body), = value.items()
    if kind not in _ACTIONS:
        _unknown_key(kind, _ACTIONS, _join(path, kind))
    _ACTIONS[kind](body, _join(path, kind))


# Top level ########################################################################


def _visibility(value: Any, path: str) -> None:
    if isinstance(value, dict):
        _mapping({"group": _list(_string(), min_items=1)}, required=("group",))(value, path)
    elif value not in ("public", "personal"):
        _fail(path, f"Visibility is public, personal or {{group: [names]}}; got {value!r}.")


def _priority(value: Any, path: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        _integer(0, 100)(value, path)
    elif value not in ("high", "medium", "low"):
        _fail(path, f"Priority is high, medium, low or an integer from 0 to 100; got {value!r}.")


def _context(extra: Iterable[str]) -> Check:
    allowed = CONTEXT_VARIABLES | set(extra)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, f"Expected a mapping, got {_kind(value)}.")
        for key, entry in value.items():
            if key not in allowed:
                if key in ("kvm", "enable_kvm"):
                    _fail(_join(path, key), "KVM is a property of the device; an admin sets it in its dictionary.")
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                guess = f" (did you mean {close[0]!r}?)" if close else ""
                _fail(_join(path, key), f"The context variable {key!r} is not allowed{guess}; "
                                        "see the job reference for the list of allowed variables.")
            if isinstance(entry, list):
                _list(_single_line)(entry, _join(path, key))
            else:
                _single_line(entry, _join(path, key))

    return check


def _criteria(value: Any, path: str) -> None:
    _mapping({"status": _choice("all", "finished", "running", "complete", "canceled", "incomplete"),
              "dependency_query": _string(), "type": _choice("regression", "progression")},
             required=("status",))(value, path)
    if value["status"] == "all" and len(value) > 1:
        _fail(path, "With status: all no other criteria are allowed.")
    if "type" in value and value["status"] not in ("complete", "incomplete"):
        _fail(_join(path, "type"), "A regression/progression type needs status complete or incomplete.")


def _recipient_to(value: Any, path: str) -> None:
    _mapping({"method": _choice("email", "irc"), "user": _string(), "email": _string(), "handle": _string(),
              "server": _string()}, required=("method",))(value, path)
    needs = "email" if value["method"] == "email" else "handle"
    if needs not in value and "user" not in value:
        _fail(path, f"A recipient by {value['method']} needs {needs!r} or 'user'.")


_CALLBACK = _mapping({"url": _url(("http", "https")), "method": _choice("GET", "POST"), "token": _string(),
                      "header": _string(), "dataset": _choice("minimal", "logs", "results", "all"),
                      "content-type": _choice("json", "urlencoded")}, required=("url",))
_NOTIFY_FIELDS = {
    "criteria": _criteria, "verbosity": _choice("verbose", "quiet", "status-only"),
    "recipients": _list(_mapping({"to": _recipient_to}, required=("to",))),
    "callback": _CALLBACK, "callbacks": _list(_CALLBACK, min_items=1),
    "compare": _mapping({"blacklist": _STRINGS, "query": _mapping(
        {"username": _string(), "name": _string(), "entity": _string(), "conditions": _HEADERS})}),
}


def _notify(value: Any, path: str) -> None:
    _mapping(_NOTIFY_FIELDS, required=("criteria",))(value, path)
    if "callback" in value and "callbacks" in value:
        _fail(_join(path, "callbacks"), "Use either callback or callbacks, not both.")


def _protocols(extra_context: Iterable[str]) -> Check:
    role = _mapping({"device_type": _NAME, "count": _integer(1), "context": _context(extra_context),
                     "tags": _STRINGS, "timeout": _check_timeout, "essential": _boolean,
                     "expect_role": _string()}, required=("device_type", "count"))
    roles = _dict_of(role, min_items=1, key_pattern=NAME_PATTERN, key_hint="use letters, digits, '-', '_', '.'")
    multinode = _mapping({"roles": roles, "timeout": _check_timeout}, required=("roles",))
    return _mapping({"lava-multinode": multinode})


def _top_level(extra_context: Iterable[str], multinode: bool) -> Check:
    fields: dict[str, Check] = {
        "job_name": _string(max_len=200), "device_type": _NAME, "timeouts": _JOB_TIMEOUTS,
        "visibility": _visibility, "priority": _priority, "context": _context(extra_context),
        "tags": _STRINGS, "metadata": _ANY_MAPPING, "secrets": _dict_of(_string()),
        "environment": _dict_of(_scalar), "notify": _notify, "protocols": _protocols(extra_context),
        "actions": _list(_action, min_items=1),
    }
    required = ["job_name", "device_type", "timeouts", "actions"]
    if multinode:  # device types are per role, checked in _check_roles
        required.remove("device_type")
    return _mapping(fields, required)


# Whole-job rules ##################################################################


def _timeouts_in(job: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    top = job["timeouts"]
    for key in ("action", "connection"):
        if key in top:
            yield f"timeouts.{key}", top[key]
    for key in ("actions", "connections"):
        for name, value in top.get(key, {}).items():
            yield f"timeouts.{key}.{name}", value
    for index, action in enumerate(job["actions"]):
        (kind, body), = action.items()
        path = f"actions[{index}].{kind}"
        if "timeout" in body:
            yield f"{path}.timeout", body["timeout"]
        for name, value in body.get("timeouts", {}).items():
            yield f"{path}.timeouts.{name}", value


def _check_job_rules(job: dict[str, Any], multinode: bool) -> None:
    limit = timeout_seconds(job["timeouts"]["job"])
    for path, value in _timeouts_in(job):
        if timeout_seconds(value) > limit:
            _fail(path, f"This timeout ({_describe_timeout(value)}) is longer than the job timeout "
                        f"({_describe_timeout(job['timeouts']['job'])}); shorten it or raise timeouts.job.")
    bodies = [next(iter(action.values())) for action in job["actions"]]
    if any("namespace" in body for body in bodies):
        for index, body in enumerate(bodies):
            if "namespace" not in body:
                _fail(f"actions[{index}]", "Some actions set a namespace, so every action must set one.")
    if multinode:
        _check_roles(job, bodies)


def _check_roles(job: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    for key in ("device_type", "context", "tags", "environment"):
        if key in job:
            _fail(key, f"With lava-multinode, set {key} per role under protocols.lava-multinode.roles.")
    roles = job["protocols"]["lava-multinode"]["roles"]
    for index, body in enumerate(bodies):
        kind = next(iter(job["actions"][index]))
        if "role" not in body:
            _fail(f"actions[{index}].{kind}.role",
                  f"In a MultiNode job every action names its roles ({_one_of(roles)}).")
        for position, name in enumerate(body["role"]):
            if name not in roles:
                _fail(f"actions[{index}].{kind}.role[{position}]",
                      f"The role {name!r} is not defined; defined roles: {_one_of(roles)}.")


# Public API #######################################################################


def validate_job(job: dict[str, Any], *, extra_context_variables: Iterable[str] = ()) -> dict[str, Any]:
    """Check a parsed job definition; return it unchanged or raise the first JobDefinitionError.

    :param extra_context_variables: context keys a lab allows beyond LAVA's list
        (LAVA's EXTRA_CONTEXT_VARIABLES setting).
    """
    if not isinstance(job, dict):
        _fail("", f"A job definition is a mapping of keys such as job_name and actions, not {_kind(job)}.")
    protocols = job.get("protocols")
    multinode = isinstance(protocols, dict) and "lava-multinode" in protocols
    extra = tuple(extra_context_variables)
    _top_level(extra, multinode)(job, "")
    _check_job_rules(job, multinode)
    return job


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~10x faster
    """(C)SafeLoader that rejects duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    mark = key_node.start_mark
                    where = f"Line {mark.line + 1}, column {mark.column + 1}"
                    _fail("", f"{where}: the key {key!r} appears twice in the same mapping; keep one.")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_size(value: Any, depth: int, active: set[int], sizes: dict[int, int]) -> int:
    # YAML aliases can make a small text expand to billions of nodes (or loop); count the
    # expanded size once per shared object before anything walks the document.
    if not isinstance(value, (dict, list)):
        return 1
    if id(value) in sizes:
        return sizes[id(value)]
    if id(value) in active:
        _fail("", "The document refers to itself through a YAML alias; remove the recursive alias.")
    if depth > MAX_DEPTH:
        _fail("", f"The document is nested more than {MAX_DEPTH} levels deep.")
    active.add(id(value))
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    total = 1 + sum(_check_size(item, depth + 1, active, sizes) for item in items)
    active.discard(id(value))
    sizes[id(value)] = total
    if total > MAX_NODES:
        _fail("", f"The document expands to more than {MAX_NODES} values; simplify it or avoid YAML aliases.")
    return total


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _fail("", f"The key {key!r} appears twice in the same JSON object; keep one.")
        result[key] = value
    return result


def parse_job(text: str) -> dict[str, Any]:
    """Parse a job definition written in YAML or JSON and validate it."""
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicates)
    except (ValueError, RecursionError):
        document = _load_yaml(text)
    if document is None:
        _fail("", "The job definition is empty; write a mapping with job_name, timeouts and actions.")
    _check_size(document, 0, set(), {})
    return validate_job(document)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # safe: a SafeLoader subclass
    except JobDefinitionError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        _fail("", f"YAML syntax error{where}: {_sentence_part(exc.problem or exc.context)}.")
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. a timestamp like 2024-13-45
        _fail("", f"The text is not valid YAML: {_sentence_part(exc)}.")
    except RecursionError:
        _fail("", f"The document is nested more than {MAX_DEPTH} levels deep.")
