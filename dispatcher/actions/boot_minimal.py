"""boot method: minimal: a board that boots by itself once it is reset.

``minimal`` connects with the device's ``commands.connect`` when no console is connected yet
(a board behind ser2net; connect.py), then resets the board with its power commands (power.py) unless
the block says ``reset: false``, then waits for the shell (login.py).
"""

from __future__ import annotations

from typing import Any

from ..context import JobContext
from ..pipeline import Action
from ..schema.common import boolean, mapping
from .common import selected
from .connect import ConnectDevice
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
