"""An XML-RPC request body to (params, method name), refusing what a safe server must not parse.

Expat reads the encoding from the BOM or the XML declaration itself, so the checks below hold for
UTF-16 or any other encoding: a DOCTYPE (and with it every entity declaration) stops the parse
at its first byte; elements nest at most MAX_ELEMENT_DEPTH deep; integers fit in 64 bits and
doubles are finite, so no handler is ever given a number the database cannot hold.
"""

from __future__ import annotations

import math
import xml.parsers.expat
import xmlrpc.client
from typing import Any

from ..rpc import BAD_REQUEST, INVALID_REQUEST, Fault

#: <value><array><data> is three elements per level: about 20 levels of arrays or structs
MAX_ELEMENT_DEPTH = 64
_INT_RANGE = range(-(2**63), 2**63)


class _Refused(Exception):
    pass


def _refuse_dtd(*_args: Any) -> None:
    raise _Refused("DTDs and entities are not accepted")


def decode(raw: bytes) -> tuple[tuple, str]:
    """(params, method name) of a methodCall, or Fault(-32600) saying what is wrong with it."""
    target = xmlrpc.client.Unmarshaller(use_builtin_types=True)
    target.xml(None, None)  # as xmlrpc.client's parser does: expat hands over text already decoded
    parser = xml.parsers.expat.ParserCreate(None, None)
    depth = 0

    def start(tag: str, attrs: dict) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_ELEMENT_DEPTH:
            raise _Refused(f"elements nest more than {MAX_ELEMENT_DEPTH} deep (arrays and structs: about "
                           f"{MAX_ELEMENT_DEPTH // 3} levels)")
        target.start(tag, attrs)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        target.end(tag)

    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = target.data
    parser.buffer_text = True
    try:
        parser.Parse(raw, True)
        name = target.getmethodname()
        params = _params(target, name)
    except _Refused as exc:
        raise Fault(INVALID_REQUEST, f"Invalid request: {exc}") from None
    except (xml.parsers.expat.ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError, IndexError,
            KeyError, OverflowError) as exc:
        raise Fault(INVALID_REQUEST, f"Invalid request: {exc}") from None
    if not name:
        raise Fault(INVALID_REQUEST, "Invalid request: no methodName")
    _check_numbers(params, "params")
    return params, name


def _params(target: xmlrpc.client.Unmarshaller, name: str | None) -> tuple:
    try:
        return target.close()
    except xmlrpc.client.ResponseError:
        if name and not target._stack:  # a methodCall without <params>: a call with no arguments
            return ()
        raise Fault(INVALID_REQUEST, "Invalid request: not a complete methodCall document") from None


def _check_numbers(value: Any, path: str) -> None:
    # the depth is bounded above, so this recursion is too
    if isinstance(value, bool):
        return
    if isinstance(value, int) and value not in _INT_RANGE:
        raise Fault(BAD_REQUEST, f"Bad request: {path}: the integer {value} does not fit in 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise Fault(BAD_REQUEST, f"Bad request: {path}: {value} is not a finite number")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_numbers(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{path}.{key}")
