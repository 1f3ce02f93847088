"""boot method: minimal, and the login/prompt wait every boot method ends with.

``auto-login-action`` watches a connected console until a shell prompt: it answers the
login and password prompts (``auto_login``), runs ``login_commands``, and ends the boot
with a clear error on a kernel panic or a boot error message instead of waiting for the
timeout. ``minimal`` connects with the device's ``commands.connect`` when no console is
connected yet (a board behind ser2net), then resets the board with its power commands
(power.py) unless the block says ``reset: false``.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..console import Console, ConsoleEOF, ConsoleTimeout
from ..context import JobContext
from ..errors import DutlabError, InfrastructureError, JobError, JobTimeout
from ..pipeline import Action
from .common import as_list, method_offered
from .power import reset_actions

PANIC_PATTERNS = (r"Kernel panic - not syncing[^\r\n]*", r"---\[ end Kernel panic[^\r\n]*")
LOGIN_FAILED = r"Login incorrect"


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    if params.get("method") != "minimal":
        return False, f"minimal: not method {params.get('method')!r}"
    return method_offered(device, "boot", "minimal")


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


class AutoLogin(Action):
    name = "auto-login-action"
    description = "wait for the shell prompt, logging in when asked; stop at a kernel panic"
    summary = "wait for the shell"

    def validate(self, ctx: JobContext) -> list[str]:
        if not as_list(self.params.get("prompts")):
            return ["boot needs prompts: the regexes of the shell prompt to wait for"]
        return []

    def run(self, ctx: JobContext) -> None:
        console = _console(ctx)
        ctx.prompts = as_list(self.params.get("prompts"))
        delay = (ctx.device.get("character_delays") or {}).get("boot")
        console.character_delay = float(delay) / 1000 if delay else 0.0
        login = self.params.get("auto_login") or {}
        _LoginDialog(ctx, console, login, self._errors(ctx)).run()
        for command in as_list(login.get("login_commands")):
            console.sendline(command)
            _LoginDialog(ctx, console, {}, self._errors(ctx)).run()
        console.character_delay = 0.0

    def _errors(self, ctx: JobContext) -> list[str]:
        return [] if self.params.get("ignore_kernel_messages") else list(PANIC_PATTERNS)


def _console(ctx: JobContext) -> Console:
    if ctx.console is None:
        raise InfrastructureError("auto-login-action: no console is connected")
    return ctx.console


class _LoginDialog:
    """One wait for the prompt, answering login/password prompts on the way."""

    def __init__(self, ctx: JobContext, console: Console, login: dict[str, Any], errors: list[str]) -> None:
        self.ctx, self.console, self.login = ctx, console, login
        self.steps: list[tuple[str, str]] = [("error", p) for p in errors]
        self.steps += [("prompt", p) for p in ctx.prompts]
        if login:
            self.steps += [("login", str(login["login_prompt"])), ("failed", LOGIN_FAILED)]
            if login.get("password_prompt"):
                self.steps.append(("password", str(login["password_prompt"])))
        self.waiting_for = "the login prompt" if login else "the shell prompt"

    def run(self) -> None:
        while True:
            kind = self._next()
            if kind == "prompt":
                return
            if kind == "error":
                self._boot_error()
            elif kind == "failed":
                raise JobError(f"auto_login: {LOGIN_FAILED!r} after logging in as {self.login['username']!r}: "
                               "check username and password")
            elif kind == "login":
                self.console.sendline(str(self.login["username"]))
                self.waiting_for = "the password prompt" if self.login.get("password_prompt") else "the shell prompt"
            elif kind == "password":
                self.console.sendline(str(self.login["password"]), log=False)
                self.ctx.logger.input("[password]")
                self.waiting_for = "the shell prompt"

    def _next(self) -> str:
        self.timeout = self.ctx.wait_timeout()
        try:
            index = self.console.expect([p for _, p in self.steps], timeout=self.timeout)
        except ConsoleTimeout:
            raise JobTimeout(self._timeout_message()) from None
        except ConsoleEOF:
            raise closed_error(self.console, f"while waiting for {self.waiting_for}") from None
        return self.steps[index][0]

    def _timeout_message(self) -> str:
        wanted = [p for kind, p in self.steps if kind in ("prompt", "login", "password")]
        last = " | ".join(line for line in self.console.tail(3) if line.strip()) or "nothing"
        return (f"auto-login-action: {self.waiting_for} did not appear within {self.timeout:.0f} s "
                f"(matching {', '.join(map(repr, wanted))}; last console output: {last})")

    def _boot_error(self) -> None:
        line = self.console.match.group(0).strip()
        self.console.settle(quiet=0.5, timeout=2.0)  # let the trace reach the log
        raise JobError(f"the boot failed: {line!r} on the console while waiting for {self.waiting_for}")


def closed_error(console: Console, when: str) -> DutlabError:
    """The error for a console whose process ended (QEMU exited, telnet lost the port)."""
    if console.describe_exit is not None:
        return console.describe_exit(when)
    status = console.close()
    last = " | ".join(line for line in console.tail(3) if line.strip())
    return InfrastructureError(f"{console.name} ended {when}: {last} (exit code {status})")

