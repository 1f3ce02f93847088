"""The QEMU test assets built by scripts/build-qemu-assets.sh boot and behave.

For each arch (amd64, arm64 under TCG): the shell comes up with the documented
prompt, an ext2 image on a virtio disk mounts, Ctrl-C reaches the foreground
job, ``poweroff -f`` ends QEMU; ``dutlab.login=1`` gives a serial login that
accepts root/dutlab only; ``dutlab.panic=1`` panics the kernel.

The assets are built (or reused, the script is idempotent) into
$DUTLAB_ASSETS (default /var/cache/dutlab/assets). Every QEMU started here is
killed by its PID when the test ends, whatever the outcome. No test asserts
how long anything takes: timeouts are generous failure guards only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pexpect
import pytest

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-qemu-assets.sh"
ARCHES = ["amd64", "arm64"]
# Guards against hangs only (TCG on a loaded 2-core machine can be slow).
BOOT_TIMEOUT = {"amd64": 120, "arm64": 240}
CMD_TIMEOUT = 60


def assets_dir() -> Path:
    return Path(os.environ.get("DUTLAB_ASSETS") or "/var/cache/dutlab/assets")


_built: dict[str, dict] = {}


def build_assets(arch: str) -> dict:
    """Run the build script for ``arch`` once per session; return the manifest."""
    if arch not in _built:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--arch", arch, "--dest", str(assets_dir())],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            pytest.fail(f"build-qemu-assets.sh --arch {arch} failed ({proc.returncode}):\n{proc.stdout}")
        manifest = json.loads((assets_dir() / arch / "manifest.json").read_text())
        manifest["_dir"] = str(assets_dir() / arch)
        _built[arch] = manifest
    return _built[arch]


@pytest.fixture(params=ARCHES)
def arch(request) -> str:
    return request.param


@pytest.fixture
def manifest(arch) -> dict:
    m = build_assets(arch)
    if shutil.which(m["qemu_binary"]) is None:
        pytest.fail(f"{m['qemu_binary']} not found (package {m['qemu_package']})")
    return m


@pytest.fixture
def qemu(manifest, tmp_path):
    """Factory starting QEMU under pexpect; kills every QEMU it started, by PID."""
    children: list[pexpect.spawn] = []

    def start(extra_kernel_args: str = "", drive: Path | None = None) -> pexpect.spawn:
        d = Path(manifest["_dir"])
        kernel_args = manifest["kernel_args"] + (" " + extra_kernel_args if extra_kernel_args else "")
        argv = [
            a.format(vmlinuz=d / "vmlinuz", initramfs=d / "initramfs.cpio.gz", kernel_args=kernel_args)
            for a in manifest["command"]
        ]
        if drive is not None:
            argv += [a.format(path=drive) for a in manifest["extra_drive_args"]]
        log = open(tmp_path / f"console-{len(children)}.log", "w", encoding="utf-8")
        child = pexpect.spawn(
            argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=CMD_TIMEOUT, dimensions=(24, 200)
        )
        child.logfile_read = log
        children.append(child)
        return child

    yield start

    for child in children:
        try:
            if child.isalive():
                os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            child.close(force=True)
        except Exception:  # already reaped
            pass
        if child.logfile_read:
            child.logfile_read.close()


def expect_prompt(child: pexpect.spawn, manifest: dict, timeout: float = CMD_TIMEOUT) -> None:
    child.expect_exact(manifest["prompt"], timeout=timeout)


def poweroff(child: pexpect.spawn, manifest: dict) -> None:
    child.sendline(manifest["poweroff_command"])
    child.expect(pexpect.EOF, timeout=CMD_TIMEOUT)
    child.close()
    assert not child.isalive()
    assert child.exitstatus == 0, f"QEMU exit status {child.exitstatus} signal {child.signalstatus}"


def test_manifest_matches_files(manifest, arch):
    d = Path(manifest["_dir"])
    assert manifest["arch"] == arch
    for name, info in manifest["files"].items():
        data = (d / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
        assert len(data) == info["size"], name
    names = {p["name"] for p in manifest["packages"]}
    assert "busybox-static" in names
    assert any(n.startswith("linux-image-") for n in names)
    assert all(p["version"] and p["architecture"] == arch for p in manifest["packages"])
    assert "{path}" in " ".join(manifest["extra_drive_args"])
    assert manifest["kernel_args"] == "console=" + manifest["console"]
    assert manifest["prompt"] and manifest["qemu_binary"].startswith("qemu-system-")


def test_build_is_idempotent(arch):
    build_assets(arch)
    before = {p.name: p.stat().st_mtime_ns for p in (assets_dir() / arch).iterdir()}
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--arch", arch, "--dest", str(assets_dir())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout
    assert "up to date" in proc.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (assets_dir() / arch).iterdir()}
    for name in ("vmlinuz", "initramfs.cpio.gz", "manifest.json"):
        assert before[name] == after[name], f"{name} was rewritten"


def test_boot_mount_virtio_ext2_and_poweroff(manifest, qemu, tmp_path, arch):
    content = f"hello from dutlab {arch} {uuid.uuid4().hex}"
    src = tmp_path / "fs"
    src.mkdir()
    (src / "hello.txt").write_text(content + "\n")
    img = tmp_path / "disk.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(src), str(img), "8M"], check=True)

    child = qemu(drive=img)
    child.expect_exact(manifest["ready_message"], timeout=BOOT_TIMEOUT[arch])
    expect_prompt(child, manifest)

    child.sendline("mount /dev/vda /mnt && cat /mnt/hello.txt")
    child.expect_exact(content)
    expect_prompt(child, manifest)

    # The shell has a controlling tty: Ctrl-C interrupts the foreground job.
    child.sendline("echo sleeping-$((40+2)); sleep 600")
    child.expect_exact("sleeping-42")
    # The ^C may still race the start of sleep (the shell then eats it): repeat.
    for _ in range(10):
        child.sendcontrol("c")
        if child.expect_exact([manifest["prompt"], pexpect.TIMEOUT], timeout=5) == 0:
            break
    else:
        pytest.fail("Ctrl-C did not interrupt the foreground job")
    child.sendline("echo status-$?")
    child.expect(r"status-(\d+)")
    assert child.match.group(1) != "0"
    expect_prompt(child, manifest)

    poweroff(child, manifest)


def test_login(manifest, qemu, arch):
    login = manifest["login"]
    child = qemu(extra_kernel_args=login["kernel_arg"])
    child.expect_exact(login["login_prompt"], timeout=BOOT_TIMEOUT[arch])
    # A wrong password is refused...
    child.sendline(login["username"])
    child.expect_exact(login["password_prompt"])
    child.sendline("not-the-password")
    child.expect_exact("Login incorrect")
    child.expect_exact(login["login_prompt"])
    # ...the documented one is accepted.
    child.sendline(login["username"])
    child.expect_exact(login["password_prompt"])
    child.sendline(login["password"])
    expect_prompt(child, manifest)
    child.sendline("echo uid-$(id -u)")
    child.expect(r"uid-(\d+)")
    assert child.match.group(1) == "0"
    expect_prompt(child, manifest)
    poweroff(child, manifest)


def test_panic(manifest, qemu, arch):
    child = qemu(extra_kernel_args=manifest["panic"]["kernel_arg"])
    child.expect_exact(manifest["panic"]["message"], timeout=BOOT_TIMEOUT[arch])
    child.expect_exact("Attempted to kill init")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
