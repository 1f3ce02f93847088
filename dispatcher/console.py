"""The DUT console: a command's stdio driven with pexpect (QEMU's serial, ``telnet host port``).

Every transport that can be a spawned command uses ``Console.spawn``; what the DUT prints
is logged as ``target`` lines and what we type as ``input``.
"""

from __future__ import annotations

import os
import re
import select
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pexpect

from .errors import DutlabError, InfrastructureError

if TYPE_CHECKING:
    from .log import JobLogger

MAX_LINE = 8192  # a DUT that never prints a newline still gets logged in pieces
#: ``on_exit(console, when)``: the error for a console whose process ended
ExitError = Callable[["Console", str], DutlabError]


class ConsoleEOF(Exception):
    """The console's process closed its output (QEMU exited, telnet lost the port)."""


class ConsoleTimeout(Exception):
    """Nothing matched within the wait."""


class _TargetLines:
    """pexpect ``logfile_read``: turns the byte stream into one ``target`` record per line."""

    def __init__(self, logger: JobLogger) -> None:
        self.logger = logger
        self.partial = ""
        self.tail: deque[str] = deque(maxlen=40)

    def write(self, text: str) -> None:
        text = self.partial + text
        *lines, self.partial = text.split("\n")
        for line in lines:
            self._emit(line)
        while len(self.partial) > MAX_LINE:
            self._emit(self.partial[:MAX_LINE])
            self.partial = self.partial[MAX_LINE:]

    def flush(self) -> None:
        """pexpect flushes after every chunk; a line is only logged once it is complete."""

    def emit_partial(self) -> None:
        """Log a pending partial line (a prompt has no newline after it)."""
        if self.partial:
            self._emit(self.partial)
            self.partial = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        self.tail.append(line)
        self.logger.target(line)


