#!/usr/bin/env python3
"""A stand-in PDU for a QEMU "board": switch it on, off or reset over QEMU's QMP socket.

    pdu_qmp.py SOCKET on|off|reset [--log FILE]

A real lab runs a PDU client here (pduclient, snmpset, a relay script); dutlab only runs the
command the device dictionary names. The board is QEMU started with -S (powered off: paused
before its first instruction) and its serial console on a telnet port, as ser2net gives one.
on = cont; off = stop + system_reset (the next on boots afresh); reset = system_reset + cont.
Each call appends "<action> <status before>" to --log, so tests can see what happened when.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

ACTIONS = {"on": ["cont"], "off": ["stop", "system_reset"], "reset": ["system_reset", "cont"]}


class Qmp:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.reader = self.sock.makefile("r")
        self._reply()  # the greeting
        self.execute("qmp_capabilities")

    def _reply(self) -> dict:
        while True:
            message = json.loads(self.reader.readline())
            if "event" not in message:
                return message

    def execute(self, command: str) -> dict:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error'].get('desc')}")
        return reply.get("return", {})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("socket")
    p.add_argument("action", choices=sorted(ACTIONS))
    p.add_argument("--log")
    args = p.parse_args()
    try:
        qmp = Qmp(args.socket)
        before = qmp.execute("query-status").get("status", "?")
        for command in ACTIONS[args.action]:
            qmp.execute(command)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"pdu_qmp: {args.action} failed: {exc}", file=sys.stderr)
        return 1
    if args.log:
        with open(args.log, "a") as log:
            log.write(f"{args.action} {before}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
