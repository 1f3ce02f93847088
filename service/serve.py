"""`serve --processes N`: one listening socket, N forked server processes, a parent that supervises.

The parent binds the socket and forks; every child runs cheroot on the inherited socket, so the
connections wait in one kernel backlog and any live child takes them (with SO_REUSEPORT each child
would have its own queue, and the connections queued at a child that dies would be reset). The
parent holds no database or Redis connection and runs no thread when it forks: each child opens
its own after the fork. The parent's PID is the server's (systemd, init scripts): SIGTERM or
SIGINT stop every child and wait for them; a child that dies is logged and replaced.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dutlab.server")

#: a child that dies sooner than this after its start is replaced only after RESPAWN_DELAY (no spin)
QUICK_DEATH = 2.0
RESPAWN_DELAY = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket the children share (IPv4 or IPv6, as cheroot would pick)."""
    family, socktype, proto, _, address = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """A parent killed with SIGKILL cannot stop its children: the kernel sends them SIGTERM."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: a SIGKILLed parent leaves its children to the service manager


def _run_child(child: Callable[[socket.socket], int | None], sock: socket.socket, parent: int) -> None:
    """In the forked child: never return into the parent's loop; exit with the child's status."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    code = 1
    try:
        result = child(sock)
        code = 0 if result is None else int(result)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever happened, the child must not outlive it
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve_until_signalled(server: Any, before_serving: Callable[[], None] | None = None) -> None:
    """Run a cheroot server until SIGTERM or SIGINT stops it gracefully.

    The handlers go in only once `prepare()` has made the server ready: cheroot's `stop()` does
    nothing before that, so a signal that came during start-up was lost and the process served on
    (a SIGKILLed parent's children were left holding the port). Until then the default action
    ends the process, which has nothing to finish yet.
    """
    server.prepare()
    if before_serving is not None:
        before_serving()

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001
        threading.Thread(target=server.stop, daemon=True).start()  # stop() joins threads: not here

    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)
    server.serve()


def describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit status {code}"


def supervise(count: int, sock: socket.socket, child: Callable[[socket.socket], int | None]) -> int:
    """Fork `count` children running `child(sock)`, replace those that die, stop them on a signal."""
    parent = os.getpid()
    children: dict[int, float] = {}  # pid -> start time
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001
        if not stopping:
            log.info("%s: stopping %d server processes", signal.Signals(signum).name, len(children))
        stopping.append(signum)
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def spawn() -> None:
        # the stop signals wait while forking: a child must not run the parent's handler
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                _run_child(child, sock, parent)
            children[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, on_signal)
    for _ in range(count):
        spawn()
    log.info("serving with %d processes (pids %s)", count, " ".join(map(str, children)))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None:
            continue
        if stopping:
            log.info("server process %d stopped (%s)", pid, describe(status))
            continue
        log.warning("server process %d ended (%s); starting another", pid, describe(status))
        if time.monotonic() - started < QUICK_DEATH:
            deadline = time.monotonic() + RESPAWN_DELAY
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.05)
        if not stopping:
            spawn()
    sock.close()
    return 0