class Console:
    """Expect/send over a spawned command.

    :param child: the pexpect process whose stdio is the DUT's console.
    :param logger: receives ``target`` lines and ``input`` records.
    :param name: what the console is, for error messages (``QEMU``, ``telnet localhost 7001``).
    :param on_exit: builds the error for "the process ended" with the transport's own evidence
        (QEMU: its last words, how soon it died); called as ``on_exit(console, when)``. Without
        it, ``closed_error`` names the console, its last lines and the exit code.
    """

    def __init__(self, child: pexpect.spawn, logger: JobLogger, name: str,
                 on_exit: ExitError | None = None) -> None:
        self.child = child
        self.logger = logger
        self.name = name
        self._lines = _TargetLines(logger)
        child.logfile_read = self._lines
        #: seconds between characters when typing (the device's ``character_delays``)
        self.character_delay = 0.0
        self._on_exit = on_exit

    @classmethod
    def spawn(cls, argv: Sequence[str], logger: JobLogger, name: str = "",
              env: Mapping[str, str] | None = None, cwd: Path | None = None,
              on_exit: ExitError | None = None) -> Console:
        """Start ``argv`` on a pty in its own session (so one killpg stops all of it)."""
        child = pexpect.spawn(argv[0], list(argv[1:]), encoding="utf-8", codec_errors="replace",
                              timeout=None, echo=False, env=dict(env) if env else None,
                              cwd=str(cwd) if cwd else None, dimensions=(24, 4096))
        # pexpect sleeps 50 ms before every send (for programs that turn echo off late, like
        # passwd): a DUT's shell has printed its prompt before we type, so it only costs time;
        # typing speed is the device's character_delays.
        child.delaybeforesend = None
        return cls(child, logger, name or argv[0], on_exit)

    @property
    def pid(self) -> int:
        return self.child.pid

    def alive(self) -> bool:
        return self.child.isalive()

    def tail(self, lines: int = 10) -> list[str]:
        """The last lines the DUT printed, for error messages."""
        self._lines.emit_partial()
        return list(self._lines.tail)[-lines:]

    # -- expect -----------------------------------------------------------------------------

    def expect(self, patterns: Sequence[str | re.Pattern[str]], timeout: float) -> int:
        """Index of the first pattern (regex) seen within ``timeout`` seconds.

        :raises ConsoleTimeout: nothing matched in time.
        :raises ConsoleEOF: the console's process closed its output.
        """
        try:
            index = self.child.expect(list(patterns), timeout=max(0.0, timeout))
        except pexpect.TIMEOUT:
            raise ConsoleTimeout(f"no match for {_show(patterns)} within {timeout:.0f} s") from None
        except pexpect.EOF:
            self._lines.emit_partial()
            raise ConsoleEOF(f"{self.name} closed the console") from None
        self._lines.emit_partial()
        return index

    @property
    def before(self) -> str:
        return self.child.before or ""

    @property
    def match(self) -> re.Match[str]:
        return self.child.match

    def readline(self, timeout: float) -> str | None:
        """The next line without its line ending, or None if none completed in time.

        :raises ConsoleEOF: the console's process closed its output.
        """
        try:
            self.child.expect(["\n"], timeout=max(0.0, timeout))
        except pexpect.TIMEOUT:
            return None
        except pexpect.EOF:
            self._lines.emit_partial()
            raise ConsoleEOF(f"{self.name} closed the console") from None
        return self.child.before.rstrip("\r")

    def settle(self, quiet: float = 0.5, timeout: float = 5.0) -> None:
        """Wait until the DUT has printed nothing for ``quiet`` seconds (or ``timeout`` passes)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.child.expect([pexpect.TIMEOUT], timeout=quiet)
                break
            except pexpect.EOF:
                break
        self._lines.emit_partial()

    # -- send -------------------------------------------------------------------------------

    def sendline(self, text: str = "", log: bool = True) -> None:
        if log:
            self.logger.input(text)
        self._send(text + "\n")

    def send(self, text: str) -> None:
        """Type ``text`` without a newline (a bootloader's interrupt character)."""
        self.logger.input(text)
        self._send(text)

    def sendcontrol(self, char: str) -> None:
        self.child.sendcontrol(char)

    def _send(self, text: str) -> None:
        if not self.character_delay:
            self.child.send(text)
            return
        for char in text:
            self.child.send(char)
            time.sleep(self.character_delay)

    # -- stop -------------------------------------------------------------------------------

    def close(self, grace: float = 3.0) -> int | None:
        """Stop the console's process group (TERM, then KILL) and return its exit status."""
        self._lines.emit_partial()
        if self.child.isalive():
            _killpg(self.child.pid, signal.SIGTERM)
            if not _wait_exit(self.child, grace):
                _killpg(self.child.pid, signal.SIGKILL)
                _wait_exit(self.child, grace)
        if not self.child.isalive():
            # ptyprocess sleeps 0.1 s after closing the pty "to let the kernel update the status";
            # the process is reaped already, so there is nothing to wait for
            self.child.ptyproc.delayafterclose = 0.0
        self.child.close(force=True)
        return self.exit_status()

    def closed_error(self, when: str) -> DutlabError:
        """The error for a console whose process ended (QEMU exited, telnet lost the port)."""
        if self._on_exit is not None:
            return self._on_exit(self, when)
        status = self.close()
        last = " | ".join(line for line in self.tail(3) if line.strip())
        return InfrastructureError(f"{self.name} ended {when}: {last} (exit code {status})")

    def exit_status(self) -> int | None:
        """Exit code, or minus the signal number, once the process has ended."""
        if self.child.isalive():
            return None
        if self.child.signalstatus is not None:
            return -self.child.signalstatus
        return self.child.exitstatus


def _wait_exit(child: pexpect.spawn, timeout: float) -> bool:
    """Wait up to ``timeout`` s for the child to exit (reaping it); False if it still runs.

    A pidfd becomes readable the moment the process exits, so the wait ends then and not at the
    next tick of a polling loop; without pidfd_open (old kernels), poll every 10 ms.
    """
    end = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        fd = None
    try:
        while child.isalive():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if fd is None:
                time.sleep(min(0.01, left))
            else:
                select.select([fd], [], [], left)
        return True
    finally:
        if fd is not None:
            os.close(fd)


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the child is a session (and group) leader: pexpect used setsid
    except ProcessLookupError:
        pass


def _show(patterns: Sequence[str | re.Pattern[str]]) -> str:
    return ", ".join(repr(p.pattern if isinstance(p, re.Pattern) else p) for p in patterns)
