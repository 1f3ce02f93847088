"""system.*: version, identity and XML-RPC introspection.

`system.version` answers LAVA_API_VERSION, not dutlab's own version: lavacli turns the string
into (year, month) and picks sub-commands and argument counts from it (docs/lava-migration.md
lists what 2025.12 selects). dutlab's version is on GET /api/v1/system/version.
"""

from __future__ import annotations

import time
from typing import Any

from . import BAD_REQUEST, METHOD_NOT_FOUND, Call, Fault, dispatch, exposed, methods

#: the LAVA release whose XML-RPC behaviour dutlab reproduces
LAVA_API_VERSION = "2025.12"
#: bounds of one system.multicall: calls, and seconds after which the remaining calls are not run
MULTICALL_MAX, MULTICALL_SECONDS = 100, 1.0


@exposed("system.version")
def version(call: Call) -> str:
    """The LAVA API level this server implements, as a YYYY.MM string."""
    return LAVA_API_VERSION


@exposed("system.api_version")
def api_version(call: Call) -> int:
    """The XML-RPC API generation (LAVA's is 2)."""
    return 2


@exposed("system.whoami")
def whoami(call: Call) -> str | None:
    """The authenticated username, or nil for anonymous calls."""
    return call.user.username if call.user else None


@exposed("system.master_config")
def master_config(call: Call) -> dict:
    """Event settings as LAVA reports them; dutlab publishes no ZMQ events."""
    return {"EVENT_TOPIC": "org.dutlab", "EVENT_SOCKET": "", "EVENT_NOTIFICATION": False,
            "LOG_SIZE_LIMIT": 0}


@exposed("system.listMethods")
def list_methods(call: Call) -> list:
    """Every method name this server answers."""
    return sorted(methods())


@exposed("system.methodHelp")
def method_help(call: Call, name: str) -> str:
    """The documentation of method `name`."""
    return _method(name).help


@exposed("system.methodSignature")
def method_signature(call: Call, name: str) -> list:
    """[return type, parameter types...] for each number of parameters `name` accepts."""
    return _method(name).signatures()


@exposed("system.getCapabilities")
def capabilities(call: Call) -> dict:
    """The XML-RPC extensions spoken here."""
    return {
        "introspect": {"specUrl": "http://xmlrpc-c.sourceforge.net/xmlrpc-c/introspection.html", "specVersion": 1},
        "nil": {"specUrl": "http://ontosys.com/xml-rpc/extensions.php", "specVersion": 20010516},
        "system.multicall": {"specUrl": "https://mirrors.talideon.com/articles/multicall.html", "specVersion": 1},
    }


@exposed("system.multicall")
def multicall(call: Call, calls: list) -> list:
    """Run several calls (at most MULTICALL_MAX, within MULTICALL_SECONDS); each answer is [value] or a fault struct."""
    if not isinstance(calls, list):
        raise Fault(BAD_REQUEST, f"Bad request: system.multicall takes an array of {{methodName, params}} structs, "
                                 f"not {type(calls).__name__}")
    if len(calls) > MULTICALL_MAX:
        raise Fault(BAD_REQUEST, f"Bad request: system.multicall runs at most {MULTICALL_MAX} calls, got "
                                 f"{len(calls)}; split them into several requests")
    deadline = time.monotonic() + MULTICALL_SECONDS
    out: list[Any] = []
    for item in calls:
        if time.monotonic() > deadline:  # bounded work per request: the rest is refused, not queued
            out.append(_fault(BAD_REQUEST, f"not run: system.multicall stops after {MULTICALL_SECONDS} s; "
                                           "send the remaining calls again"))
        else:
            out.append(_one(call, item))
    return out


def _one(call: Call, item: Any) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get("methodName"), str):
        return _fault(BAD_REQUEST, "each call is a struct {methodName: string, params: array}")
    params = item.get("params")
    if params is not None and not isinstance(params, list):
        return _fault(BAD_REQUEST, f"the params of {item['methodName']} must be an array, "
                                   f"not {type(params).__name__}")
    if item["methodName"] == "system.multicall":
        return _fault(BAD_REQUEST, "system.multicall cannot be nested")
    try:
        return [dispatch(call, item["methodName"], tuple(params or ()))]
    except Fault as fault:
        return _fault(fault.faultCode, fault.faultString)


def _fault(code: int, text: str) -> dict:
    return {"faultCode": code, "faultString": text}


def _method(name: Any):
    method = methods().get(name) if isinstance(name, str) else None
    if method is None:
        raise Fault(METHOD_NOT_FOUND, f"No such method: '{name}'")
    return method
