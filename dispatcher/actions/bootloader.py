"""What every bootloader boot method shares (u-boot now; barebox or grub are one file each later).

A bootloader boot is: ``bootloader-overlay`` (the device's command set, or the job's list,
with LAVA's placeholders filled in), ``connect-device``, ``reset-device``,
``bootloader-interrupt`` (stop autoboot at the interrupt prompt, get the bootloader's prompt),
``bootloader-commands`` (type the commands, stop at the bootloader's own error messages),
then the wait for the shell (login.py). The console part is bootloader_console.py.

Where the settings come from, highest first: the job's boot ``parameters``, the device's
``actions.boot.methods.<method>.parameters``, the device's ``constants.<method>`` (and the
top-level constants ``shutdown-message`` and ``kernel-start-message``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import tftp
from ..context import JobContext, TftpFiles
from ..errors import ConfigurationError, JobError
from ..pipeline import Action
from ..schema.common import fail, kind_of, list_of, mapping, regex, string
from .common import as_list
from .power import ResetDevice

#: placeholders LAVA fills that need an NFS server
NFS_PLACEHOLDERS = ("{NFSROOTFS}", "{NFS_SERVER_IP}")
NFS_REFUSED = "dutlab does not support NFS root filesystems yet (no NFS server on the worker)"
PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Z][A-Z0-9_]*)\}")  # {KERNEL}, not u-boot's own ${filesize}
MAC = re.compile(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}")
#: why a placeholder has no value, for the log line of a dropped command
NO_VALUE = {"{DTB}": "the job deploys no dtb", "{RAMDISK}": "the job deploys no ramdisk",
            "{INITRD}": "the job deploys no ramdisk", "{TEE}": "the job deploys no tee",
            "{LAVA_MAC}": "the device has no lava_mac"}
#: how to give a placeholder a value dutlab could fill
HOW_TO_FILL = dict.fromkeys(("BOOTX", "KERNEL_ADDR", "RAMDISK_ADDR", "DTB_ADDR", "TEE_ADDR"),
                            "give the deploy's kernel a type (image, zimage or uimage)")


# -- the job's keys ---------------------------------------------------------------------------

def _characters(value: Any, path: str) -> None:
    # a space or an empty string are real interrupt characters, so this is not string()
    if not isinstance(value, str) or len(value) > 16:
        fail(path, f"Expected the characters to send (a string of at most 16), got {kind_of(value)}.")


#: ``parameters:`` of a bootloader boot block: the device's constants, for this job only
PARAMETERS = mapping({
    "kernel-start-message": regex, "boot_message": regex, "shutdown-message": regex,
    "bootloader-final-message": regex, "final-message": regex, "interrupt-prompt": regex,
    "interrupt-character": _characters, "bootloader_prompt": regex, "error-messages": list_of(regex),
})


def commands_check(value: Any, path: str) -> None:
    """``commands``: the name of a command set of the device, or the commands themselves."""
    if isinstance(value, str):
        string()(value, path)
        if value == "nfs":
            fail(path, f"The nfs command set boots an NFS root filesystem and {NFS_REFUSED}; use commands: ramdisk.")
        return
    list_of(string(), min_items=1)(value, path)
    for index, command in enumerate(value):
        if any(p in command for p in NFS_PLACEHOLDERS):
            fail(f"{path}[{index}]", f"This command mounts an NFS root filesystem and {NFS_REFUSED}; "
                                     "boot a ramdisk instead.")


# -- the settings -----------------------------------------------------------------------------

@dataclass
class Settings:
    method: str
    prompt: str
    interrupt_prompt: str
    interrupt_character: str
    interrupt_newline: bool
    interrupt_control: list[str]
    needs_interrupt: bool
    final_message: str
    kernel_start_message: str
    shutdown_message: str
    error_messages: list[str]


def method_parameters(device: dict[str, Any], method: str) -> dict[str, Any]:
    """``actions.boot.methods.<method>.parameters`` of the device configuration."""
    methods = ((device.get("actions") or {}).get("boot") or {}).get("methods") or {}
    return (methods.get(method) or {}).get("parameters") or {}


def settings(ctx: JobContext, params: dict[str, Any], method: str) -> Settings:
    device = method_parameters(ctx.device, method)
    job = params.get("parameters") or {}

    def pick(*candidates: Any) -> str:
        return next((str(c) for c in candidates if c is not None), "")

    newline = ctx.constant(method, "interrupt-newline", default=True)
    return Settings(
        method=method,
        prompt=pick(job.get("bootloader_prompt"), device.get("bootloader_prompt")),
        interrupt_prompt=pick(job.get("interrupt-prompt"), device.get("interrupt_prompt"),
                              ctx.constant(method, "interrupt-prompt")),
        interrupt_character=pick(job.get("interrupt-character"), device.get("interrupt_char"),
                                 ctx.constant(method, "interrupt-character"), " "),
        interrupt_newline=str(newline).lower() not in ("false", "no", "0"),
        interrupt_control=as_list(device.get("interrupt_ctrl_list") or ctx.constant(method, "interrupt_ctrl_list")),
        needs_interrupt=str(device.get("needs_interrupt", True)).lower() not in ("false", "no", "0"),
        final_message=pick(job.get("bootloader-final-message"), job.get("final-message"),
                           ctx.constant(method, "final-message")),
        kernel_start_message=pick(job.get("kernel-start-message"), job.get("boot_message"),
                                  device.get("boot_message"), ctx.constant("kernel-start-message")),
        shutdown_message=pick(job.get("shutdown-message"), ctx.constant("shutdown-message")),
        error_messages=as_list(ctx.constant(method, "error-messages")) + as_list(job.get("error-messages")),
    )


def check_settings(ctx: JobContext, found: Settings) -> None:
    """ConfigurationError when the device configuration lacks what the boot needs."""
    where = f"actions.boot.methods.{found.method}.parameters"
    if not found.prompt:
        raise ConfigurationError(f"device {ctx.device.get('hostname', '')} has no bootloader_prompt in {where}")
    if found.needs_interrupt and not found.interrupt_prompt:
        raise ConfigurationError(f"device {ctx.device.get('hostname', '')} has no interrupt_prompt in {where} "
                                 f"(nor constants.{found.method}.interrupt-prompt)")


# -- the commands -----------------------------------------------------------------------------

def command_set(ctx: JobContext, params: dict[str, Any], method: str) -> tuple[list[str], list[str]]:
    """(the commands the boot types, problems): a named set of the device, or the job's list."""
    commands = params.get("commands")
    if isinstance(commands, list):
        return [str(c) for c in commands], []
    methods = ((ctx.device.get("actions") or {}).get("boot") or {}).get("methods") or {}
    sets = {name: entry for name, entry in (methods.get(method) or {}).items()
            if name != "parameters" and isinstance(entry, dict) and "commands" in entry}
    if commands not in sets:
        name = ctx.device.get("hostname", "the device")
        return [], [f"{name} has no {method} command set {commands!r} (it has: {', '.join(sets) or 'none'})"]
    found = as_list(sets[commands]["commands"])
    if any(p in command for command in found for p in NFS_PLACEHOLDERS):
        return [], [f"the {method} command set {commands!r} mounts an NFS root filesystem and {NFS_REFUSED}"]
    return found, []


