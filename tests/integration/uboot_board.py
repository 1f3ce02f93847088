"""A real u-boot "board" that needs no network namespace: QEMU `virt` running Debian's u-boot.

    board = QemuUBootBoard(tmp_path).start()
    device = board.device()            # the device configuration dutlab-run gets
    ... dutlab-run JOB --device ... --tftp-root board.tftp_root --dispatcher-ip board.dispatcher_ip
    board.stop()

What stands in for what (the board lab of tests/labkit/board.py, which test_board_jobs.py
drives through the server, uses the real ser2net, pdudaemon and dnsmasq instead):

  UART + ser2net   QEMU's serial on a telnet port (``-serial telnet:127.0.0.1:<port>,server``)
  PDU              pdu_qmp.py over QEMU's QMP socket: the board starts paused (-S, "off"),
                   on = cont, off = stop + system_reset, reset = system_reset + cont
  DHCP + TFTP      QEMU's user-mode network: its DHCP server, and its TFTP server at 10.0.2.2
                   serving the TFTP root given here (the worker's --tftp-root)

The device configuration is device-types/qemu-uboot-arm64.jinja2 rendered for the board.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from factories import board_device

UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
PDU = Path(__file__).with_name("pdu_qmp.py")
DEVICE_TYPE = "qemu-uboot-arm64"
QEMU = "qemu-system-aarch64"


def missing_prerequisites() -> list[str]:

    missing = [f"{tool} ({package})" for tool, package in
               ((QEMU, "qemu-system-arm"), ("telnet", "telnet"), ("mkimage", "u-boot-tools"))
               if shutil.which(tool) is None]
    if not UBOOT.exists():
        missing.append(f"{UBOOT} (u-boot-qemu)")
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QemuUBootBoard:
    """One emulated board; every process it starts is stopped by pid in stop()."""

    missing_prerequisites = staticmethod(missing_prerequisites)

    dispatcher_ip = "10.0.2.2"  # QEMU's user-mode TFTP server, as the board sees it

    def __init__(self, root: Path, *, name: str = "uboot01", memory: int = 1024) -> None:
        self.root = root
        self.name = name
        self.memory = memory
        self.tftp_root = root / "tftp"
        self.port = _free_port()
        self.qmp = root / "qmp.sock"
        self.pdu_log = root / "pdu.log"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def connection_command(self) -> str:
        return f"telnet 127.0.0.1 {self.port}"

    def power_command(self, action: str) -> str:
        return f"{sys.executable} {PDU} {self.qmp} {action} --log {self.pdu_log}"

    def start(self) -> QemuUBootBoard:
        self.tftp_root.mkdir(parents=True, exist_ok=True)
        argv = [QEMU, "-machine", "virt", "-cpu", "cortex-a57", "-m", str(self.memory), "-display", "none",
                "-monitor", "none", "-bios", str(UBOOT),
                "-serial", f"telnet:127.0.0.1:{self.port},server=on,wait=off",
                "-qmp", f"unix:{self.qmp},server=on,wait=off",
                "-netdev", f"user,id=n0,tftp={self.tftp_root}", "-device", "virtio-net-pci,netdev=n0",
                "-S"]  # powered off until the PDU says on
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 20
        while not (self.qmp.exists() and _port_bound(self.port)):
            if self.proc.poll() is not None or time.monotonic() > end:
                err = self.proc.stderr.read() if self.proc.poll() is not None else "no telnet port"
                self.stop()
                raise RuntimeError(f"the emulated board did not start: {err}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def power_events(self) -> list[str]:
        """What the PDU did, in order: "<on|off|reset> <QEMU status before>"."""
        return self.pdu_log.read_text().splitlines() if self.pdu_log.exists() else []

    @property
    def powered(self) -> bool:
        """The board runs (QEMU is not paused: on, or never switched off)."""
        from pdu_qmp import Qmp

        return Qmp(str(self.qmp)).execute("query-status").get("status") == "running"

    def device(self, power: bool = True) -> dict[str, Any]:
        """The rendered device configuration, with this board's console and power commands."""
        commands = {"connect": self.connection_command}
        if power:
            commands.update(hard_reset=self.power_command("reset"), power_on=self.power_command("on"),
                            power_off=self.power_command("off"))
        return render_device(self.name, commands)


def render_device(hostname: str, commands: dict[str, str]) -> dict[str, Any]:
    """qemu-uboot-arm64 rendered for ``hostname``, with these console and power commands."""
    keys = {"connect": "connection_command", "hard_reset": "hard_reset_command",
            "power_on": "power_on_command", "power_off": "power_off_command"}
    sets = "".join(f"{{% set {keys[name]} = {json.dumps(value)} %}}\n" for name, value in commands.items())
    return board_device(DEVICE_TYPE, hostname, sets)


def _port_bound(port: int) -> bool:
    # Connecting would take QEMU's only telnet client slot; ask the kernel who listens instead.
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:  # 0A: LISTEN
            return True
    return False
