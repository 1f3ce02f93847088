"""system.*: version, identity and XML-RPC introspection.

`system.version` answers LAVA_API_VERSION, not dutlab's own version: lavacli turns the string
into (year, month) and picks sub-commands and argument counts from it (docs/lava-migration.md
lists what 2025.12 selects). dutlab's version is on GET /api/v1/system/version.
"""

from __future__ import annotations

from typing import Any

from . import BAD_REQUEST, METHOD_NOT_FOUND, Call, Fault, dispatch, exposed, methods

#: the LAVA release whose XML-RPC behaviour dutlab reproduces
LAVA_API_VERSION = "2025.12"


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
    """Run several calls; each answer is [value] or a fault struct."""
    out: list[Any] = []
    for item in calls:
        if not isinstance(item, dict) or not isinstance(item.get("methodName"), str):
            out.append({"faultCode": BAD_REQUEST, "faultString": "each call is {methodName, params}"})
            continue
        if item["methodName"] == "system.multicall":
            out.append({"faultCode": BAD_REQUEST, "faultString": "system.multicall cannot be nested"})
            continue
        try:
            out.append([dispatch(call, item["methodName"], tuple(item.get("params") or ()))])
        except Fault as fault:
            out.append({"faultCode": fault.faultCode, "faultString": fault.faultString})
    return out


def _method(name: Any):
    method = methods().get(name) if isinstance(name, str) else None
    if method is None:
        raise Fault(METHOD_NOT_FOUND, f"No such method: '{name}'")
    return method