def substitute(commands: list[str], values: dict[str, str | None], log: Any) -> list[str]:
    """The commands with their placeholders filled in.

    A command with a placeholder whose value is None is dropped, as LAVA does (its
    ``substitute(..., drop=True)``): a device type's command set keeps optional steps such as
    ``tftp {DTB_ADDR} {DTB}`` that only a job deploying a DTB needs. A placeholder dutlab does
    not know is an error, not a literal ``{NAME}`` typed at the board.
    """
    out = []
    for command in commands:
        empty = [key for key, value in values.items() if value is None and key in command]
        if empty:
            why = "; ".join(f"{key}: {NO_VALUE.get(key, 'no value for this job')}" for key in empty)
            log(f"dropped {command!r} ({why})")
            continue
        for key, value in values.items():
            command = command.replace(key, str(value))
        unknown = PLACEHOLDER.findall(command)
        if unknown:
            hints = sorted({HOW_TO_FILL[name] for name in unknown if name in HOW_TO_FILL})
            raise JobError(f"the boot command {command!r} has placeholders dutlab cannot fill: "
                           f"{', '.join('{' + name + '}' for name in unknown)}" + "".join(f"; {h}" for h in hints))
        out.append(command)
    return out


class BootloaderAction(Action):
    """An action of a bootloader boot: it knows its method (``u-boot``), which names the device's
    ``actions.boot.methods.<method>`` and ``constants.<method>``."""

    def __init__(self, params: dict[str, Any], method: str) -> None:
        super().__init__(params)
        self.method = method

    def settings(self, ctx: JobContext) -> Settings:
        return settings(ctx, self.params, self.method)


