"""deploy to: tftp + boot method: u-boot, end to end on a real u-boot board (QEMU virt + Debian's
u-boot, tests/integration/uboot_board.py), through the real dutlab-run alone, telnet, mkimage and TFTP.

This board needs no root: QEMU's own DHCP/TFTP and telnet serial, QMP stand-in power. The same
jobs on the board lab of real parts (ser2net, pdudaemon, dnsmasq in a network namespace), submitted
to the server and run by dutlab-worker, are test_board_jobs.py; CI boots each case once.
"""
# ruff: noqa: F811 - the fixtures are imported from dispatcher_fixtures and used as arguments

from __future__ import annotations

import gzip
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dispatcher_fixtures import (  # noqa: F401 - fixtures are used by name
    PROMPT,
    DutlabRun,
    Outcome,
    assets_for,
    dutlab_run,
    inline_definition,
)
from uboot_board import QemuUBootBoard, missing_prerequisites

from dutlab.service.templating import shipped_device_types_dir

pytestmark = pytest.mark.qemu

STEPS = ["lava-test-case uname --shell uname -a", "lava-test-case false-case --shell false",
         "lava-test-case speed --result pass --measurement 12.5 --units MB/s"]
EXPECTED = [("uname", "pass", None, None), ("false-case", "fail", None, None), ("speed", "pass", 12.5, "MB/s")]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _ramdisk_root_supported(initramfs: Path) -> bool:
    """The initramfs keeps itself as root with root=/dev/ram0 (the `ramdisk` command set's bootargs)."""
    cpio = gzip.decompress(initramfs.read_bytes())
    return b'case "$ROOT" in /dev/ram*) ROOT= ;; esac' in cpio


@pytest.fixture
def board(tmp_path: Path) -> Iterator[QemuUBootBoard]:
    missing = missing_prerequisites()
    if missing:
        _unavailable("the QEMU u-boot board needs: " + ", ".join(missing))
    started = QemuUBootBoard(tmp_path / "board").start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def assets() -> Path:
    directory = assets_for("arm64")
    if not _ramdisk_root_supported(directory / "initramfs.cpio.gz"):
        _unavailable(f"{directory}/initramfs.cpio.gz predates root=/dev/ram0 support: rebuild it with "
                     "scripts/build-qemu-assets.sh")
    return directory


def uboot_job(assets: Path, *, kernel: dict[str, Any] | None = None, ramdisk: dict[str, Any] | None = None,
              boot: dict[str, Any] | None = None, tests: bool = True) -> dict[str, Any]:
    deploy: dict[str, Any] = {"to": "tftp", "timeout": {"seconds": 60},
                              "kernel": kernel or {"url": f"file://{assets}/vmlinuz", "type": "image"}}
    if ramdisk != {}:
        deploy["ramdisk"] = ramdisk or {"url": f"file://{assets}/initramfs.cpio.gz", "compression": "gz"}
    actions: list[dict[str, Any]] = [
        {"deploy": deploy},
        {"boot": {"method": "u-boot", "commands": "ramdisk", "prompts": [PROMPT], "timeout": {"seconds": 150},
                  **(boot or {})}},
    ]
    if tests:
        actions.append({"test": {"timeout": {"seconds": 90}, "definitions": [inline_definition("smoke", STEPS)]}})
    return {"job_name": "u-boot board", "device_type": "qemu-uboot-arm64", "visibility": "public",
            "timeouts": {"job": {"minutes": 5}}, "actions": actions}


def run(dutlab_run: DutlabRun, board: QemuUBootBoard, job: dict[str, Any], device: dict[str, Any] | None = None,
        job_id: int = 1) -> Outcome:
    out = dutlab_run.run(job, device or board.device(), job_id=job_id,
                         extra_args=("--tftp-root", str(board.tftp_root), "--dispatcher-ip", board.dispatcher_ip))
    assert list(board.tftp_root.iterdir()) == [], "finalize left the job's TFTP folder behind"
    return out


def cases(out: Outcome) -> list[tuple]:
    return [(r["case"], r["result"], r.get("measurement"), r.get("units")) for r in out.suite("0_smoke")]


def typed(out: Outcome) -> list[str]:
    return out.messages("input")


# -- jobs that complete -----------------------------------------------------------------------

