"""Processes a lab starts: each in a session of its own, stopped by its PID and process group.

Nothing here looks a process up by name. A process is known by its PID and its start time
(/proc/<pid>/stat), so a PID the kernel has since given to another process is never signalled.
Stopping a process also ends what it started: its descendants are listed by parent PID before
the signal, because dutlab-worker runs each dutlab-run in a session of its own that outlives the
worker by design (and dutlab-run puts QEMU in yet another one).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def pick_port(preferred: int) -> int:
    """`preferred` when nothing answers on it, else any free port."""
    return preferred if port_free(preferred) else free_port()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class Pid:
    """One process: its PID and its start time (clock ticks after boot, field 22 of its stat)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Pid | None:
        stat = _stat(pid)
        return None if stat is None else cls(pid, int(stat[19]))

    def exists(self) -> bool:
        """Still this process (running, or a zombie that holds its PID and group)."""
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.start

    def running(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.start and stat[0] not in ("Z", "X")

    def signal(self, sig: int, group: bool = False) -> bool:
        """Send `sig` to this process (or its process group); False when it is gone."""
        if not self.exists():
            return False
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def descendants(pid: int) -> list[int]:
    """Children of `pid`, their children and so on (from the parent PIDs in /proc/*/stat)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                kids.setdefault(int(stat[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _family(leader: Pid) -> list[Pid]:
    return [p for p in map(Pid.of, descendants(leader.pid)) if p is not None]


def _kill_family(family: list[Pid], timeout: float = 5) -> None:
    """SIGKILL every process of `family` and whatever they started since they were listed.

    Each is stopped (SIGSTOP) first, so none forks while the others are looked for.
    """
    seen = {p.pid: p for p in family}
    todo = list(family)
    while todo:
        p = todo.pop()
        if p.signal(signal.SIGSTOP):
            for q in _family(p):
                if q.pid not in seen:
                    seen[q.pid] = q
                    todo.append(q)
    for p in seen.values():
        p.signal(signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for p in seen.values():
        p.wait_gone(max(0.0, deadline - time.monotonic()))


def stop_pid(leader: Pid, sig: int = signal.SIGTERM, timeout: float = 10, tree: bool = True,
             popen: subprocess.Popen | None = None) -> int | None:
    """Stop a process started in its own session: `sig` to its group, SIGKILL after `timeout` s.

    tree=True also kills what it started in other sessions (listed before the signal); tree=False
    leaves those running (a test that restarts dutlab-worker wants its runs re-adopted).
    `popen`: our child, reaped at the end; its exit status is returned.
    """
    family = _family(leader) if tree and leader.running() else []
    if leader.running():
        leader.signal(sig, group=True)
        leader.wait_gone(timeout)
    # the leader is gone or a zombie nobody has reaped: its group number is still ours to signal
    leader.signal(signal.SIGKILL, group=True)
    if family:
        _kill_family(family)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(10)
        return popen.returncode
    leader.wait_gone(5)
    return None


class Procs:
    """Processes started by name; each in its own session, with its output appended to a log file.

    Every live `Procs` is stopped at interpreter exit too, unless `detach()` handed its processes
    over (the `make lab` state file).
    """

    def __init__(self) -> None:
        self._procs: dict[str, tuple[subprocess.Popen, Pid | None]] = {}
        _LIVE.add(self)

    def spawn(self, name: str, argv: list[str], log: Path, env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        if name in self._procs and self._procs[name][0].poll() is None:
            raise ValueError(f"{name} is already running (pid {self._procs[name][0].pid})")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, start_new_session=True)
        self._procs[name] = (proc, Pid.of(proc.pid))
        return proc

    def __contains__(self, name: str) -> bool:
        return name in self._procs

    def names(self) -> list[str]:
        return list(self._procs)

    def popen(self, name: str) -> subprocess.Popen:
        return self._procs[name][0]

    def pid(self, name: str) -> int:
        return self._procs[name][0].pid

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10, tree: bool = True) -> int | None:
        """Stop `name` (see stop_pid); its exit status, None when it was not started here."""
        entry = self._procs.pop(name, None)
        if entry is None:
            return None
        proc, ident = entry
        if ident is None:  # gone before it could be looked at
            proc.wait()
            return proc.returncode
        return stop_pid(ident, sig, timeout, tree, popen=proc)

    def stop_all(self, timeout: float = 10) -> None:
        """The last started first (a worker before the server it reports to)."""
        for name in reversed(list(self._procs)):
            self.stop(name, timeout=timeout)

    def detach(self) -> dict[str, list[int]]:
        """Forget the processes without stopping them; {name: [pid, start time]} for stop_recorded."""
        record = {name: [ident.pid, ident.start] for name, (_, ident) in self._procs.items() if ident}
        self._procs.clear()
        return record


def stop_recorded(record: dict[str, list[int] | int], timeout: float = 10) -> list[str]:
    """Stop processes `Procs.detach` recorded (another process started them); the names that ran.

    A bare PID (a record from before start times were kept) is taken for the process it names now.
    """
    stopped = []
    for name, value in reversed(list(record.items())):
        ident = Pid(*value) if isinstance(value, list) else Pid.of(value)
        if ident is not None and ident.running():
            stop_pid(ident, timeout=timeout)
            stopped.append(name)
    return stopped


_LIVE: weakref.WeakSet[Procs] = weakref.WeakSet()


def stop_everything() -> None:
    """Stop every process any live `Procs` of this interpreter started (run at exit as well)."""
    for procs in list(_LIVE):
        procs.stop_all()


atexit.register(stop_everything)
