"""Building blocks of the job checks, the error they raise, and timeouts.

A check is a function ``(value, path) -> None`` that raises JobDefinitionError with the path
into the document and one sentence. The factories here (``string()``, ``mapping()``, ...)
make checks; the method modules in ``dispatcher/actions/`` compose them into the check of
their job block, and ``job.py`` into the whole job. Nothing here knows any method.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn
from urllib.parse import urlsplit

Check = Callable[[Any, str], None]


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: LAVA keys dutlab knows but does not implement: refused with their own message
LAVA_UNSUPPORTED_KEYS = words(
    "device worker reboot_to_fastboot docker services lava-xnbd postprocess uefi authorize "
    "overlay_backend archive use_cache partition sparse commands use_bootscript"
)
TIMEOUT_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
#: the longest timeout of any kind: 366 days
MAX_TIMEOUT_SECONDS = 366 * 86400
NAME_PATTERN = r"[-_a-zA-Z0-9.]+"


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


def fail(path: str, message: str) -> NoReturn:
    raise JobDefinitionError(path, message)


def join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def kind_of(value: Any) -> str:
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), f"a {type(value).__name__}")


def sentence_part(text: Any) -> str:
    # exception texts may span lines or end in a period; messages are one sentence
    return " ".join(str(text).split()).rstrip(".")


def one_of(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


# Building blocks ##################################################################


def string(pattern: str | None = None, hint: str = "", max_len: int = 0) -> Check:
    compiled = re.compile(pattern) if pattern else None

    def check(value: Any, path: str) -> None:
        if not isinstance(value, str):
            advice = "; quote it" if isinstance(value, (int, float)) else ""  # YAML read 1234567 as a number
            fail(path, f"Expected a string, got {kind_of(value)}{advice}.")
        if not value.strip():
            fail(path, "The value must not be empty.")
        if max_len and len(value) > max_len:
            fail(path, f"The value is {len(value)} characters long; at most {max_len} are allowed.")
        if compiled and not compiled.fullmatch(value):
            fail(path, f"The value {value!r} is not valid: {hint}.")

    return check


def choice(*values: Any) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or value not in values:
            fail(path, f"The value {value!r} is not allowed; use one of: {one_of(values)}.")

    return check


def boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        fail(path, f"Expected true or false, got {kind_of(value)}.")


def integer(low: int, high: int | None = None) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(path, f"Expected an integer, got {kind_of(value)}.")
        if value < low or (high is not None and value > high):
            allowed = f"{low} to {high}" if high is not None else f"{low} or more"
            fail(path, f"The value {value} is out of range; use {allowed}.")

    return check


def list_of(item: Check, min_items: int = 0) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            fail(path, f"Expected a list, got {kind_of(value)}.")
        if len(value) < min_items:
            fail(path, f"The list needs at least {min_items} item{'s' if min_items > 1 else ''}.")
        for index, entry in enumerate(value):
            item(entry, f"{path}[{index}]")

    return check


def unknown_key(key: Any, allowed: Iterable[str], path: str) -> NoReturn:
    allowed = list(allowed)
    if key in LAVA_UNSUPPORTED_KEYS:
        fail(path, f"The LAVA option {key!r} is not supported by dutlab; remove it "
                   f"(allowed: {one_of(allowed)}).")
    close = difflib.get_close_matches(str(key), allowed, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    fail(path, f"Unknown key {key!r}{guess}; allowed keys here: {one_of(allowed)}.")


def mapping(fields: dict[str, Check], required: Iterable[str] = ()) -> Check:
    required = tuple(required)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            fail(path, f"Expected a mapping, got {kind_of(value)}.")
        for key in value:
            if key not in fields:
                unknown_key(key, fields, join(path, key))
        for key in required:
            if key not in value:
                fail(join(path, key), f"The required key {key!r} is missing.")
        for key, sub in fields.items():
            if key in value:
                sub(value[key], join(path, key))

    return check


def dict_of(item: Check, min_items: int = 0, key_pattern: str = r".+", key_hint: str = "") -> Check:
    key_regex = re.compile(key_pattern)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            fail(path, f"Expected a mapping, got {kind_of(value)}.")
        if len(value) < min_items:
            fail(path, f"The mapping needs at least {min_items} entr{'ies' if min_items > 1 else 'y'}.")
        for key, entry in value.items():
            if not isinstance(key, str) or not key_regex.fullmatch(key):
                hint = f": {key_hint}" if key_hint else ""
                fail(join(path, key), f"The name {key!r} is not valid{hint}.")
            item(entry, join(path, key))

    return check


def scalar(value: Any, path: str) -> None:
    if not isinstance(value, (str, int, float, bool)):
        fail(path, f"Expected a string, number or true/false, got {kind_of(value)}.")


def single_line(value: Any, path: str) -> None:
    # Context values are rendered into the YAML device configuration and QEMU's command
    # line; control characters there are never intended.
    if not isinstance(value, (str, int)):  # bool is an int
        fail(path, f"Expected a string, an integer or true/false, got {kind_of(value)}.")
    if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
        fail(path, "The value must be one line without control characters.")


def url(schemes: tuple[str, ...] = ("http", "https", "file")) -> Check:
    def check(value: Any, path: str) -> None:
        string()(value, path)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
        except ValueError as exc:
            fail(path, f"The URL {value!r} is malformed ({exc}); write scheme://host/path.")
        if parts.scheme not in schemes:
            fail(path, f"The URL {value!r} must start with one of: {one_of(s + '://' for s in schemes)}.")
        if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
            fail(path, f"The file URL {value!r} needs an absolute path, as in file:///srv/images/vmlinuz.")
        if parts.scheme != "file" and not parts.hostname:
            fail(path, f"The URL {value!r} has no host name.")

    return check


def refused(message: str) -> Check:
    """A LAVA key dutlab knows but cannot do yet: refused at its path with its own sentence."""

    def check(value: Any, path: str) -> None:
        fail(path, message)

    return check


def regex(value: Any, path: str) -> None:
    string()(value, path)
    try:
        re.compile(value)
    except re.error as exc:
        fail(path, f"The regular expression {value!r} does not compile: {sentence_part(exc)}.")


def hexdigits(length: int) -> Check:
    return string(f"[0-9a-fA-F]{{{length}}}", f"expected {length} hexadecimal digits")


STRINGS = list_of(string())
NAME = string(NAME_PATTERN, "use letters, digits, '-', '_' and '.' only")
PARAMETERS = dict_of(scalar, key_pattern=r"[A-Za-z_][A-Za-z0-9_]*",
                     key_hint="parameter names become shell variables (letters, digits, '_')")
HEADERS = dict_of(string())
ANY_MAPPING = dict_of(lambda value, path: None)  # free-form: metadata, test install steps
COMPRESSION = choice("gz", "xz", "bz2", "zstd")

# Timeouts #########################################################################


def check_timeout(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        fail(path, f"A timeout is a mapping such as {{minutes: 5}}, got {kind_of(value)}.")
    for key in value:
        if key not in TIMEOUT_UNITS and key != "skip":
            unknown_key(key, [*TIMEOUT_UNITS, "skip"], join(path, key))
    units = [key for key in value if key in TIMEOUT_UNITS]
    if len(units) != 1:
        fail(path, f"A timeout needs exactly one of {one_of(TIMEOUT_UNITS)}, found {len(units)}.")
    unit = units[0]
    # one bound for every timeout (job, action, connection, queue): time arithmetic never overflows
    integer(1, MAX_TIMEOUT_SECONDS // TIMEOUT_UNITS[unit])(value[unit], join(path, unit))
    if "skip" in value:
        boolean(value["skip"], join(path, "skip"))


def timeout_seconds(mapping: Any, path: str = "") -> int:
    """Seconds in a timeout mapping such as {minutes: 5}; JobDefinitionError if invalid."""
    check_timeout(mapping, path)
    return sum(TIMEOUT_UNITS[unit] * count for unit, count in mapping.items() if unit in TIMEOUT_UNITS)


def describe_timeout(mapping: dict[str, Any]) -> str:
    unit, count = next((u, c) for u, c in mapping.items() if u in TIMEOUT_UNITS)
    return f"{count} {unit[:-1] if count == 1 else unit}"


TIMEOUTS = dict_of(check_timeout)

# Keys every action block may carry ##################################################


def namespace(value: Any, path: str) -> None:
    string()(value, path)
    if value in ("common", "docker-test-shell"):
        fail(path, f"The namespace {value!r} is reserved; choose another name.")


#: merged into every method's block check (LAVA's keys common to all actions)
ACTION_FIELDS: dict[str, Check] = {
    "timeout": check_timeout, "timeouts": TIMEOUTS, "failure_retry": integer(1),
    "failure_retry_interval": integer(1), "repeat": integer(1), "namespace": namespace,
    "connection-namespace": namespace, "role": list_of(string(), min_items=1),
    "protocols": dict_of(list_of(mapping({"action": string(), "request": string(), "messageID": string(),
                                          "message": dict_of(scalar), "timeout": check_timeout})),
                         key_pattern="lava-multinode", key_hint="only lava-multinode is supported"),
}
