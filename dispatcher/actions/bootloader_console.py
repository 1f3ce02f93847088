"""Talking to a bootloader on the console: stop autoboot, type commands, read its error messages.

``bootloader-interrupt`` waits for the interrupt prompt ("Hit any key to stop autoboot"),
sends the interrupt character and waits for the bootloader's prompt. ``bootloader-commands``
types each command (``boot_character_delay`` between characters, as slow consoles need)
and waits for the prompt after each but the last; after the last it waits for the final
message ("Starting kernel") and the kernel's first words (``kernel-start-message``).

The device's ``error-messages`` (and the job's) end the boot at once, naming the command and
the message: what says the board could not fetch or reach something (TFTP, DHCP, timeouts)
is an Infrastructure error; what says the job's files are unusable (bad image magic, wrong
ramdisk format) is a Job error.
"""

from __future__ import annotations

import re
from typing import ClassVar

from ..console import Console, ConsoleEOF, ConsoleTimeout
from ..context import JobContext
from ..errors import DutlabError, InfrastructureError, JobError
from .bootloader import BootloaderAction, Settings

#: bootloader messages that mean the job's files cannot be booted (anything else: the lab)
IMAGE_ERRORS = re.compile(r"magic|image format|ramdisk image|corrupt|overlaps|device tree|kernel_comp|"
                          r"checksum|\bcrc\b|unsupported architecture|reserved memory", re.IGNORECASE)
FETCH_COMMANDS = ("tftp", "tftpboot", "dhcp", "bootp", "pxe", "nfs", "wget")


def _console(ctx: JobContext, action: str) -> Console:
    if ctx.console is None:
        raise InfrastructureError(f"{action}: no console is connected")
    return ctx.console


def _last_output(console: Console) -> str:
    return " | ".join(line for line in console.tail(3) if line.strip()) or "nothing"


def _character_delay(ctx: JobContext) -> float:
    delay = (ctx.device.get("character_delays") or {}).get("boot")
    return float(delay) / 1000 if delay else 0.0


class BootloaderInterrupt(BootloaderAction):
    name = "bootloader-interrupt"
    description = "stop the bootloader's autoboot at its interrupt prompt and wait for its prompt"
    summary = "interrupt the bootloader"

    def run(self, ctx: JobContext) -> None:
        console = _console(ctx, self.name)
        found = self.settings(ctx)
        if not found.needs_interrupt:
            ctx.logger.info(f"the device needs no interrupt: waiting for the prompt {found.prompt!r}")
            self._wait(ctx, console, found.prompt, "the bootloader prompt", "")
            return
        self._wait(ctx, console, found.interrupt_prompt, "the interrupt prompt",
                   "; check that the board is powered (its power commands ran, the PDU port is right) "
                   f"and that its console is this connection ({console.name})")
        console.character_delay = _character_delay(ctx)
        if found.interrupt_control:
            for char in found.interrupt_control:
                console.sendcontrol(char)
        elif found.interrupt_newline:
            console.sendline(found.interrupt_character)
        else:
            console.send(found.interrupt_character)
        console.character_delay = 0.0
        self._wait(ctx, console, found.prompt, "the bootloader prompt",
                   f" after the interrupt ({found.interrupt_character!r}); check the device's bootloader_prompt "
                   "and interrupt character")

    def _wait(self, ctx: JobContext, console: Console, pattern: str, what: str, advice: str) -> None:
        waited = ctx.wait_timeout()
        try:
            console.expect([pattern], timeout=waited)
        except ConsoleTimeout:
            raise InfrastructureError(f"{self.name}: {what} {pattern!r} did not appear within {waited:.0f} s "
                                      f"(last console output: {_last_output(console)}){advice}") from None
        except ConsoleEOF:
            raise console.closed_error(f"while waiting for {what} {pattern!r}") from None


