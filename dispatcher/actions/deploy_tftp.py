"""deploy to: tftp: stage a kernel, ramdisk and DTB in the worker's TFTP root for a bootloader.

Children: one ``file-download``/``http-download`` per file (``kernel``, ``ramdisk``, ``dtb``,
``modules``), ``lava-overlay`` when this deploy carries the test overlay, ``compress-ramdisk``
(the overlay and the modules appended to the ramdisk as extra cpio archives, u-boot's header
taken off and put back as the device asks), then ``stage-tftp``, which moves the files into
the job's folder of the TFTP root (tftp.py) and records their paths for the boot's
``{KERNEL}``, ``{RAMDISK}`` and ``{DTB}``. Finalize removes that folder.

The ramdisk is never decompressed: ``compression`` says how it was published, and u-boot
passes it to the kernel as it is (LAVA recompresses with the same method, to the same end).
Whether the staged ramdisk gets a u-boot header is the device's ``actions.deploy.parameters
.add_header`` (``u-boot`` or ``raw``), as in LAVA; ``ramdisk.header: u-boot`` says the
published file has one (taken off first, and put back when the device says nothing).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .. import initrd, overlay, tftp
from ..context import JobContext, TftpFiles
from ..errors import ConfigurationError, InfrastructureError, JobError
from ..pipeline import Action
from ..schema.common import ACTION_FIELDS, boolean, choice, mapping, refused, string
from .common import selected
from .images import IMAGE_FIELDS, ImagesDeploy, carries_overlay, download_action
from .overlay import lava_overlay

KIND, METHOD = "deploy", "tftp"
#: the files a bootloader fetches, in the order they are downloaded
STAGED = ("kernel", "ramdisk", "dtb")
NFS = "NFS root filesystems are not supported by dutlab yet (no NFS server on the worker); boot a ramdisk instead."

_FILE = mapping(IMAGE_FIELDS, required=("url",))
SCHEMA = mapping({
    "to": string(),
    "kernel": mapping({**IMAGE_FIELDS, "type": choice("image", "zimage", "uimage")}, required=("url",)),
    "ramdisk": mapping({**IMAGE_FIELDS, "header": choice("u-boot"), "install_overlay": boolean,
                        "install_modules": boolean}, required=("url",)),
    "dtb": _FILE,
    "modules": _FILE,
    "os": string(),
    "nfsrootfs": refused(NFS),
    "persistent_nfs": refused("A persistent NFS root filesystem is not supported by dutlab yet; "
                              "boot a ramdisk instead."),
    "tee": refused("Deploying a TEE (OP-TEE) image is not supported by dutlab yet; remove tee."),
    "dtbo": refused("Device tree overlays (dtbo) are not supported by dutlab yet; deploy a DTB with the "
                    "overlays already applied."),
    "preseed": refused("Installer preseed files are not supported by dutlab yet; remove preseed."),
    "extra_files": refused("Extra files (extra_files) are not supported by dutlab yet; put them in the ramdisk."),
    **ACTION_FIELDS,
}, required=("kernel",))


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    return selected(device, params, KIND, "to", METHOD)


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    top = TftpDeploy(params)
    for key in (*STAGED, "modules"):
        if key in params:
            resource = dict(params[key])
            if key == "ramdisk":
                resource.pop("compression", None)  # fetched as published: never decompressed
            top.children.append(download_action(params, key, resource))
    with_overlay = carries_overlay(ctx, params)
    test_overlay = lava_overlay(ctx, params) if with_overlay else None
    if test_overlay is not None:
        top.children.append(test_overlay)
    if "ramdisk" in params:
        top.children.append(CompressRamdisk(params, with_overlay))
    top.children.append(StageTftp(params))
    return top


def deploy_parameters(ctx: JobContext) -> dict[str, Any]:
    """The device configuration's ``actions.deploy.parameters`` (add_header, mkimage_arch...)."""
    deploy = (ctx.device.get("actions") or {}).get("deploy") or {}
    return deploy.get("parameters") or {}


class TftpDeploy(ImagesDeploy):
    name = "tftp-deploy"
    description = "download the files a bootloader fetches over TFTP and stage them in the TFTP root"
    summary = "tftp deployment"

    def validate(self, ctx: JobContext) -> list[str]:
        tftp.check_root(ctx.tftp_root)  # before any download: the lab is not ready for this job
        return []

    def run(self, ctx: JobContext) -> None:
        super().run(ctx)
        if ctx.tftp is not None:  # a retried deploy stages afresh
            shutil.rmtree(ctx.tftp.folder, ignore_errors=True)
            ctx.tftp = None


