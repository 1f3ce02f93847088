"""The field checks every lab module shares: names, texts, numbers, labels, lookups, pages.

Each raises `ApiError(400, sentence, path)` naming the field, so a bad value gets the same
answer from REST, XML-RPC and the admin CLI.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from peewee import IntegrityError, Model

from ..db import database
from ..errors import ApiError, bad_request, conflict
from ..states import Labelled

#: hostnames, worker names, device-type and tag names: no '/', no spaces, no leading '.'
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_fields(data: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    """Refuse unknown fields (naming the first) and missing required ones."""
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            raise bad_request(f"unknown field '{key}'; known fields: {', '.join(allowed)}", str(key))
    for key in required:
        if data.get(key) in (None, ""):
            raise bad_request(f"'{key}' is required", key)


def name(value: Any, path: str, what: str, max_length: int = 100) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(f"{what} must be a non-empty string", path)
    if len(value) > max_length or not NAME_RE.match(value):
        raise bad_request(f"{what} '{value}' is not valid: use at most {max_length} letters, digits, "
                          "'.', '_', '+' or '-', starting with a letter or digit", path)
    return value


def text(value: Any, path: str, max_length: int | None = None) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"'{path}' must be a string, not {type(value).__name__}", path)
    if max_length is not None and len(value) > max_length:
        raise bad_request(f"'{path}' is longer than {max_length} characters", path)
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"'{path}' must be true or false, not {value!r}", path)
    return value


def integer(value: Any, path: str, minimum: int = 0) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"'{path}' must be an integer, not {value!r}", path)
    if value < minimum:
        raise bad_request(f"'{path}' must be >= {minimum}, not {value}", path)
    return value


def string_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad_request(f"'{path}' must be a list of names", path)
    return list(dict.fromkeys(value))


def label(enum: type[Labelled], value: Any, path: str) -> Labelled:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(f"'{path}' must be one of {', '.join(enum.labels())}", path)
    try:
        return enum.parse(value)
    except ValueError as exc:
        raise bad_request(str(exc), path) from None


def lookup(model: type[Model], field: str, value: Any, what: str, path: str | None = None) -> Any:
    """The row whose `field` is `value`: a 404, or a 400 at `path` when it is named inside a body."""
    row = model.get_or_none(getattr(model, field) == value) if isinstance(value, str) else None
    if row is None:
        if path is None:
            raise ApiError(404, f"{what} '{value}' does not exist")
        raise bad_request(f"{what} '{value}' does not exist", path)
    return row


def insert(create: Callable[[], Model], what: str, path: str) -> Model:
    """Run `create` in a savepoint; a unique-constraint race becomes a 409, not a 500."""
    try:
        with database.atomic():
            return create()
    except IntegrityError:
        raise conflict(f"{what} already exists", path) from None


def iso(value: dt.datetime | None) -> str | None:
    """A time as JSON shows it: ISO 8601 UTC with a Z (the default `time` of every JSON shape)."""
    return value.isoformat() + "Z" if value else None


def as_datetime(value: dt.datetime | None) -> dt.datetime | None:
    """A time left as it is: XML-RPC sends datetimes (dateTime.iso8601) where JSON has text."""
    return value


def page(rows: list, limit: Any = None, offset: Any = None, serialize: Callable = lambda r: r,
         many: Callable[[list], list] | None = None) -> dict:
    """One page of a list as `{"count": N, "results": [...]}` (LAVA's LimitOffset, 50 by default);
    `many` serializes the whole page at once (a fixed number of queries for any page size)."""
    limit = min(integer(limit, "limit", 1), 1000) if limit not in (None, "") else 50
    offset = integer(offset, "offset") if offset not in (None, "") else 0
    chunk = rows[offset:offset + limit]
    return {"count": len(rows), "results": many(chunk) if many else [serialize(r) for r in chunk]}


def grouped(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    """{key: [value, ...]} of (key, value) rows in their order: what a page of objects lists of each
    (its devices, groups, permissions), read with one query for the whole page."""
    out: dict[Any, list[Any]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def names_by_id(model: type[Model], attr: str, keys: set[int | None]) -> dict[int, str]:
    """{id: model.attr} for these ids, in one query; it runs even for none, so that a page costs the
    same number of queries whatever it shows."""
    keys.discard(None)
    return dict(model.select(model.id, getattr(model, attr)).where(model.id.in_(sorted(keys))).tuples())