def test_ramdisk_command_set_completes_with_exactly_the_test_results(dutlab_run: DutlabRun, board: QemuUBootBoard,
                                                                     assets: Path) -> None:
    out = run(dutlab_run, board, uboot_job(assets), job_id=11)
    assert out.result == {"result": "pass"}, out.stdout
    assert cases(out) == EXPECTED
    commands = typed(out)
    assert f"setenv serverip {board.dispatcher_ip}" in commands
    assert any(c.startswith("tftp 0x44000000 dutlab-11-") and c.endswith("/ramdisk/initramfs.cpio.gz.uboot")
               for c in commands)
    assert commands[commands.index("booti 0x40400000 0x44000000 0x40000000") - 1].startswith("setenv bootargs")
    assert "dropped 'tftp {DTB_ADDR} {DTB}' ({DTB}: the job deploys no dtb)" in out.messages("info")
    lava = {r["case"]: r["result"] for r in out.suite("lava")}
    assert lava["tftp-deploy"] == lava["uboot-action"] == "pass"
    # reset after connecting, off at the end
    infos = out.messages("info")
    connected = next(i for i, m in enumerate(infos) if m.startswith("connecting: telnet"))
    reset = next(i for i, m in enumerate(infos) if m.startswith("running on the worker: ")
                 and m.endswith(board.device()["commands"]["hard_reset"]))
    assert connected < reset and not board.powered


def test_a_mkimaged_ramdisk_with_header_u_boot(dutlab_run: DutlabRun, board: QemuUBootBoard, assets: Path,
                                               tmp_path: Path) -> None:
    uinitrd = tmp_path / "uInitrd"
    subprocess.run(["mkimage", "-A", "arm64", "-T", "ramdisk", "-C", "none", "-d", str(assets / "initramfs.cpio.gz"),
                    str(uinitrd)], check=True, capture_output=True)
    job = uboot_job(assets, ramdisk={"url": f"file://{uinitrd}", "compression": "gz", "header": "u-boot"})
    out = run(dutlab_run, board, job)
    assert out.result == {"result": "pass"}, out.stdout
    assert cases(out) == EXPECTED
    assert any(m.startswith("ramdisk uInitrd.uboot: test overlay appended as /lava-1; with a u-boot header")
               for m in out.messages("info"))
    assert any("Image Type:   AArch64 Linux RAMDisk Image (uncompressed)" in m for m in out.messages("target"))


def test_an_explicit_command_list_with_a_raw_ramdisk(dutlab_run: DutlabRun, board: QemuUBootBoard,
                                                     assets: Path) -> None:
    device = board.device()
    device["actions"]["deploy"]["parameters"]["add_header"] = "raw"
    commands = ["setenv autoload no", "dhcp", "setenv serverip {SERVER_IP}", "tftp {KERNEL_ADDR} {KERNEL}",
                "tftp {RAMDISK_ADDR} {RAMDISK}", "setenv initrd_size ${filesize}",
                "setenv bootargs 'console=ttyAMA0,115200 root=/dev/ram0 dutlab.job=list'", "{BOOTX}"]
    steps = ["lava-test-case cmdline --shell grep -q dutlab.job=list /proc/cmdline"]
    job = uboot_job(assets, boot={"commands": commands})
    job["actions"][2]["test"]["definitions"] = [inline_definition("smoke", steps)]
    out = run(dutlab_run, board, job, device)
    assert out.result == {"result": "pass"}, out.stdout
    assert cases(out) == [("cmdline", "pass", None, None)]
    assert "booti 0x40400000 0x44000000:${initrd_size} 0x40000000" in typed(out)
    assert "using the boot commands of the job definition, not the device's command sets" in out.messages("warning")


def test_a_soft_reboot_is_recognised_by_its_shutdown_message(dutlab_run: DutlabRun, board: QemuUBootBoard,
                                                             assets: Path) -> None:
    first = board.device()
    del first["commands"]["power_off"]  # leave the board running its shell
    out = run(dutlab_run, board, uboot_job(assets, tests=False), first)
    assert out.result == {"result": "pass"}, out.stdout
    soft = board.device(power=False)
    soft["commands"]["soft_reboot"] = "reboot -f"
    job = uboot_job(assets, boot={"parameters": {"shutdown-message": "reboot: Restarting system"}})
    out = run(dutlab_run, board, job, soft)
    assert out.result == {"result": "pass"}, out.stdout
    assert cases(out) == EXPECTED
    assert "soft reboot: the board printed 'reboot: Restarting system'" in out.messages("info")
    assert not any(m.startswith("running on the worker: ") for m in out.messages("info"))  # no PDU


def test_the_device_type_health_check_passes(dutlab_run: DutlabRun, board: QemuUBootBoard, assets: Path) -> None:
    path = shipped_device_types_dir() / "health-checks" / "qemu-uboot-arm64.yaml"
    text = path.read_text().replace("file:///var/cache/dutlab/assets/arm64/", f"file://{assets}/")
    out = run(dutlab_run, board, yaml.safe_load(text))
    assert out.result == {"result": "pass"}, out.stdout
    assert {r["result"] for r in out.results if r["definition"] != "lava"} == {"pass"}


# -- failures an admin sees -------------------------------------------------------------------

