"""connect-device: a real board's console, reached with the device's ``commands.connect``.

Labs export a board's UART as a telnet port of ser2net (``telnet <host> <port>``); the
connection command is spawned as the job's console. A telnet that cannot connect exits at
once, so the failure is reported as what it is: nothing listens on that port, with the
place to look. A console that closes later says the same (ser2net drops the connection when
the board's serial device node is gone).
"""

from __future__ import annotations

import shlex

from ..console import Console, ConsoleEOF, ConsoleTimeout
from ..context import JobContext
from ..errors import DutlabError, InfrastructureError
from ..pipeline import Action

#: seconds to wait for telnet to say it connected (some telnets print nothing: then go on)
TELNET_BANNER_WAIT = 5.0


class ConnectDevice(Action):
    name = "connect-device"
    description = "spawn the device's connection command (e.g. telnet to ser2net) as the console"
    summary = "connect to the console"

    def validate(self, ctx: JobContext) -> list[str]:
        if ctx.console is None and not connect_command(ctx):
            return [f"device {ctx.device.get('hostname', '')} has no commands.connect to reach its console"]
        return []

    def run(self, ctx: JobContext) -> None:
        if ctx.console is not None and ctx.console.alive():
            ctx.logger.debug("console already connected")
            return
        argv = shlex.split(connect_command(ctx))
        ctx.logger.info(f"connecting: {shlex.join(argv)}")
        hint = _telnet_hint(argv)
        try:
            ctx.console = Console.spawn(argv, ctx.logger, name=shlex.join(argv),
                                        on_exit=lambda console, when: _closed(console, when, hint))
        except Exception as exc:  # noqa: BLE001 - pexpect raises plain exceptions for a missing program
            raise InfrastructureError(f"cannot start the connection command {shlex.join(argv)}: {exc}") from None
        if hint:
            _wait_for_telnet(ctx, ctx.console, argv, hint)
        ctx.logger.info(f"console connected, pid {ctx.console.pid}")


def connect_command(ctx: JobContext) -> str:
    commands = ctx.device.get("commands") or {}
    return str(commands.get("connect") or "")


def _telnet_target(argv: list[str]) -> tuple[str, str] | None:
    """(host, port) of a ``telnet [options] host [port]`` command, None for other commands."""
    if not argv or argv[0].rsplit("/", 1)[-1] != "telnet":
        return None
    words = [word for word in argv[1:] if not word.startswith("-")]
    if not words:
        return None
    return words[-2] if len(words) >= 2 else words[0], words[-1] if len(words) >= 2 else "23"


def _telnet_hint(argv: list[str]) -> str:
    target = _telnet_target(argv)
    if target is None:
        return ""
    host, port = target
    return (f"check that ser2net runs on {host} with port {port} in its configuration, "
            "and that the board's serial device node exists")


def _wait_for_telnet(ctx: JobContext, console: Console, argv: list[str], hint: str) -> None:
    host, port = _telnet_target(argv) or ("", "")
    try:
        index = console.expect([r"Escape character is", r"Unable to connect to remote host:?\s*([^\r\n]*)"],
                               timeout=min(TELNET_BANNER_WAIT, ctx.wait_timeout()))
    except ConsoleTimeout:
        return  # a telnet that prints no banner: the first wait for the board will tell
    except ConsoleEOF:
        index, reason = 1, "telnet exited"
    else:
        reason = console.match.group(1).strip() if index == 1 else ""
    if index == 1:
        console.close()
        raise InfrastructureError(f"connect-device: telnet could not connect to {host}:{port} "
                                  f"({reason or 'no reason given'}): {hint}")


def _closed(console: Console, when: str, hint: str) -> DutlabError:
    status = console.close()
    last = " | ".join(line for line in console.tail(3) if line.strip()) or "nothing"
    advice = f"; {hint}" if hint else ""
    return InfrastructureError(f"the console connection ({console.name}) closed {when} "
                               f"(last output: {last}; exit code {status}){advice}")
