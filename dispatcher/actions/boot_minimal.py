"""boot method: minimal: a board that boots by itself once it is reset.

``minimal`` connects with the device's ``commands.connect`` when no console is connected yet
(a board behind ser2net), then resets the board with its power commands (power.py) unless
the block says ``reset: false``, then waits for the shell (login.py).
"""

from __future__ import annotations

import shlex
from typing import Any

from ..console import Console
from ..context import JobContext
from ..errors import InfrastructureError
from ..pipeline import Action
from ..schema.common import boolean, mapping
from .common import selected
from .login import BOOT_FIELDS, AutoLogin
from .power import reset_actions

KIND, METHOD = "boot", "minimal"
SCHEMA = mapping({**BOOT_FIELDS, "reset": boolean, "pre_power_command": boolean, "pre_os_command": boolean})


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    return selected(device, params, KIND, "method", METHOD)


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    top = MinimalBoot(params)
    # Connect first, then reset: the console then shows the board's whole boot.
    top.children = [ConnectDevice(params), *reset_actions(ctx, params), AutoLogin(params)]
    return top


class MinimalBoot(Action):
    name = "minimal-boot"
    description = "connect to a device that boots by itself and wait for its shell"
    summary = "minimal boot"


class ConnectDevice(Action):
    name = "connect-device"
    description = "spawn the device's connection command (e.g. telnet to ser2net) as the console"
    summary = "connect to the console"

    def validate(self, ctx: JobContext) -> list[str]:
        if ctx.console is None and not _connect_command(ctx):
            return [f"device {ctx.device.get('hostname', '')} has no commands.connect to reach its console"]
        return []

    def run(self, ctx: JobContext) -> None:
        if ctx.console is not None and ctx.console.alive():
            ctx.logger.debug("console already connected")
            return
        argv = shlex.split(_connect_command(ctx))
        ctx.logger.info(f"connecting: {shlex.join(argv)}")
        try:
            ctx.console = Console.spawn(argv, ctx.logger, name=shlex.join(argv))
        except Exception as exc:  # noqa: BLE001 - pexpect raises plain exceptions for a missing program
            raise InfrastructureError(f"cannot start the connection command {shlex.join(argv)}: {exc}") from None
        ctx.logger.info(f"console connected, pid {ctx.console.pid}")


def _connect_command(ctx: JobContext) -> str:
    commands = ctx.device.get("commands") or {}
    return str(commands.get("connect") or "")