def test_a_missing_tftp_file_is_an_infrastructure_error_naming_it(dutlab_run: DutlabRun, board: QemuUBootBoard,
                                                                  assets: Path) -> None:
    commands = ["setenv autoload no", "dhcp", "setenv serverip {SERVER_IP}", "tftp {KERNEL_ADDR} {KERNEL}",
                "tftp {RAMDISK_ADDR} dutlab-no-such-folder/initramfs.cpio.gz", "{BOOTX}"]
    out = run(dutlab_run, board, uboot_job(assets, boot={"commands": commands}))
    assert out.result["error_type"] == "Infrastructure", out.result
    # the TFTP server's own words: tftpd-hpa and QEMU say 'File not found', dnsmasq 'file ... not found for ...'
    head, tail = out.result["error_msg"].split("\" after ", 1)
    assert head.startswith("bootloader-commands: u-boot printed \"TFTP error: '") and "not found" in head.lower()
    assert tail == ("'tftp 0x44000000 dutlab-no-such-folder/initramfs.cpio.gz': the board could not fetch "
                    "'dutlab-no-such-folder/initramfs.cpio.gz'; check the TFTP server (its root must be the "
                    "worker's TFTP root) and the board's network link")
    assert not any(c.startswith("booti") for c in typed(out))  # the boot ended at once
    assert not board.powered


def test_a_board_that_never_powers_on_names_the_interrupt_prompt(dutlab_run: DutlabRun, board: QemuUBootBoard,
                                                                 assets: Path) -> None:
    device = board.device()
    device["commands"].update(hard_reset="true", power_on="true")  # the relay clicks, the board stays dark
    job = uboot_job(assets, tests=False)
    job["timeouts"]["connections"] = {"bootloader-interrupt": {"seconds": 5}}
    out = run(dutlab_run, board, job, device)
    assert out.result["error_type"] == "Infrastructure", out.result
    assert out.result["error_msg"].startswith(
        "bootloader-interrupt: the interrupt prompt 'Hit any key to stop autoboot' did not appear within 5 s (last "
        "console output: ")
    assert out.result["error_msg"].endswith(
        f"); check that the board is powered (its power commands ran, the PDU port is right) and that its console is "
        f"this connection ({board.connection_command})")


def test_a_garbage_kernel_is_a_job_error_quoting_u_boot(dutlab_run: DutlabRun, board: QemuUBootBoard, assets: Path,
                                                        tmp_path: Path) -> None:
    garbage = tmp_path / "Image"
    garbage.write_bytes(random.Random(7).randbytes(2 << 20))
    out = run(dutlab_run, board, uboot_job(assets, kernel={"url": f"file://{garbage}", "type": "image"},
                                           tests=False))
    assert out.result["error_type"] == "Job", out.result
    assert out.result["error_msg"] == (
        "bootloader-commands: u-boot refused the job's files: 'Bad Linux ARM64 Image magic!' after 'booti 0x40400000 "
        "0x44000000 0x40000000'; check the deploy's kernel type and images")


def test_a_kernel_panic_ends_the_boot_with_a_boot_error(dutlab_run: DutlabRun, board: QemuUBootBoard,
                                                        assets: Path) -> None:
    commands = ["setenv autoload no", "dhcp", "setenv serverip {SERVER_IP}", "tftp {KERNEL_ADDR} {KERNEL}",
                "setenv bootargs 'console=ttyAMA0,115200 root=/dev/nonexistent'", "{BOOTX}"]
    out = run(dutlab_run, board, uboot_job(assets, ramdisk={}, boot={"commands": commands}, tests=False))
    assert out.result["error_type"] == "Job", out.result
    assert out.result["error_msg"].startswith("the boot failed: 'Kernel panic - not syncing: VFS: Unable to mount "
                                              "root fs")
    assert "booti 0x40400000 - 0x40000000" in typed(out)


def test_a_failing_pdu_command_is_an_infrastructure_error_with_its_output(dutlab_run: DutlabRun,
                                                                         board: QemuUBootBoard, assets: Path) -> None:
    device = board.device()
    device["commands"]["hard_reset"] = "echo pdu-a port 3: no answer >&2; exit 3"
    out = run(dutlab_run, board, uboot_job(assets, tests=False), device)
    assert out.result == {"result": "fail", "error_type": "Infrastructure", "error_msg":
                          "hard_reset: 'echo pdu-a port 3: no answer >&2; exit 3' failed with exit code 3: "
                          "pdu-a port 3: no answer"}
    assert not board.powered  # finalize still switched it off


def test_a_refused_console_connection_names_host_port_and_ser2net(dutlab_run: DutlabRun, board: QemuUBootBoard,
                                                                  assets: Path) -> None:
    device = board.device()
    closed = board.port  # nothing else listens there once the board is gone
    board.stop()
    device["commands"]["power_off"] = "true"
    out = run(dutlab_run, board, uboot_job(assets, tests=False), device)
    assert out.result == {"result": "fail", "error_type": "Infrastructure", "error_msg":
                          f"connect-device: telnet could not connect to 127.0.0.1:{closed} (Connection refused): "
                          f"check that ser2net runs on 127.0.0.1 with port {closed} in its configuration, and that "
                          "the board's serial device node exists"}