class BootloaderOverlay(BootloaderAction):
    """Fill the placeholders of the boot commands with this job's values."""

    name = "bootloader-overlay"
    description = "substitute job data (server address, files, addresses) into the bootloader commands"
    summary = "replace placeholders with job data"
    #: kernel type -> the bootloader's boot command for it ({BOOTX}); a method sets its own
    boot_commands: ClassVar[dict[str, str]] = {}

    def validate(self, ctx: JobContext) -> list[str]:
        check_settings(ctx, self.settings(ctx))
        _, problems = command_set(ctx, self.params, self.method)
        mac = method_parameters(ctx.device, self.method).get("lava_mac")
        if mac and not MAC.fullmatch(str(mac)):
            raise ConfigurationError(f"the device's lava_mac {mac!r} is not a MAC address")
        return problems

    def run(self, ctx: JobContext) -> None:
        commands, problems = command_set(ctx, self.params, self.method)
        if problems:
            raise JobError("; ".join(problems))
        if isinstance(self.params.get("commands"), list):
            ctx.logger.warning("using the boot commands of the job definition, not the device's command sets")
        used = "".join(commands)
        if ctx.tftp is None and any(key in used for key in ("{KERNEL}", "{RAMDISK}", "{DTB}")):
            raise JobError("the boot commands fetch {KERNEL}/{RAMDISK}/{DTB} but no deploy to: tftp ran before "
                           "this boot")
        values = self.values(ctx, used)
        ctx.bootloader_commands = substitute(commands, values, ctx.logger.info)
        ctx.logger.info("boot commands:")
        for command in ctx.bootloader_commands:
            ctx.logger.info(f"- {command}")

    def values(self, ctx: JobContext, used: str) -> dict[str, str | None]:
        """Each placeholder's value for this job; None drops the commands using it."""
        files = ctx.tftp.files if ctx.tftp is not None else {}
        values: dict[str, str | None] = {
            "{KERNEL}": files.get("kernel"), "{RAMDISK}": files.get("ramdisk"), "{INITRD}": files.get("ramdisk"),
            "{DTB}": files.get("dtb"), "{TEE}": None, "{PRESEED_CONFIG}": None, "{PRESEED_LOCAL}": None,
            "{DTB_BASE_ADDR}": None, "{DTB_BASE_RESIZE}": None, "{APPLY_DTBO_COMMANDS}": None,
            "{ROOT}": None, "{ROOT_PART}": None, "{LAVA_JOB_ID}": str(ctx.job_id),
            "{LAVA_MAC}": str(method_parameters(ctx.device, self.method).get("lava_mac") or "") or None,
        }
        if "{SERVER_IP}" in used or "{LAVA_DISPATCHER_IP}" in used:
            address, source = tftp.server_address(ctx.dispatcher_ip)
            ctx.logger.info(f"{{SERVER_IP}} is {address} ({source})")
            values["{SERVER_IP}"] = values["{LAVA_DISPATCHER_IP}"] = address
        if ctx.tftp is not None and ctx.tftp.kernel_type and self.boot_commands:
            values.update(self.kernel_values(ctx, ctx.tftp))
        return values

    def kernel_values(self, ctx: JobContext, staged: TftpFiles) -> dict[str, str | None]:
        """{BOOTX} and the load addresses, from the device's address set for the kernel type."""
        kernel_type = staged.kernel_type
        command = self.boot_commands[kernel_type]
        parameters = ctx.device.get("parameters") or {}
        addresses = parameters.get(command) or parameters.get(kernel_type)
        if not isinstance(addresses, dict) or not addresses.get("kernel"):
            known = [name for name in self.boot_commands.values() if isinstance(parameters.get(name), dict)]
            raise JobError(f"the deploy's kernel type {kernel_type} boots with {command}, but device "
                           f"{ctx.device.get('hostname', '')} has no {command} load addresses (parameters.{command}); "
                           f"it has addresses for: {', '.join(known) or 'none'}")
        kernel, dtb = str(addresses["kernel"]), str(addresses.get("dtb") or "")
        ramdisk = str(addresses.get("ramdisk") or "")
        if "ramdisk" not in staged.files:
            passed = "-"
        elif staged.ramdisk_header:
            passed = ramdisk  # a u-boot image carries its size
        else:
            passed = f"{ramdisk}:${{initrd_size}}"  # a raw ramdisk: its size set by the command set
        bootx = f"{command} {kernel} {passed} {dtb}".rstrip()
        return {"{BOOTX}": bootx, "{KERNEL_ADDR}": kernel, "{RAMDISK_ADDR}": ramdisk or None,
                "{DTB_ADDR}": dtb or None, "{TEE_ADDR}": str(addresses.get("tee") or "") or None}


class BootloaderReset(ResetDevice):
    """reset-device that, after a soft reboot, waits for the shutdown message before going on."""

    def __init__(self, params: dict[str, Any], method: str) -> None:
        super().__init__(params)
        self.method = method

    def shutdown_message(self, ctx: JobContext) -> str:
        return settings(ctx, self.params, self.method).shutdown_message
