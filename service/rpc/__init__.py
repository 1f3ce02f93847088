"""XML-RPC methods with LAVA's names, parameters and return shapes (lava-interfaces.md §1).

Each namespace module (`system`, `jobs`, ...) registers small wrappers with `@exposed(name)`;
a wrapper translates XML-RPC arguments into a call of the domain functions (`lab/`) and
the domain's JSON shape into LAVA's (renaming or picking fields, never rebuilding them from
the models). `api/rpc2.py` is the
HTTP endpoint: it decodes the request, calls `dispatch` and encodes the answer.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..auth import is_admin
from ..config import Settings
from ..errors import ApiError, log_incident
from ..models import User

#: namespace modules, imported once by `methods()`
MODULES = ("system", "jobs", "results", "devices", "device_types", "workers", "tags")

#: LAVA's fault codes (linaro_django_xmlrpc): application errors reuse HTTP codes
BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT = 400, 401, 403, 404, 409
METHOD_NOT_FOUND, INTERNAL_ERROR, INVALID_REQUEST = -32601, -32603, -32600
LOGIN_REQUIRED = "Authentication with user and token required for this API."

Fault = xmlrpc.client.Fault
log = logging.getLogger("dutlab.server")


@dataclass
class Call:
    """Who calls, with which server settings."""

    user: User | None
    settings: Settings

    @property
    def username(self) -> str:
        return self.user.username if self.user else "AnonymousUser"

    def login(self) -> User:
        """The caller, or LAVA's 401 fault for anonymous calls to methods that need a user."""
        if self.user is None:
            raise Fault(UNAUTHORIZED, LOGIN_REQUIRED)
        return self.user

    def require(self, lava_perm: str) -> User:
        """LAVA checks a Django permission; dutlab's lab objects are changed by admins only."""
        user = self.login()
        if not is_admin(user):
            raise Fault(FORBIDDEN, f"User '{user.username}' is missing permission {lava_perm}.")
        return user


@dataclass
class Method:
    name: str
    fn: Callable[..., Any]
    help: str
    #: positional parameters after `call`, and how many of them are required
    params: list[inspect.Parameter] = field(default_factory=list)
    required: int = 0

    def signatures(self) -> list[list[str]]:
        """XML-RPC introspection: one [return, arg...] list per accepted arity."""
        hints = inspect.get_annotations(self.fn)
        ret = _xmlrpc_type(hints.get("return", "any"))
        types = [_xmlrpc_type(hints.get(p.name, "any")) for p in self.params]
        return [[ret, *types[:n]] for n in range(self.required, len(types) + 1)]


_REGISTRY: dict[str, Method] = {}
_TYPES = {"str": "string", "int": "int", "bool": "boolean", "dict": "struct", "list": "array",
          "Binary": "base64", "datetime": "dateTime.iso8601", "None": "nil", "float": "double"}


def _xmlrpc_type(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    options = [part.strip().split("[")[0] for part in text.split("|")]
    useful = [o for o in options if o != "None"] or options
    return _TYPES.get(useful[0].split(".")[-1], "any")


def exposed(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(call, *params)` under each of `names` (the first is the LAVA name)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters.values())[1:]
        required = sum(p.default is inspect.Parameter.empty for p in params)
        for name in names:
            _REGISTRY[name] = Method(name, fn, inspect.getdoc(fn) or "", params, required)
        return fn

    return register


def methods() -> dict[str, Method]:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return _REGISTRY


def dispatch(call: Call, name: str, params: tuple[Any, ...]) -> Any:
    """Run method `name`; every failure becomes a Fault with LAVA's codes."""
    method = methods().get(name)
    if method is None:
        raise Fault(METHOD_NOT_FOUND, f"No such method: '{name}'")
    if not method.required <= len(params) <= len(method.params):
        wanted = str(method.required) if method.required == len(method.params) else \
            f"{method.required} to {len(method.params)}"
        raise Fault(BAD_REQUEST, f"Bad request: {name} takes {wanted} argument(s), got {len(params)}")
    try:
        return method.fn(call, *params)
    except Fault:
        raise
    except ApiError as exc:
        raise Fault(exc.status, lava_message(exc.message)) from None
    except Exception:
        # a bug: the traceback goes to the server log under an incident id, the client gets LAVA's -32603
        incident = log_incident(log, f"XML-RPC {name}")
        raise Fault(INTERNAL_ERROR, f"Internal Server Error (contact server administrator for details): "
                                    f"incident {incident}") from None


# dutlab's lookups say "device 'x' does not exist"; LAVA's API says "Device 'x' was not found."
_NOT_FOUND = re.compile(r"^(device type|device|worker|tag|user|group|job) '(.*)' does not exist.*$", re.S)
_NOUNS = {"device type": "Device-type", "device": "Device", "worker": "Worker", "tag": "Tag", "user": "User",
          "group": "Group", "job": "Job"}


def lava_message(message: str) -> str:
    match = _NOT_FOUND.match(message)
    if match:
        return f"{_NOUNS[match.group(1)]} '{match.group(2)}' was not found."
    return message


def binary(text: str | None) -> xmlrpc.client.Binary | None:
    """Files travel as base64 of UTF-8 text (lavacli decodes them with binary2str)."""
    return None if text is None else xmlrpc.client.Binary(text.encode("utf-8"))


def string(value: Any, what: str) -> str:
    """A required string argument (XML-RPC clients may send anything)."""
    if not isinstance(value, str):
        raise Fault(BAD_REQUEST, f"Bad request: {what} must be a string, not {type(value).__name__}")
    return value


def optional_text(value: Any) -> str | None:
    """lavacli sends nil for options not given; str() the rest (ids come as ints or strings)."""
    return None if value is None else str(value)
