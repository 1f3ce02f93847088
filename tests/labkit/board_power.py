#!/usr/bin/env python3
"""The relay behind the emulated board's PDU outlet: pdudaemon's localcmdline driver runs this.

    board_power.py OUTLETS_DIR PORT on|off

OUTLETS_DIR/<PORT>.json (written by tests/labkit/board.py) says what is plugged into the outlet:
the QEMU command line of the board, its network namespace, a pidfile and a log. `on` starts that
QEMU inside the namespace, detached (QEMU's -daemonize: the command returns once QEMU runs and
its serial port is connected to the UART relay); `off` stops it by its pidfile. Both are
idempotent, like flipping a switch that is already there: on when on and off when off do nothing.
Each call appends one line to the outlet's log, so a test can see what pdudaemon asked for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def running_pid(pidfile: Path) -> int | None:
    """The board's QEMU pid, or None when the board is off (a stale pidfile counts as off)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"qemu-system" in cmdline else None


def power_on(outlet: dict) -> tuple[int, str]:
    pidfile = Path(outlet["pidfile"])
    pid = running_pid(pidfile)
    if pid:
        return 0, f"already on (qemu pid {pid})"
    pidfile.unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", outlet["netns"], *outlet["qemu"], "-daemonize", "-pidfile", str(pidfile)]
    with open(outlet["qemu_log"], "ab") as log:
        log.write(f"--- power on {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60)
    if proc.returncode != 0:
        return proc.returncode, f"qemu did not start (exit {proc.returncode}); see {outlet['qemu_log']}"
    return 0, f"on (qemu pid {running_pid(pidfile)})"


def power_off(outlet: dict) -> tuple[int, str]:
    pidfile = Path(outlet["pidfile"])
    pid = running_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return 0, "already off"
    # pulling the plug: no shutdown for the guest
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and running_pid(pidfile) == pid:
            time.sleep(0.05)
        if running_pid(pidfile) != pid:
            break
    if running_pid(pidfile) == pid:
        return 1, f"qemu pid {pid} survived SIGKILL"
    pidfile.unlink(missing_ok=True)
    return 0, f"off (stopped qemu pid {pid})"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2] not in ("on", "off"):
        print(__doc__, file=sys.stderr)
        return 2
    outlets, port, action = Path(argv[0]), argv[1], argv[2]
    config = outlets / f"{int(port)}.json"
    try:
        outlet = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        print(f"board_power: outlet {port}: nothing plugged in ({config}: {exc})", file=sys.stderr)
        return 1
    rc, text = (power_on if action == "on" else power_off)(outlet)
    with open(outlet["power_log"], "a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {action} rc={rc} {text}\n")
    print(f"board_power: outlet {port} {action}: {text}", file=sys.stderr if rc else sys.stdout)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
