"""Processes, addresses and namespaces of the emulated board lab (tests/labkit/board.py).

The board's processes (QEMU, the UART relay, ser2net, pdudaemon, dnsmasq) are started by the
power script and by `make board-lab` as well as by tests, and stopped later from another process
through the lab's state file; so a pid is recognised by a marker in its command line (the lab's
own folder) rather than by labkit.procs' in-process records.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

PDUDAEMON_PORT = 16421  # pduclient always talks to this port; labs differ by listen address


def free_loopback_address() -> str:
    """A 127.x.y.z where port 16421 is free: each lab gets its own pdudaemon address."""
    for _ in range(50):
        address = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((address, PDUDAEMON_PORT))
                return address
            except OSError:
                continue
    raise RuntimeError(f"no loopback address with port {PDUDAEMON_PORT} free")


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def alive(pid: int, marker: str) -> bool:
    """pid runs and is still ours (its command line holds `marker`), not a recycled pid."""
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_pid(pid: int, marker: str, proc: subprocess.Popen | None = None) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if not alive(pid, marker) and (proc is None or proc.poll() is not None):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not alive(pid, marker):
                return
            time.sleep(0.05)


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc
