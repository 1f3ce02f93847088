"""Power control of a real board: the device configuration's ``commands`` run on the worker.

``hard_reset``, ``power_on``, ``power_off`` and ``pre_power_command`` are shell commands (a
string or a list, run in order) that drive a PDU, a relay board or a lab controller; dutlab
only runs them. ``soft_reboot`` commands are typed on the board's console instead: the
device's, or a boot block's own ``soft_reboot`` (LAVA's key), which makes that boot reset a
board already running Linux from its shell rather than through the PDU.
"""

from __future__ import annotations

from typing import Any

from ..console import Console, ConsoleEOF, ConsoleTimeout
from ..context import JobContext
from ..errors import InfrastructureError
from ..pipeline import Action
from .command import run_host_command
from .common import as_list


def device_commands(ctx: JobContext, name: str) -> list[str]:
    """``commands.<name>`` of the device configuration, as a list (empty when not set)."""
    return as_list((ctx.device.get("commands") or {}).get(name))


def run_commands(ctx: JobContext, name: str) -> None:
    for command in device_commands(ctx, name):
        try:
            run_host_command(ctx, command)
        except InfrastructureError as exc:
            raise InfrastructureError(f"{name}: {exc}") from None


class PrePower(Action):
    name = "pre-power-command"
    description = "run the device's pre_power_command (boot parameter pre_power_command: true)"
    summary = "pre-power command"

    def validate(self, ctx: JobContext) -> list[str]:
        if not device_commands(ctx, "pre_power_command"):
            return [f"the boot asks for pre_power_command but device {ctx.device.get('hostname', '')} has no "
                    "commands.pre_power_command"]
        return []

    def run(self, ctx: JobContext) -> None:
        run_commands(ctx, "pre_power_command")


class ResetDevice(Action):
    """Reset the board so it boots with the console already connected.

    The boot block's ``soft_reboot`` commands typed on the console when it has them (the job
    knows the board is at a shell, e.g. a second boot); else ``hard_reset`` when the device
    has one, else ``power_off`` then ``power_on``, else the device's ``soft_reboot`` commands;
    a board with none of these boots by itself (or is already running) and is left alone.
    """

    name = "reset-device"
    description = "power-cycle or reset the board with the device's commands"
    summary = "reset the board"

    def run(self, ctx: JobContext) -> None:
        if self.params.get("soft_reboot"):
            ctx.logger.info("soft reboot: typing the boot's soft_reboot commands on the console (no power "
                            "commands for this boot)")
            self._soft_reboot(ctx, as_list(self.params["soft_reboot"]), "the boot's soft_reboot")
        elif device_commands(ctx, "hard_reset"):
            run_commands(ctx, "hard_reset")
        elif device_commands(ctx, "power_on"):
            run_commands(ctx, "power_off")
            run_commands(ctx, "power_on")
        elif device_commands(ctx, "soft_reboot"):
            self._soft_reboot(ctx, device_commands(ctx, "soft_reboot"), "the device's soft_reboot command")
        else:
            ctx.logger.info("no hard_reset, power_on or soft_reboot commands: the board is not reset")

    def _soft_reboot(self, ctx: JobContext, commands: list[str], source: str) -> None:
        if ctx.console is None:
            raise InfrastructureError("reset-device: soft_reboot needs a connected console")
        for command in commands:
            ctx.console.sendline(command)
        message = self.shutdown_message(ctx)
        if message:
            _wait_for_shutdown(ctx, ctx.console, message, commands, source)

    def shutdown_message(self, ctx: JobContext) -> str:
        """What the board prints when a soft reboot has taken hold ('': do not wait for it).

        A bootloader boot must not miss the interrupt prompt that follows, so it waits.
        """
        return ""


def _wait_for_shutdown(ctx: JobContext, console: Console, message: str, commands: list[str], source: str) -> None:
    waited = ctx.wait_timeout()
    try:
        console.expect([message], timeout=waited)
    except ConsoleTimeout:
        last = " | ".join(line for line in console.tail(3) if line.strip()) or "nothing"
        raise InfrastructureError(f"reset-device: the shutdown message {message!r} did not appear within "
                                  f"{waited:.0f} s of typing {'; '.join(commands)!r} ({source}), so the board "
                                  f"did not reboot (last console output: {last}); check {source} and the "
                                  "shutdown-message (the boot's parameters, else the device's constants)") from None
    except ConsoleEOF:
        raise console.closed_error("while waiting for the shutdown message") from None
    ctx.logger.info(f"soft reboot: the board printed {message!r}")


def reset_actions(ctx: JobContext, params: dict[str, Any]) -> list[Action]:
    """The power actions a boot block asks for (``pre_power_command``, ``reset``, default true)."""
    actions: list[Action] = []
    if params.get("pre_power_command"):
        actions.append(PrePower(params))
    if params.get("reset", True):
        actions.append(ResetDevice(params))
    return actions


def power_off(ctx: JobContext) -> None:
    """Finalize's power-off: the board is switched off after every job that can switch it off."""
    if device_commands(ctx, "power_off"):
        run_commands(ctx, "power_off")
