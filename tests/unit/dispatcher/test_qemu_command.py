"""The QEMU command line built from the rendered device configuration and the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dutlab.dispatcher.actions.boot_qemu import qemu_command
from dutlab.dispatcher.context import JobContext, Overlay
from dutlab.dispatcher.log import JobLogger, read_log
from dutlab.service.templating import load_device_config, shipped_device_types_dir


def make_ctx(tmp_path: Path, context: dict[str, Any], dictionary: str = "") -> JobContext:
    device = load_device_config("{% extends 'qemu.jinja2' %}\n" + dictionary, hostname="qemu01",
                                device_type="qemu", context=context, search_path=[shipped_device_types_dir()])
    ctx = JobContext(job_id=5, job={"context": context}, device=device, logger=JobLogger(tmp_path / "out.yaml"),
                     output_dir=tmp_path, work_dir=tmp_path, tmp_dir=tmp_path)
    ctx.images = {"kernel": Path("/w/vmlinuz"), "initrd": Path("/w/initrd.img")}
    ctx.image_args = ["-kernel {kernel}", "-initrd {initrd}"]
    return ctx


def test_amd64_kernel_boot_gets_console_append_and_overlay_drive(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"arch": "amd64", "extra_kernel_args": "dutlab.login=1"})
    ctx.overlay = Overlay(root=tmp_path, dut_path="/lava-5", image=Path("/w/overlay.ext2"), label="lava-5")
    argv = qemu_command(ctx)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-kernel") + 1] == "/w/vmlinuz"
    assert argv[argv.index("-drive") + 1] == "format=raw,file=/w/overlay.ext2,if=virtio,id=lavatest"
    assert argv[-2:] == ["-append", "console=ttyS0,115200 dutlab.login=1"]
    assert argv[argv.index("-m") + 1] == "512"


def test_arm64_uses_ttyAMA0_and_the_aarch64_binary(tmp_path: Path) -> None:
    argv = qemu_command(make_ctx(tmp_path, {"arch": "arm64"}))
    assert argv[:5] == ["qemu-system-aarch64", "-cpu", "cortex-a57", "-machine", "virt"]
    assert argv[-2:] == ["-append", "console=ttyAMA0,115200"]


def test_an_existing_append_is_kept_and_extended(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"arch": "arm64", "extra_kernel_args": "quiet",
                              "extra_options": ["-smp", 2, '--append "console=ttyAMA0 root=/dev/vda rw"']})
    argv = qemu_command(ctx)
    assert "-append" not in argv
    assert argv[argv.index("--append") + 1] == "console=ttyAMA0 root=/dev/vda rw quiet"
    assert argv[argv.index("-smp") + 1] == "2"


def test_the_device_memory_caps_the_job(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"arch": "amd64", "memory": 4096, "extra_options": ["-m 8192"]},
                   dictionary="{% set memory = 1024 %}\n")
    argv = qemu_command(ctx)
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "-m"] == ["1024"]
    warnings = [r["msg"] for r in read_log(tmp_path / "out.yaml") if r["lvl"] == "warning"]
    assert warnings == ["ignoring '-m 8192' from the job: the device configuration sets the memory size"]


def test_rootfs_image_without_initrd_gets_root(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"arch": "amd64"})
    ctx.images = {"kernel": Path("/w/bzImage"), "rootfs": Path("/w/root disk.img")}
    ctx.image_args = ["-kernel {kernel}", "-drive format=raw,if=virtio,file={rootfs}"]
    argv = qemu_command(ctx)
    assert "format=raw,if=virtio,file=/w/root disk.img" in argv
    assert argv[-1] == "console=ttyS0,115200 root=/dev/sda1"