class CompressRamdisk(Action):
    """The ramdisk as the board boots it: overlay and modules appended, u-boot header as asked."""

    name = "compress-ramdisk"
    description = "append the test overlay and the modules to the ramdisk; add or remove its u-boot header"
    summary = "prepare the ramdisk"

    def __init__(self, params: dict[str, Any], with_overlay: bool) -> None:
        super().__init__(params)
        self.ramdisk: dict[str, Any] = params["ramdisk"]
        #: this deploy carries the test overlay (the last deploy before the first test)
        self.with_overlay = with_overlay

    def validate(self, ctx: JobContext) -> list[str]:
        if self.untouched:
            return []
        add_header = deploy_parameters(ctx).get("add_header")
        if add_header not in (None, "u-boot", "raw"):
            raise ConfigurationError(f"the device's actions.deploy.parameters.add_header is {add_header!r}: "
                                     "use u-boot or raw")
        if self.wrap(ctx):
            if not self.arch(ctx):
                raise ConfigurationError("the ramdisk needs a u-boot header but the device configuration has no "
                                         "actions.deploy.parameters.mkimage_arch and the job no context arch")
            if shutil.which("mkimage") is None:
                raise InfrastructureError("mkimage is missing on this worker: install u-boot-tools "
                                          "(the device adds a u-boot header to ramdisks)")
        return []

    @property
    def untouched(self) -> bool:
        """install_overlay and install_modules both false: LAVA stages the ramdisk as published."""
        return not self.ramdisk.get("install_overlay", True) and not self.ramdisk.get("install_modules", True)

    def wrap(self, ctx: JobContext) -> bool:
        add_header = deploy_parameters(ctx).get("add_header")
        if add_header is None:
            return self.ramdisk.get("header") == "u-boot"
        return add_header == "u-boot"

    def arch(self, ctx: JobContext) -> str:
        configured = deploy_parameters(ctx).get("mkimage_arch")
        if configured:
            return str(configured)
        return initrd.mkimage_arch(str(ctx.context.get("arch") or ctx.device.get("arch") or ""))

    def run(self, ctx: JobContext) -> None:
        url = self.ramdisk["url"]
        if self.untouched:
            ctx.logger.info("install_overlay and install_modules are false: the ramdisk is staged as published")
            return
        source = ctx.images["ramdisk"]
        work = ctx.tmp_dir / "ramdisk"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        payload = work / source.name.removesuffix(".uboot")
        if self.ramdisk.get("header") == "u-boot":
            initrd.strip_uboot_header(source, payload, f"the ramdisk {url}")
            source.unlink()
        elif initrd.has_uboot_header(source):
            raise JobError(f"the ramdisk {url} is a u-boot image (it starts with the magic 0x27051956): add "
                           "header: u-boot to the ramdisk, so dutlab takes the header off before adding to it")
        else:
            shutil.move(source, payload)
        added = self._append(ctx, payload)
        final = payload
        if self.wrap(ctx):
            final = payload.with_name(payload.name + ".uboot")
            initrd.add_uboot_header(payload, final, self.arch(ctx))
            payload.unlink()
        ctx.images["ramdisk"] = final
        header = "with a u-boot header" if self.wrap(ctx) else "without a u-boot header"
        ctx.logger.info(f"ramdisk {final.name}: {', '.join(added) or 'nothing added'}; {header} "
                        f"({final.stat().st_size} bytes)")

    def _append(self, ctx: JobContext, payload: Path) -> list[str]:
        added = []
        if self.ramdisk.get("install_overlay", True) and self.with_overlay and ctx.overlay is not None:
            overlay.append_to_initramfs(payload, ctx.overlay.root, ctx.overlay.dut_path)
            ctx.overlay.in_ramdisk = True
            added.append(f"test overlay appended as {ctx.overlay.dut_path}")
        if self.ramdisk.get("install_modules", True) and "modules" in ctx.images:
            url = self.params["modules"]["url"]
            overlay.append_cpio(payload, initrd.tar_to_cpio(ctx.images["modules"], f"the modules tarball {url}"))
            added.append("kernel modules appended")
        return added


class StageTftp(Action):
    name = "stage-tftp"
    description = "move the kernel, ramdisk and DTB into the job's folder of the TFTP root"
    summary = "stage files for TFTP"

    def run(self, ctx: JobContext) -> None:
        root = ctx.tftp_root.absolute()
        folder = tftp.make_job_folder(root, ctx.job_id)
        ctx.tftp = TftpFiles(folder=folder, kernel_type=str(self.params["kernel"].get("type") or ""))
        for key in STAGED:
            if key not in ctx.images:
                continue
            target = folder / key / ctx.images[key].name
            target.parent.mkdir()
            try:
                shutil.move(ctx.images[key], target)
            except OSError as exc:
                raise InfrastructureError(f"cannot stage {key} in the TFTP root {root}: {exc}") from None
            ctx.images[key] = target
            ctx.tftp.files[key] = target.relative_to(root).as_posix()
            ctx.logger.info(f"{key}: {ctx.tftp.files[key]} in {root} ({target.stat().st_size} bytes)")
        if "ramdisk" in ctx.tftp.files:
            ctx.tftp.ramdisk_header = initrd.has_uboot_header(folder / "ramdisk" / ctx.images["ramdisk"].name)
        tftp.publish(folder)
        self.results = {"folder": folder.name, **ctx.tftp.files}
