"""The wait every boot method ends with: from a connected console to a shell prompt.

``auto-login-action`` watches the console until a shell prompt: it answers the login and
password prompts (``auto_login``), runs ``login_commands``, and ends the boot with a clear
error on a kernel panic or a boot error message instead of waiting for the timeout.

``BOOT_FIELDS`` is the part of a boot block's check that every boot method shares (the keys
this wait reads, and LAVA's other common boot keys); a boot method adds its own keys to it.
"""

from __future__ import annotations

from typing import Any

from ..console import Console, ConsoleEOF, ConsoleTimeout
from ..context import JobContext
from ..errors import InfrastructureError, JobError, JobTimeout
from ..pipeline import Action
from ..schema.common import (
    ACTION_FIELDS,
    STRINGS,
    Check,
    boolean,
    choice,
    fail,
    join,
    kind_of,
    list_of,
    mapping,
    regex,
    string,
)
from .common import as_list

PANIC_PATTERNS = (r"Kernel panic - not syncing[^\r\n]*", r"---\[ end Kernel panic[^\r\n]*")
LOGIN_FAILED = r"Login incorrect"


# -- the keys of a boot block ---------------------------------------------------------------


def _prompts(value: Any, path: str) -> None:
    if isinstance(value, str):
        regex(value, path)
    else:
        list_of(regex, min_items=1)(value, path)


def _auto_login(value: Any, path: str) -> None:
    fields = {"login_prompt": regex, "username": string(), "password_prompt": regex,
              "password": string(), "login_commands": STRINGS}
    mapping(fields, required=("login_prompt", "username"))(value, path)
    if ("password_prompt" in value) != ("password" in value):
        missing = "password" if "password_prompt" in value else "password_prompt"
        fail(join(path, missing), "Set password_prompt and password together, or neither.")


def _transfer_overlay(value: Any, path: str) -> None:
    mapping({"download_command": string(), "unpack_command": string(), "transfer_method": choice("zmodem")},
            required=("unpack_command",))(value, path)
    if "transfer_method" not in value and "download_command" not in value:
        fail(join(path, "download_command"), "Set download_command, or transfer_method: zmodem.")


def _console_commands(value: Any, path: str) -> None:
    """``soft_reboot``: one command typed on the console, or a list of them (LAVA takes both)."""
    if isinstance(value, str):
        string()(value, path)
    elif isinstance(value, list):
        list_of(string(), min_items=1)(value, path)
    else:
        fail(path, f"Expected a command (a string) or a list of commands, got {kind_of(value)}.")


#: the keys every boot block may carry, in the order they are checked
BOOT_FIELDS: dict[str, Check] = {
    "method": string(), "prompts": _prompts, "auto_login": _auto_login, "transfer_overlay": _transfer_overlay,
    "parameters": mapping({"kernel-start-message": string(), "shutdown-message": string(),
                           "bootloader-final-message": string()}),
    "ignore_kernel_messages": boolean, "soft_reboot": _console_commands, **ACTION_FIELDS,
}


# -- the action -----------------------------------------------------------------------------


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
            raise self.console.closed_error(f"while waiting for {self.waiting_for}") from None
        return self.steps[index][0]

    def _timeout_message(self) -> str:
        wanted = [p for kind, p in self.steps if kind in ("prompt", "login", "password")]
        last = " | ".join(line for line in self.console.tail(3) if line.strip()) or "nothing"
        return (f"auto-login-action: {self.waiting_for} did not appear within {self.timeout:.0f} s "
                f"(matching {', '.join(map(repr, wanted))}; last console output: {last})")

    def _boot_error(self) -> None:
        line = self.console.match.group(0)
        if not line.endswith(("\r", "\n")):
            # The pattern matched what had arrived so far: quote the whole line, not a piece of it.
            try:
                line += self.console.readline(timeout=2.0) or ""
            except ConsoleEOF:
                pass
        line = line.strip()
        self.console.settle(quiet=0.5, timeout=2.0)  # let the trace reach the log
        raise JobError(f"the boot failed: {line!r} on the console while waiting for {self.waiting_for}")
