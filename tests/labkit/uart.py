#!/usr/bin/env python3
"""The emulated board's UART: a serial device that stays put while the board is powered off.

    uart.py --link PATH --socket PATH [--log FILE]

A real board's console is a USB-serial adapter: /dev/ttyUSB0 (or its udev link) exists whether
the board is on or off, and ser2net keeps exporting it. A QEMU "board" has no such device: its
serial port lives and dies with the QEMU process. This relay is the adapter. It owns a pty pair
for its whole life and links the pty's device to --link (what ser2net's connector names). Each
QEMU the power script starts connects to --socket (`-chardev socket,path=...`) and its bytes are
relayed to the pty and back; when QEMU stops, the pty stays and simply goes quiet.

Like a real adapter nobody has opened, bytes the board sends while no client has the device open
are lost rather than queued (the kernel would otherwise hand a new ser2net client a stale u-boot
banner), and keystrokes sent while the board is off are dropped.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import socket
import sys
import time
import tty
from pathlib import Path

CHUNK = 4096
#: how long a write to a reader that is not reading may stall the board before bytes are dropped
WRITE_STALL = 5.0


class Relay:
    def __init__(self, link: Path, sock_path: Path, log) -> None:
        self.link, self.sock_path, self.log = link, sock_path, log
        self.master, slave = os.openpty()
        tty.setraw(slave)  # termios outlives this fd: a client that sets none gets a raw line
        self.device = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock_path.unlink(missing_ok=True)
        self.listener.bind(str(self.sock_path))
        self.listener.listen(2)
        self.board: socket.socket | None = None
        self.running = True
        # the link last: its existence tells the lab the relay is ready
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.device)
        os.replace(tmp, self.link)
        self.note(f"ready: {self.link} -> {self.device}, board socket {self.sock_path}")

    def note(self, text: str) -> None:
        if self.log:
            self.log.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.log.flush()

    def reader_attached(self) -> bool:
        """Someone (ser2net) has the pty's device open: the master stops reporting a hang-up."""
        events = select.poll()
        events.register(self.master, select.POLLIN)
        return not any(ev & select.POLLHUP for _, ev in events.poll(0))

    def to_device(self, data: bytes) -> None:
        deadline = time.monotonic() + WRITE_STALL
        while data and self.reader_attached():
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.note(f"reader stalled: dropped {len(data)} bytes")
                    return
                select.select([], [self.master], [], 0.1)

    def drop_board(self, why: str) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None
            self.note(f"board disconnected ({why})")

    def step(self) -> None:
        attached = self.reader_attached()
        watched = [self.listener] + ([self.board] if self.board else []) + ([self.master] if attached else [])
        # with no reader the master reports POLLHUP at once: wake up now and then to see one arrive
        ready, _, _ = select.select(watched, [], [], 1.0 if attached else 0.05)
        for item in ready:
            if item is self.listener:
                conn, _ = self.listener.accept()
                self.drop_board("a new board connected")
                self.board = conn
                self.note("board connected")
            elif item is self.board:
                try:
                    data = self.board.recv(CHUNK)
                except OSError as exc:
                    data = b""
                    self.note(f"board read failed: {exc}")
                if not data:
                    self.drop_board("powered off")
                else:
                    self.to_device(data)
            elif item == self.master:
                try:
                    data = os.read(self.master, CHUNK)
                except OSError as exc:
                    if exc.errno not in (errno.EIO, errno.EAGAIN):
                        raise
                    continue
                if self.board is not None:
                    try:
                        self.board.sendall(data)
                    except OSError:
                        self.drop_board("write failed")

    def close(self) -> None:
        self.drop_board("relay stopping")
        self.listener.close()
        os.close(self.master)
        for path in (self.link, self.sock_path):
            try:
                if path.is_symlink() or path.exists():
                    path.unlink()
            except OSError:
                pass
        self.note("stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--link", type=Path, required=True, help="stable path of the serial device (a symlink)")
    parser.add_argument("--socket", type=Path, required=True, help="unix socket QEMU's serial chardev connects to")
    parser.add_argument("--log", type=Path, help="append connect/disconnect events here")
    args = parser.parse_args()
    log = open(args.log, "a") if args.log else None  # noqa: SIM115 - lives as long as the process
    relay = Relay(args.link, args.socket, log)

    def stop(_sig, _frame) -> None:
        relay.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while relay.running:
            try:
                relay.step()
            except InterruptedError:
                continue
    finally:
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
