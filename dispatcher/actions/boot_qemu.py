"""boot method: qemu (media: tmpfs): start QEMU with the deployed images, wait for the shell.

The command line is the device configuration's ``parameters.command`` + ``options`` +
``extra`` (the job's ``extra_options``), then each image's ``image_arg``, then the overlay
drive. QEMU's serial console is its stdio, read through pexpect.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from typing import Any

from ..console import Console
from ..context import JobContext
from ..errors import ConfigurationError, DutlabError, InfrastructureError, JobError
from ..pipeline import Action
from ..schema.common import choice, mapping
from .common import selected
from .login import BOOT_FIELDS, AutoLogin

KIND, METHOD = "boot", "qemu"
SCHEMA = mapping({**BOOT_FIELDS, "connection": choice("serial"), "media": choice("tmpfs")})

# QEMU messages that mean the worker, not the job, is at fault.
WORKER_FAULTS = ("cannot set up guest memory", "Cannot allocate memory", "Could not access KVM",
                 "failed to initialize kvm", "Address already in use")
ARM_ARCHES = ("arm64", "aarch64", "arm")


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    return selected(device, params, KIND, "method", METHOD)


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    top = BootQemu(params)
    top.children = [CallQemu(params), AutoLogin(params)]
    return top


class BootQemu(Action):
    name = "boot-qemu-image"
    description = "start QEMU with the deployed images and wait for a shell"
    summary = "boot QEMU"

    def cleanup(self, ctx: JobContext) -> None:
        # A retried boot starts a fresh QEMU.
        if ctx.console is not None:
            status = ctx.console.close()
            ctx.logger.info(f"QEMU (pid {ctx.console.pid}) stopped for the retry, exit status {status}")
            ctx.console = None


class CallQemu(Action):
    name = "execute-qemu"
    description = "start qemu-system-* with the serial console on its stdio"
    summary = "start QEMU"

    def validate(self, ctx: JobContext) -> list[str]:
        parameters = qemu_parameters(ctx)
        if not parameters.get("command"):
            return ["the device configuration has no QEMU command: set context: {arch: ...} in the job"]
        binary = str(parameters["command"]).split()[0]
        if shutil.which(binary) is None:
            raise InfrastructureError(f"{binary} is not installed on this worker")
        options = " ".join(map(str, parameters.get("options") or []))
        if "-enable-kvm" in options and not os.path.exists("/dev/kvm"):
            raise ConfigurationError("the device configuration asks for -enable-kvm but this worker has no "
                                     "/dev/kvm: remove kvm from the device dictionary")
        return []

    def run(self, ctx: JobContext) -> None:
        argv = qemu_command(ctx)
        ctx.logger.info(f"QEMU command: {shlex.join(argv)}")
        started = time.monotonic()
        try:
            console = Console.spawn(argv, ctx.logger, name="QEMU", cwd=ctx.tmp_dir,
                                    on_exit=lambda console, when: qemu_exit_error(console, started, when))
        except Exception as exc:  # noqa: BLE001 - pexpect raises plain exceptions for a missing program
            raise InfrastructureError(f"cannot start {argv[0]}: {exc}") from None
        ctx.console = console
        ctx.logger.info(f"QEMU started, pid {console.pid}")


def qemu_parameters(ctx: JobContext) -> dict[str, Any]:
    methods = ((ctx.device.get("actions") or {}).get("boot") or {}).get("methods") or {}
    return (methods.get("qemu") or {}).get("parameters") or {}


def _words(items: Any) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str | int | float):
        items = [items]
    return [word for item in items for word in shlex.split(str(item))]


def qemu_command(ctx: JobContext) -> list[str]:
    """The full QEMU argv for this job on this device."""
    parameters = qemu_parameters(ctx)
    options = _words(parameters.get("options"))
    job_args = _words(parameters.get("extra")) + _words(_image_args(ctx))
    if "-m" in options:
        job_args = _drop_memory(ctx, job_args)
    argv = _words(parameters.get("command")) + options + job_args + _overlay_drive(ctx)
    return _with_kernel_args(ctx, argv, parameters.get("boot_options") or {})


def _image_args(ctx: JobContext) -> list[str]:
    args = []
    for template in ctx.image_args:
        for name, path in ctx.images.items():
            template = template.replace("{" + name + "}", shlex.quote(str(path)))
        args.append(template)
    return args


def _drop_memory(ctx: JobContext, args: list[str]) -> list[str]:
    # The device's -m is the admin's cap; a job's own -m would silently override it.
    out, skip = [], False
    for index, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word == "-m" and index + 1 < len(args):
            ctx.logger.warning(f"ignoring '-m {args[index + 1]}' from the job: the device configuration sets "
                               "the memory size")
            skip = True
            continue
        out.append(word)
    return out


def _overlay_drive(ctx: JobContext) -> list[str]:
    if ctx.overlay is None or ctx.overlay.image is None:
        return []
    guest = (((ctx.device.get("actions") or {}).get("deploy") or {}).get("methods") or {})
    guest = ((guest.get("tmpfs") or guest.get("image") or {}).get("parameters") or {}).get("guest") or {}
    # virtio by default whatever the arch: one small driver every QEMU machine and kernel has.
    interface = ctx.context.get("guestfs_interface") or "virtio"
    driveid = guest.get("driveid") or "lavatest"
    return ["-drive", f"format=raw,file={ctx.overlay.image},if={interface},id={driveid}"]


def _with_kernel_args(ctx: JobContext, argv: list[str], boot_options: dict[str, Any]) -> list[str]:
    if "-kernel" not in argv:
        return argv
    extra = " ".join(str(ctx.context.get(k)) for k in ("extra_kernel_args", "custom_kernel_args")
                     if ctx.context.get(k))
    for flag in ("-append", "--append"):
        if flag in argv:
            index = argv.index(flag) + 1
            if extra and index < len(argv):
                argv[index] = f"{argv[index]} {extra}"
            return argv
    return [*argv, "-append", kernel_command_line(ctx, argv, boot_options, extra)]


def kernel_command_line(ctx: JobContext, argv: list[str], boot_options: dict[str, Any], extra: str) -> str:
    default_console = "ttyAMA0,115200" if ctx.arch in ARM_ARCHES else "ttyS0,115200"
    console = str(boot_options.get("console") or default_console).replace(" ", ",")
    parts = [f"console={console}"]
    if "-initrd" not in argv and boot_options.get("root"):
        parts.append(f"root={boot_options['root']}")  # a root filesystem image, no initramfs
    if extra:
        parts.append(extra)
    return " ".join(parts)


def qemu_exit_error(console: Console, started: float, when: str) -> DutlabError:
    """QEMU ended on its own: quote what it said and its exit code."""
    status = console.close()
    elapsed = time.monotonic() - started
    said = " | ".join(line.strip() for line in console.tail(4) if line.strip()) or "no output"
    how = "immediately" if elapsed < 5 else f"after {elapsed:.0f} s"
    message = f"QEMU exited {how} {when}: {said} (exit code {status})"
    if any(fault in said for fault in WORKER_FAULTS):
        return InfrastructureError(message)
    return JobError(message)
