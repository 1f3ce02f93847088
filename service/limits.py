"""Limits applied before anything parses a request: body size per caller, JSON depth and numbers,
ids in paths, and the C allocator settings that let the server's memory shrink after a burst.

Every refusal is a 4xx that names the limit (docs/admin-cli.md, "Request limits and load").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import math
import re
import threading
import time
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from bottle import HTTPError, request

from .config import Settings
from .errors import ApiError

#: deepest nesting of a JSON body (a job definition as JSON is a handful of levels)
MAX_JSON_DEPTH = 100
#: integers anywhere in a request fit the database's 64-bit columns
INT_RANGE = range(-(2**63), 2**63)
#: bytes read at a time while draining a refused body (never the whole body at once)
_CHUNK = 64 * 1024
#: cheroot itself closes connections whose body exceeds this many times the largest limit
SERVER_CAP_FACTOR = 8

# a \u0000 escape that is not itself escaped (an odd number of backslashes before the u)
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
# brackets to +1 / -1 as signed bytes; every other byte deleted
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_OTHERS = bytes(b for b in range(256) if b not in b"[]{}")


def body_limit(settings: Settings, kind: str, authenticated: bool) -> int:
    """Largest body for a route whose auth kind is `kind`, for a caller with or without credentials."""
    if kind in ("worker", "job"):
        return settings.max_body_worker
    return settings.max_body_user if authenticated else settings.max_body_anonymous


def server_body_cap(settings: Settings) -> int:
    """cheroot's own limit (it closes the connection): far above ours, so ours answers first."""
    return SERVER_CAP_FACTOR * max(settings.max_body_anonymous, settings.max_body_user, settings.max_body_worker)


class RequestLimitsPlugin:
    """Check the headers and read the body, up to the route's limit for this caller, before any
    handler runs.

    Header values must be UTF-8 (bottle decodes them so, and would fail inside a handler). The
    body is then bottle's `request.body`; a larger one is drained in small reads (so the client
    reads the answer instead of a reset) and refused with a 413 that names the limit.
    """

    name = "dutlab-limits"
    api = 2

    def apply(self, callback: Callable, route: Any) -> Callable:
        kind = route.config.get("auth", "public")

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            settings = request.app.config["dutlab.settings"]
            authenticated = bool(request.environ.get("HTTP_AUTHORIZATION"))
            limit = body_limit(settings, kind, authenticated)
            hint = "" if authenticated or kind != "public" else \
                f" (anonymous callers; with 'Authorization: Token <secret>' up to {settings.max_body_user})"
            check_headers(request.environ)
            read_body(request.environ, limit, hint)
            try:
                return callback(*args, **kwargs)
            finally:
                # bottle's thread-local request keeps this environ until the thread's next request:
                # without this, every server thread would hold on to the last body it read
                request.environ.pop("bottle.request.body", None)

        return wrapper


def check_headers(environ: dict) -> None:
    """A 400 naming the first header whose bytes are not UTF-8 (WSGI hands them over as Latin-1),
    or for a NUL character in the path or query (PostgreSQL refuses NUL in any text)."""
    if "\x00" in environ.get("PATH_INFO", "") or "%00" in environ.get("QUERY_STRING", "") \
            or "\x00" in environ.get("QUERY_STRING", ""):
        raise ApiError(400, "the path or query holds a NUL character (%00); no name or value has one")
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str) and not value.isascii():
            try:
                value.encode("latin-1").decode("utf-8")
            except UnicodeError:
                name = key[5:].replace("_", "-").title()
                raise ApiError(400, f"the {name} header is not UTF-8 text; send ASCII") from None


