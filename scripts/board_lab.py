#!/usr/bin/env python3
"""The board lab: `make lab` plus an emulated u-boot board, uboot01, behind real lab parts.

  make board-lab       server + queue consumer + worker + qemu01 (as `make lab`), and the board
                       uboot01 (device type qemu-uboot-arm64): QEMU virt running Debian's u-boot,
                       its UART exported by ser2net on a telnet port, its power on a pdudaemon
                       outlet, DHCP + TFTP from dnsmasq on a bridge in a network namespace.
                       Prints the DUTLAB_URL / DUTLAB_USER / DUTLAB_TOKEN exports and the board's
                       console, power commands and TFTP root. Needs root (namespace, tap).
  make board-lab-stop  stops all of it, by pid, and deletes the namespace.

  board_lab.py --hardware DIR       only the board, as a bench has it: QEMU + u-boot behind its
                                    UART (DIR/serial/by-id-uboot01) and PDU outlet (DIR/outlets),
                                    and the namespace dutlab-uboot01 with the bridge; ser2net,
                                    pdudaemon, dnsmasq, server and worker then come from Ansible
                                    (examples/inventories/boards.yml says how)
  board_lab.py --hardware-stop DIR  stops that

The arm64 kernel Image and initramfs a job boots stay where scripts/build-qemu-assets.sh puts
them: file:///var/cache/dutlab/assets/arm64/vmlinuz and .../initramfs.cpio.gz.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import demo  # noqa: E402  - the lab of `make lab`, reused as it is

from labkit import Lab, stop_recorded  # noqa: E402
from labkit.board import ASSETS, PDUDAEMON_PORT, EmulatedBoardLab, missing_prerequisites  # noqa: E402

REPO = demo.REPO
ROOT = Path(os.environ.get("DUTLAB_BOARD_LAB_DIR") or REPO / "run" / "board-lab")
STATE = ROOT / "pids.json"
BOARD = "uboot01"
DEVICE_TYPE = "qemu-uboot-arm64"


def pdu_daemon_address() -> str | None:
    """`localhost`, as LAVA dictionaries say, when no other pdudaemon holds 127.0.0.1:16421."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", PDUDAEMON_PORT))
        except OSError:
            return None
    return "localhost"


def add_board(lab: Lab, board: EmulatedBoardLab) -> None:
    """Register uboot01 on the server: Unknown, so its health check runs first."""
    if lab.api("GET", f"/api/v1/device-types/{DEVICE_TYPE}").status == 404:
        lab.add_device_type(DEVICE_TYPE)
    lab.add_device(BOARD, DEVICE_TYPE, "worker1", board.dictionary(DEVICE_TYPE),
                   description="emulated u-boot board (QEMU virt + u-boot)")


def start(args: argparse.Namespace) -> int:
    missing = missing_prerequisites()
    if missing:
        print("board-lab: missing " + ", ".join(missing) + "; run scripts/setup.sh (as root)", file=sys.stderr)
        return 1
    if STATE.exists() or (ROOT / "board").exists():
        stop(args)
    shutil.rmtree(ROOT, ignore_errors=True)
    board = EmulatedBoardLab(ROOT / "board", BOARD, tftp_root=ROOT / "tftp", pdu_daemon=pdu_daemon_address(),
                             telnet_port=demo.pick_port(args.console_port))
    board.start()
    board.save_state()
    try:
        lab, password = demo.start_lab(ROOT / "lab", args.port, worker_args=board.worker_args())
        add_board(lab, board)
    except BaseException:
        board.stop()
        raise
    STATE.write_text(json.dumps(lab.procs.detach()))
    print(f"dutlab board lab running: dashboard and API at {lab.url}/  (logs in {ROOT})")
    print(f"admin user: admin, password: {password}")
    print(f"export DUTLAB_URL={lab.url} DUTLAB_USER=admin DUTLAB_TOKEN={lab.admin_token}")
    print(f"board {BOARD}: added as {DEVICE_TYPE} (health Unknown: its health check runs first)")
    print(f"  console:   {board.connection_command}   (ser2net; the UART is {board.uart_path})")
    print(f"  power:     {board.power_command('on')}   (and off, reboot)")
    print(f"  network:   namespace {board.netns}, bridge {board.bridge} {board.server_ip}/24, "
          f"board {board.board_ip} ({board.mac})")
    print(f"  TFTP root: {board.tftp_root}")
    print(f"  kernel:    file://{ASSETS / 'vmlinuz'}  ramdisk: file://{ASSETS / 'initramfs.cpio.gz'}")
    print("  a job:     examples/jobs/uboot-tftp-ramdisk.yaml")
    print("stop it:     make board-lab-stop")
    return 0


def stop(args: argparse.Namespace) -> int:
    """The server, worker and running jobs first (a job's finalize powers the board off), then the board."""
    lab_was_running = STATE.exists()
    if lab_was_running:
        stop_recorded(json.loads(STATE.read_text()))
        STATE.unlink()
    board_stopped = EmulatedBoardLab.stop_saved(ROOT / "board")
    if not (board_stopped or lab_was_running):
        print(f"no board lab is running ({STATE} is missing)")
        return 0
    print("board lab stopped")
    return 0


def hardware(folder: Path) -> int:
    missing = missing_prerequisites()
    if missing:
        print("board-lab: missing " + ", ".join(missing) + "; run scripts/setup.sh (as root)", file=sys.stderr)
        return 1
    EmulatedBoardLab.stop_saved(folder)
    board = EmulatedBoardLab(folder, BOARD, netns=f"dutlab-{BOARD}", services=False).start()
    print(f"board {BOARD}: UART {board.uart_path}, outlets {board.root / 'outlets'} "
          f"(localcmdline: {board.power_script('on')}), network namespace {board.netns} "
          f"(bridge {board.bridge}, {board.server_ip}/24), MAC {board.mac}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", action="store_true", help="stop the board lab")
    parser.add_argument("--hardware", type=Path, metavar="DIR", help="start only the board (see above)")
    parser.add_argument("--hardware-stop", type=Path, metavar="DIR", help="stop the board started with --hardware")
    parser.add_argument("--port", type=int, default=8080, help="the server's port (another when taken)")
    parser.add_argument("--console-port", type=int, default=7101, help="uboot01's telnet port (another when taken)")
    args = parser.parse_args()
    if args.hardware:
        return hardware(args.hardware.resolve())
    if args.hardware_stop:
        stopped = EmulatedBoardLab.stop_saved(args.hardware_stop.resolve())
        print("board stopped" if stopped else f"no board state in {args.hardware_stop}")
        return 0
    return stop(args) if args.stop else start(args)


if __name__ == "__main__":
    sys.exit(main())
