"""Packing the overlay: ext2 images made without root, initramfs appends the kernel can read."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from dutlab.dispatcher.overlay import append_to_initramfs, cpio_newc, make_ext2, shell_assignments, write_scripts


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write_scripts(root, "/bin/ash")
    (root / "0" / "tests" / "0_smoke").mkdir(parents=True)
    (root / "0" / "tests" / "0_smoke" / "run.sh").write_text("echo hi\n")
    return root


def test_scripts_get_the_device_shell(tmp_path: Path) -> None:
    root = tree(tmp_path)
    runner = root / "bin" / "lava-test-runner"
    assert runner.read_text().startswith("#!/bin/ash\n")
    assert runner.stat().st_mode & 0o111


@pytest.mark.skipif(shutil.which("debugfs") is None, reason="needs e2fsprogs' debugfs")
def test_ext2_image_holds_the_tree_with_its_label(tmp_path: Path) -> None:
    root = tree(tmp_path)
    image = tmp_path / "overlay.ext2"
    make_ext2(root, image, "lava-5")
    label = subprocess.run(["e2label", str(image)], capture_output=True, text=True, check=True).stdout.strip()
    assert label == "lava-5"
    listing = subprocess.run(["debugfs", "-R", "cat /0/tests/0_smoke/run.sh", str(image)], capture_output=True,
                             text=True, check=True).stdout
    assert listing == "echo hi\n"


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio")
def test_initramfs_append_is_a_second_archive_under_the_dut_path(tmp_path: Path) -> None:
    root = tree(tmp_path)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"070701" + b"0" * 101)  # an odd length, as a real archive may have
    append_to_initramfs(initrd, root, "/lava-5")
    data = initrd.read_bytes()
    start = 108  # 107 bytes padded to a multiple of 4
    assert data[107:start] == b"\0"
    names = subprocess.run(["cpio", "-it", "--quiet"], input=gzip.decompress(data[start:]), capture_output=True,
                           check=True).stdout.decode().split()
    assert "lava-5" in names and "lava-5/bin/lava-test-runner" in names and "lava-5/0/tests/0_smoke/run.sh" in names


def test_cpio_entries_are_root_owned(tmp_path: Path) -> None:
    archive = cpio_newc(tree(tmp_path), "lava-1")
    assert archive.startswith(b"070701") and archive.endswith(b"\0")
    assert b"TRAILER!!!" in archive


def test_parameters_later_layers_win_and_are_quoted() -> None:
    assert shell_assignments({"A": "1", "B": "x"}, None, {"B": "it's"}, {"C": True}) == [
        "A=1", "B='it'\"'\"'s'", "C=True"]