class BootloaderCommands(BootloaderAction):
    name = "bootloader-commands"
    description = "type the boot commands at the bootloader prompt, watching for its error messages"
    summary = "bootloader commands"
    #: what this bootloader prints on any failure of its kind, watched beside the device's list
    builtin_errors: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: JobContext) -> None:
        console = _console(ctx, self.name)
        found = self.settings(ctx)
        commands = ctx.bootloader_commands
        if not commands:
            raise JobError(f"{self.name}: there are no boot commands to type (bootloader-overlay left none)")
        console.character_delay = _character_delay(ctx)
        try:
            for command in commands[:-1]:
                console.sendline(command)
                self._wait(ctx, console, found, command, [found.prompt], "the bootloader prompt")
            console.sendline(commands[-1])
        finally:
            console.character_delay = 0.0
        if found.final_message:
            # the prompt coming back means the boot command failed with a message not in the list
            index = self._wait(ctx, console, found, commands[-1], [found.final_message, found.prompt],
                               "the final message")
            if index == 1:
                raise JobError(f"{self.name}: {found.method} returned to its prompt after {commands[-1]!r} "
                               f"without starting the kernel (last console output: {_last_output(console)})")
        if found.kernel_start_message:
            self._wait(ctx, console, found, commands[-1], [found.kernel_start_message], "the kernel's first message",
                       kernel=True)

    def _wait(self, ctx: JobContext, console: Console, found: Settings, command: str, patterns: list[str],
              what: str, kernel: bool = False) -> int:
        waited = ctx.wait_timeout()
        try:
            index = console.expect([*patterns, *found.error_messages, *self.builtin_errors], timeout=waited)
        except ConsoleTimeout:
            last = _last_output(console)
            if kernel:
                raise JobError(f"{self.name}: the kernel did not print {patterns[0]!r} within {waited:.0f} s of "
                               f"{command!r} (last console output: {last}); check the kernel's console= "
                               "argument and that the kernel suits this board") from None
            raise InfrastructureError(f"{self.name}: {what} {patterns[0]!r} did not appear within {waited:.0f} s "
                                      f"after {command!r} (last console output: {last})") from None
        except ConsoleEOF:
            raise console.closed_error(f"after {command!r}") from None
        if index >= len(patterns):
            raise bootloader_error(self.name, found.method, command, _error_line(console))
        return index


def _error_line(console: Console) -> str:
    """The whole console line that holds the matched message (often part of a longer line)."""
    line = console.before.rsplit("\n", 1)[-1] + console.match.group(0)
    try:
        rest = console.readline(timeout=1.0) or ""
    except ConsoleEOF:
        rest = ""
    console.settle(quiet=0.3, timeout=2.0)  # what follows the message reaches the log too
    return (line + rest).strip()


def bootloader_error(action: str, method: str, command: str, line: str) -> DutlabError:
    """The error for a bootloader message ``line`` printed after ``command``."""
    if IMAGE_ERRORS.search(line):
        return JobError(f"{action}: {method} refused the job's files: {line!r} after {command!r}; check the "
                        "deploy's kernel type and images")
    words = command.split()
    if not words or words[0] not in FETCH_COMMANDS:
        return InfrastructureError(f"{action}: {method} printed {line!r} after {command!r}")
    dhcp = words[0] in ("dhcp", "bootp")
    if dhcp and not re.search(r"TFTP|not found", line, re.IGNORECASE):
        what = "the board got no DHCP answer; check the lab's DHCP server and the board's network link"
    else:
        if len(words) >= 3:
            name = repr(words[2])
        elif dhcp:  # dhcp with autoload on fetches the boot file the DHCP server names
            name = "the DHCP server's boot file (type 'setenv autoload no' before dhcp to fetch nothing)"
        else:
            name = "the file named by the bootfile variable"
        what = (f"the board could not fetch {name}; check the TFTP server (its root must be the worker's TFTP root) "
                "and the board's network link")
    return InfrastructureError(f"{action}: {method} printed {line!r} after {command!r}: {what}")