def read_body(environ: dict, limit: int, hint: str = "") -> None:
    """Read the body into environ (where bottle's `request.body` finds it) or refuse it."""
    if "bottle.request.body" in environ:
        return
    stream = environ.get("wsgi.input")
    environ["dutlab.body_limit"] = limit
    if stream is None:
        data = b""
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        data = _read_chunked(stream, limit, hint)
    else:
        length = _content_length(environ)
        if length > limit:
            _drain(stream, length)
            raise ApiError(413, f"the request body has {length} bytes; the limit is {limit} bytes{hint}")
        data = _read_exact(stream, length)
    environ["bottle.request.body"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    if len(data) >= TRIM_AFTER_BYTES:
        _big_body.set()


def _content_length(environ: dict) -> int:
    text = environ.get("CONTENT_LENGTH") or "0"
    if not text.isdigit():
        raise ApiError(400, f"Content-Length must be a number of bytes, not {text[:40]!r}")
    return int(text)


def _read_exact(stream: Any, length: int) -> bytes:
    parts, remaining = [], length
    while remaining > 0:
        part = stream.read(min(remaining, 1024 * 1024))
        if not part:
            raise ApiError(400, f"the request body ended after {length - remaining} of {length} bytes")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _read_chunked(stream: Any, limit: int, hint: str) -> bytes:
    parts, size = [], 0
    try:
        while part := stream.read(_CHUNK):
            size += len(part)
            if size > limit:
                _drain(stream, None)
                raise ApiError(413, f"the request body has more than {limit} bytes; the limit is {limit} bytes{hint}")
            parts.append(part)
    except (OSError, ValueError) as exc:  # cheroot: a malformed chunk, or past its own cap
        raise ApiError(400, f"the chunked request body cannot be read: {exc}") from None
    return b"".join(parts)


def _drain(stream: Any, length: int | None) -> None:
    try:
        while length is None or length > 0:
            part = stream.read(_CHUNK if length is None else min(length, _CHUNK))
            if not part:
                return
            if length is not None:
                length -= len(part)
    except (OSError, ValueError):  # the client went away, or cheroot's own cap: nothing left to read
        return


# -- JSON ------------------------------------------------------------------------------------


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """True when arrays/objects in `raw` nest more than `limit` deep (strings are skipped).

    A pre-scan in C-speed steps: the parser is recursive and must never see such a document.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    steps = array("b", _STRING.sub(b"", raw).translate(_BRACKETS, _OTHERS))
    return len(steps) > limit and max(accumulate(steps)) > limit


def loads(raw: bytes, what: str = "the request body") -> Any:
    """JSON from `raw`, refused with a 400 when too deep, not JSON, or holding numbers out of range."""
    if json_depth_exceeds(raw, MAX_JSON_DEPTH):
        raise ApiError(400, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep; flatten it")
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        raise ApiError(400, f"{what} holds a NUL character (\\u0000) in a string; no name or value has one")
    try:
        return json.loads(raw, parse_int=_integer(what), parse_float=_finite(what), parse_constant=_constant(what))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}") from None


def _int64(text: str) -> int | None:
    """The integer `text` spells when it fits in 64 bits, else None (no int() of 5,000 digits)."""
    value = int(text) if len(text) <= 20 else None
    return value if value is not None and value in INT_RANGE else None


def _shown(text: str) -> str:
    return text[:24] + ("..." if len(text) > 24 else "")


def _integer(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int64(text)
        if value is None:
            raise ApiError(400, f"{what} holds the integer {_shown(text)}, out of range: integers must fit in 64 bits")
        return value

    return parse


def _finite(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ApiError(400, f"{what} holds the number {text[:24]}, too large for a 64-bit float")
        return value

    return parse


def _constant(what: str) -> Callable[[str], Any]:
    def parse(name: str) -> Any:
        raise ApiError(400, f"{what} holds {name}, which is not a JSON number; send a finite number")

    return parse


# -- ids in paths ----------------------------------------------------------------------------


def int_filter(config: str) -> tuple[str, Callable[[str], int], Callable[[Any], str]]:
    """Bottle's `<name:int>` wildcard, with the number checked against the database's range."""

    def to_python(text: str) -> int:
        value = _int64(text)
        if value is None:
            raise HTTPError(400, f"the number {_shown(text)} in the path is out of range: ids are below 2^63")
        return value

    return r"-?\d+", to_python, lambda value: str(int(value))


def job_id_filter(config: str) -> tuple[str, Callable[[str], str], Callable[[Any], str]]:
    """`<name:jobid>`: a job number or a MultiNode sub-id ("12.1"), each number in range."""

    def to_python(text: str) -> str:
        if any(_int64(part) is None for part in text.split(".")):
            raise HTTPError(400, f"the job id {_shown(text)} in the path is out of range: ids are below 2^63")
        return text

    # a negative number matches too, so that `/jobs/-1` says the job does not exist, not "no such endpoint"
    return r"-?\d+(?:\.\d+)?", to_python, str


# -- memory ----------------------------------------------------------------------------------


#: a body at least this large makes the trimmer hand free memory back to the system afterwards
TRIM_AFTER_BYTES = 1024 * 1024
_big_body = threading.Event()


def release_memory_after_bursts() -> bool:
    """Let the server's memory shrink back after a burst of large requests (glibc; False elsewhere).

    By default glibc raises its mmap threshold to the largest buffer freed so far, so after one
    burst every later buffer of that size comes from the heaps of the server's threads; and the
    free pages of those heaps go back to the system only from their top. A fixed mmap threshold
    and a bounded number of arenas, plus `malloc_trim(0)` (which releases free pages anywhere in
    every arena) a second after each request whose body was large, bring RSS back near idle.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt, malloc_trim = (libc.mallopt, libc.malloc_trim) if libc else (None, None)
    except (OSError, AttributeError):
        return False
    if mallopt is None or malloc_trim is None:
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    mallopt(m_mmap_threshold, 128 * 1024)
    mallopt(m_trim_threshold, 1024 * 1024)
    mallopt(m_arena_max, 4)

    def trimmer() -> None:
        while _big_body.wait():
            time.sleep(1)  # after the burst's requests have let go of their buffers
            _big_body.clear()
            malloc_trim(0)

    threading.Thread(target=trimmer, name="malloc-trim", daemon=True).start()
    return True
