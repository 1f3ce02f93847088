"""deploy to: tftp: its schema, the ramdisk's u-boot header (real mkimage), appends, staging, removal."""

from __future__ import annotations

import gzip
import io
import shutil
import stat
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from dutlab.dispatcher import initrd, tftp
from dutlab.dispatcher.actions.deploy_tftp import CompressRamdisk
from dutlab.dispatcher.actions.finalize import Finalize
from dutlab.dispatcher.actions.registry import build_actions
from dutlab.dispatcher.context import JobContext
from dutlab.dispatcher.errors import ConfigurationError, InfrastructureError, JobError
from dutlab.dispatcher.log import JobLogger, read_log
from dutlab.dispatcher.overlay import cpio_newc
from dutlab.dispatcher.pipeline import Action, Pipeline
from dutlab.dispatcher.schema.common import JobDefinitionError
from dutlab.dispatcher.schema.job import validate_job
from factories import board_device

DEVICE = board_device()
needs_mkimage = pytest.mark.skipif(shutil.which("mkimage") is None, reason="needs mkimage (u-boot-tools)")


def job(deploy: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    return {"job_name": "tftp", "device_type": "qemu-uboot-arm64", "timeouts": {"job": {"minutes": 5}},
            "actions": [{"deploy": {"to": "tftp", **deploy}}, *more]}


def schema_error(deploy: dict[str, Any]) -> JobDefinitionError:
    with pytest.raises(JobDefinitionError) as info:
        validate_job(job(deploy))
    return info.value


KERNEL = {"url": "file:///srv/images/Image", "type": "image"}


# -- schema ---------------------------------------------------------------------------------

@pytest.mark.parametrize("deploy", [
    {"kernel": {"url": "https://example.org/Image"}},
    {"kernel": KERNEL, "ramdisk": {"url": "file:///srv/rd.cpio.gz", "compression": "gz", "header": "u-boot",
                                   "install_overlay": False, "install_modules": True, "sha256sum": "a" * 64}},
    {"kernel": {"url": "file:///srv/zImage", "type": "zimage"}, "dtb": {"url": "file:///srv/board.dtb"},
     "modules": {"url": "file:///srv/modules.tar.xz", "compression": "xz"}, "os": "oe",
     "timeout": {"minutes": 2}, "failure_retry": 2},
], ids=["kernel-only", "ramdisk-keys", "dtb-modules"])
def test_good_tftp_deploys_validate(deploy: dict[str, Any]) -> None:
    validate_job(job(deploy))


@pytest.mark.parametrize(("key", "value", "sentence"), [
    ("nfsrootfs", {"url": "file:///srv/rootfs.tar.xz"},
     "NFS root filesystems are not supported by dutlab yet (no NFS server on the worker); boot a ramdisk instead."),
    ("persistent_nfs", {"address": "10.0.0.1:/srv/nfs"},
     "A persistent NFS root filesystem is not supported by dutlab yet; boot a ramdisk instead."),
    ("tee", {"url": "file:///srv/tee.bin"},
     "Deploying a TEE (OP-TEE) image is not supported by dutlab yet; remove tee."),
    ("dtbo", [{"url": "file:///srv/a.dtbo"}],
     "Device tree overlays (dtbo) are not supported by dutlab yet; deploy a DTB with the overlays already applied."),
    ("preseed", {"url": "file:///srv/preseed.cfg"}, "Installer preseed files are not supported by dutlab yet; "
                                                    "remove preseed."),
    ("extra_files", ["file:///srv/a"], "Extra files (extra_files) are not supported by dutlab yet; put them in the "
                                       "ramdisk."),
])
def test_known_lava_keys_are_refused_at_their_path_with_their_sentence(key: str, value: Any, sentence: str) -> None:
    error = schema_error({"kernel": KERNEL, key: value})
    assert (error.path, error.message) == (f"actions[0].deploy.{key}", sentence)


@pytest.mark.parametrize(("deploy", "path", "words"), [
    ({}, "actions[0].deploy.kernel", "The required key 'kernel' is missing."),
    ({"kernel": {"url": "file:///srv/Image", "type": "fit"}}, "actions[0].deploy.kernel.type", "use one of: image, "
                                                                                              "zimage, uimage"),
    ({"kernel": KERNEL, "ramdisk": {"url": "file:///r", "header": "raw"}}, "actions[0].deploy.ramdisk.header",
     "use one of: u-boot"),
    ({"kernel": KERNEL, "ramdisk": {"url": "file:///r", "install_modules": "no"}},
     "actions[0].deploy.ramdisk.install_modules", "Expected true or false"),
    ({"kernel": KERNEL, "ramdisk": {"url": "file:///r", "image_arg": "-initrd {ramdisk}"}},
     "actions[0].deploy.ramdisk.image_arg", "Unknown key 'image_arg'"),
    ({"kernel": KERNEL, "images": {}}, "actions[0].deploy.images", "Unknown key 'images'"),
])
def test_malformed_tftp_deploys_name_the_path(deploy: dict[str, Any], path: str, words: str) -> None:
    error = schema_error(deploy)
    assert error.path == path and words in error.message, error


# -- the u-boot header, with the real mkimage ------------------------------------------------

def cpio_gz(tmp_path: Path) -> Path:
    root = tmp_path / "base"
    (root / "bin").mkdir(parents=True)
    (root / "init").write_text("#!/bin/sh\n")
    path = tmp_path / "rootfs.cpio.gz"
    path.write_bytes(gzip.compress(cpio_newc(root, "."), mtime=0))
    return path


@needs_mkimage
def test_header_added_by_mkimage_is_recognised_and_strips_back_to_the_payload(tmp_path: Path) -> None:
    payload = cpio_gz(tmp_path)
    wrapped = tmp_path / "uInitrd"
    initrd.add_uboot_header(payload, wrapped, "arm64")
    assert initrd.has_uboot_header(wrapped) and not initrd.has_uboot_header(payload)
    assert wrapped.stat().st_size == payload.stat().st_size + initrd.UBOOT_HEADER_SIZE
    listing = subprocess.run(["mkimage", "-l", str(wrapped)], capture_output=True, text=True, check=True).stdout
    assert "AArch64 Linux RAMDisk Image (uncompressed)" in listing
    stripped = tmp_path / "stripped"
    initrd.strip_uboot_header(wrapped, stripped, "the ramdisk file:///uInitrd")
    assert stripped.read_bytes() == payload.read_bytes()


def test_stripping_a_file_without_the_magic_says_so(tmp_path: Path) -> None:
    payload = cpio_gz(tmp_path)
    with pytest.raises(JobError) as info:
        initrd.strip_uboot_header(payload, tmp_path / "out", "the ramdisk file:///rootfs.cpio.gz")
    assert str(info.value) == ("the ramdisk file:///rootfs.cpio.gz has header: u-boot, but it does not start with "
                               "u-boot's image magic 0x27051956 (it starts with 0x1f8b0800): remove header: u-boot "
                               "for a plain ramdisk")


def test_a_missing_mkimage_is_an_infrastructure_error_naming_the_package(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a worker without u-boot-tools
    with pytest.raises(InfrastructureError, match="mkimage is missing on this worker: install u-boot-tools"):
        initrd.add_uboot_header(cpio_gz(tmp_path), tmp_path / "out", "arm64")


# -- compress-ramdisk: overlay + modules appended, header as the device says -----------------

def archives(data: bytes) -> list[list[str]]:
    """The member names of each archive in an initramfs (raw or gzip'd cpio, zero padding between)."""
    found, rest = [], data
    while rest:
        if rest[0] == 0:
            rest = rest[1:]
            continue
        if rest[:2] == b"\x1f\x8b":
            inflater = zlib.decompressobj(wbits=31)
            cpio, rest = inflater.decompress(rest), inflater.unused_data
        else:
            cpio, rest = rest, b""
        found.append(cpio_names(cpio))
    return found


def cpio_names(cpio: bytes) -> list[str]:
    names, offset = [], 0
    while True:
        size, namesize = int(cpio[offset + 54:offset + 62], 16), int(cpio[offset + 94:offset + 102], 16)
        name = cpio[offset + 110:offset + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            return names
        names.append(name)
        offset += 110 + namesize
        offset += -offset % 4 + size
        offset += -offset % 4


def modules_tarball(tmp_path: Path) -> Path:
    path = tmp_path / "modules.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, kind in (("./", tarfile.DIRTYPE), ("./lib", tarfile.DIRTYPE),
                           ("./lib/modules/6.1.0/kernel/drivers/foo.ko", tarfile.REGTYPE),
                           ("./lib/modules/6.1.0/build", tarfile.SYMTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            data = b"\x7fELF module" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            info.linkname = "/usr/src/linux-headers-6.1.0" if kind == tarfile.SYMTYPE else ""
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def context(tmp_path: Path, job_doc: dict[str, Any], device: dict[str, Any] | None = None) -> JobContext:
    return JobContext(job_id=3, job=job_doc, device=device or DEVICE, logger=JobLogger(tmp_path / "output.yaml"),
                      output_dir=tmp_path, work_dir=tmp_path / "work", tmp_dir=tmp_path / "tmp",
                      tftp_root=tmp_path / "tftp")


def tftp_job(tmp_path: Path, **ramdisk: Any) -> dict[str, Any]:
    kernel = tmp_path / "Image"
    kernel.write_bytes(b"MZ kernel")
    test = {"test": {"definitions": [{"from": "inline", "name": "smoke", "path": "inline/smoke.yaml", "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"}, "run": {"steps": ["true"]}}}]}}
    boot = {"boot": {"method": "u-boot", "commands": "ramdisk", "prompts": ["# "]}}
    return job({"kernel": {"url": f"file://{kernel}", "type": "image"},
                "ramdisk": {"url": f"file://{ramdisk.pop('path')}", **ramdisk},
                "modules": {"url": f"file://{modules_tarball(tmp_path)}", "compression": "gz"}}, boot, test)


def run_deploy(ctx: JobContext) -> None:
    """The deploy's actions, validated and run in pipeline order (no timeouts, no finalize)."""
    deploy = build_actions(ctx)[0]
    Pipeline(ctx, [deploy], Finalize()).validate()

    def run(action: Action) -> None:
        action.run(ctx)
        for child in action.children:
            run(child)

    run(deploy)


@needs_mkimage
def test_the_overlay_and_modules_are_appended_inside_the_header(tmp_path: Path) -> None:
    (tmp_path / "tftp").mkdir()
    wrapped = tmp_path / "uInitrd"
    initrd.add_uboot_header(cpio_gz(tmp_path), wrapped, "arm64")
    ctx = context(tmp_path, tftp_job(tmp_path, path=wrapped, header="u-boot", compression="gz"))
    run_deploy(ctx)
    staged = ctx.tftp
    assert staged is not None and staged.files["ramdisk"].endswith("/ramdisk/uInitrd.uboot")
    final = ctx.tftp_root / staged.files["ramdisk"]
    assert staged.ramdisk_header and initrd.has_uboot_header(final)
    base, overlay_names, modules = archives(final.read_bytes()[initrd.UBOOT_HEADER_SIZE:])
    assert "./init" in base
    assert {"lava-3", "lava-3/bin/lava-test-runner", "lava-3/0/tests/0_smoke/run.sh"} <= set(overlay_names)
    # no top-level "lib" entry (it would replace a /lib symlink); parents below it are made
    assert modules == ["lib/modules", "lib/modules/6.1.0", "lib/modules/6.1.0/kernel",
                       "lib/modules/6.1.0/kernel/drivers", "lib/modules/6.1.0/kernel/drivers/foo.ko",
                       "lib/modules/6.1.0/build"]
    assert ctx.overlay is not None and ctx.overlay.in_ramdisk
    assert staged.files["kernel"].endswith("/kernel/Image") and "modules" not in staged.files


def test_a_raw_device_stages_a_raw_ramdisk(tmp_path: Path) -> None:
    (tmp_path / "tftp").mkdir()
    device = yaml.safe_load(yaml.safe_dump(DEVICE))
    device["actions"]["deploy"]["parameters"]["add_header"] = "raw"
    ctx = context(tmp_path, tftp_job(tmp_path, path=cpio_gz(tmp_path)), device)
    run_deploy(ctx)
    assert ctx.tftp is not None and not ctx.tftp.ramdisk_header
    final = ctx.tftp_root / ctx.tftp.files["ramdisk"]
    assert final.name == "rootfs.cpio.gz" and len(archives(final.read_bytes())) == 3


def test_a_u_boot_image_without_header_u_boot_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "uInitrd"
    fake.write_bytes(initrd.UBOOT_MAGIC.to_bytes(4, "big") + b"\0" * 200)
    ctx = context(tmp_path, tftp_job(tmp_path, path=fake))
    (tmp_path / "tftp").mkdir()
    with pytest.raises(JobError, match=r"is a u-boot image \(it starts with the magic 0x27051956\): add header"):
        run_deploy(ctx)


def test_an_unknown_add_header_is_a_configuration_error(tmp_path: Path) -> None:
    device = yaml.safe_load(yaml.safe_dump(DEVICE))
    device["actions"]["deploy"]["parameters"]["add_header"] = "android"
    ctx = context(tmp_path, tftp_job(tmp_path, path=cpio_gz(tmp_path)), device)
    action = next(a for a in build_actions(ctx)[0].children if isinstance(a, CompressRamdisk))
    with pytest.raises(ConfigurationError, match="add_header is 'android': use u-boot or raw"):
        action.validate(ctx)


# -- staging and removal -------------------------------------------------------------------

def test_staged_files_are_readable_by_the_tftp_server_and_finalize_removes_them(tmp_path: Path) -> None:
    (tmp_path / "tftp").mkdir()
    ctx = context(tmp_path, tftp_job(tmp_path, path=cpio_gz(tmp_path)))
    ctx.device = {**DEVICE, "actions": {**DEVICE["actions"], "deploy": {"methods": {"tftp": None}}}}
    run_deploy(ctx)
    assert ctx.tftp is not None
    folder = ctx.tftp.folder
    assert folder.parent == ctx.tftp_root.absolute() and folder.name.startswith("dutlab-3-")
    for path in [folder, *folder.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    assert sorted(ctx.tftp.files) == ["kernel", "ramdisk"]
    assert all((ctx.tftp_root / rel).is_file() for rel in ctx.tftp.files.values())
    Finalize().run(ctx)
    assert not folder.exists() and ctx.tftp is None
    assert any(r["msg"] == f"removed {folder}" for r in read_log(tmp_path / "output.yaml"))


def test_the_tftp_folder_is_removed_when_the_boot_fails(tmp_path: Path) -> None:
    (tmp_path / "tftp").mkdir()
    doc = tftp_job(tmp_path, path=cpio_gz(tmp_path))
    doc["actions"] = doc["actions"][:2]
    device = {**DEVICE, "commands": {"connect": "true"}}  # a console that closes at once
    ctx = context(tmp_path, doc, device)
    result = Pipeline(ctx, build_actions(ctx), Finalize()).run()
    assert not result.passed and result.error_type == "Infrastructure", result
    assert "while waiting for the interrupt prompt 'Hit any key to stop autoboot'" in result.error_msg
    assert list((tmp_path / "tftp").iterdir()) == []


@pytest.mark.parametrize("make", ["missing", "file"])
def test_an_unusable_tftp_root_is_an_infrastructure_error_naming_path_and_setting(tmp_path: Path, make: str) -> None:
    root = tmp_path / "srv-tftp"
    if make == "file":
        root.write_text("")
    with pytest.raises(InfrastructureError) as info:
        tftp.check_root(root)
    assert str(info.value) == (f"the TFTP root {root} does not exist on this worker: create it as the TFTP server's "
                               "root directory, or point the worker's tftp_root setting (dutlab-run --tftp-root) at it")


def test_the_deploy_checks_the_tftp_root_before_downloading(tmp_path: Path) -> None:
    ctx = context(tmp_path, tftp_job(tmp_path, path=cpio_gz(tmp_path)))
    with pytest.raises(InfrastructureError, match=f"the TFTP root {tmp_path / 'tftp'} does not exist"):
        Pipeline(ctx, build_actions(ctx), Finalize()).validate()


# -- the address boards fetch from -----------------------------------------------------------

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""


def test_default_gateway_and_addresses_are_read_from_the_system_tables() -> None:
    assert tftp.default_gateway(ROUTES) == "192.0.2.1"
    assert tftp.default_gateway(ROUTES.splitlines()[0] + "\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF") == ""
    ip = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
          "4: eth0    inet 10.1.2.3/24 brd 10.1.2.255 scope global eth0\\       valid_lft forever\n"
          "5: br0    inet 10.232.0.1/24 scope global br0\n")
    assert tftp.global_addresses(ip) == ["10.1.2.3", "10.232.0.1"]


def test_server_address_prefers_the_setting_and_says_where_it_came_from() -> None:
    assert tftp.server_address("10.0.2.2") == ("10.0.2.2", "dispatcher_ip")
    address, source = tftp.server_address("")
    assert not address.startswith("127.") and source.startswith("the worker's ")
