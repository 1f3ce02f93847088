"""Helpers several actions share: device methods, prompts, typing a command on the DUT."""

from __future__ import annotations

import re
from typing import Any

from ..console import ConsoleEOF, ConsoleTimeout
from ..context import JobContext
from ..errors import InfrastructureError, JobTimeout


def device_methods(device: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The device configuration's ``actions.<kind>.methods`` (None: the device says nothing)."""
    section = (device.get("actions") or {}).get(kind)
    if not isinstance(section, dict) or "methods" not in section:
        return None
    return section.get("methods") or {}


def method_offered(device: dict[str, Any], kind: str, method: str) -> tuple[bool, str]:
    methods = device_methods(device, kind)
    if methods is None or method in methods:
        return True, ""
    name = device.get("hostname", "this device")
    return False, f"{name} does not offer {kind} method {method!r} (it offers {', '.join(methods) or 'none'})"


def selected(device: dict[str, Any], params: dict[str, Any], kind: str, key: str,
             method: str) -> tuple[bool, str]:
    """``accepts`` of a method its block names by ``key`` (deploy ``to:``, boot ``method:``)."""
    if params.get(key) != method:
        return False, f"{method}: not {key} {params.get(key)!r}"
    return method_offered(device, kind, method)


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def shell_command(ctx: JobContext, command: str, done: str, what: str) -> re.Match[str]:
    """Type ``command`` at the DUT's shell and wait for the regex ``done`` in its output.

    ``done`` must not match the echo of ``command`` itself (write the command so that its
    text differs from its output, e.g. ``echo X''=ok`` prints ``X=ok``).
    """
    console = ctx.console
    if console is None:
        raise InfrastructureError(f"{what}: no console is connected (no boot action before this one)")
    console.sendline(command)
    try:
        console.expect([done], timeout=ctx.wait_timeout())
    except ConsoleTimeout:
        last = " | ".join(console.tail(3))
        raise JobTimeout(f"{what}: no answer matching {done!r} within {ctx.wait_timeout():.0f} s "
                         f"(last console lines: {last})") from None
    except ConsoleEOF:
        raise InfrastructureError(f"{what}: the console closed ({console.name} exited)") from None
    return console.match


def wait_for_prompt(ctx: JobContext, what: str) -> None:
    console = ctx.console
    if console is None or not ctx.prompts:
        return
    try:
        console.expect(ctx.prompts, timeout=ctx.wait_timeout())
    except ConsoleTimeout:
        raise JobTimeout(f"{what}: the shell prompt ({', '.join(map(repr, ctx.prompts))}) did not come back "
                         f"within {ctx.wait_timeout():.0f} s") from None
    except ConsoleEOF:
        raise InfrastructureError(f"{what}: the console closed ({console.name} exited)") from None
