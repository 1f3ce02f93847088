"""boot method: u-boot: interrupt U-Boot on the board's console and type a command set.

Children (LAVA's names, which job ``timeouts:`` refer to): ``bootloader-overlay`` (the
device's command set named by ``commands:``, e.g. ``ramdisk``, or the job's own list, with
``{SERVER_IP}``, ``{KERNEL}``, ``{BOOTX}``... filled in), ``connect-device``,
``reset-device`` (unless ``reset: false``), ``bootloader-interrupt``, ``bootloader-commands``,
then ``auto-login-action`` when the block has ``prompts``. (LAVA nests the last four in
``uboot-commands``; here they sit directly under ``uboot-action``, whose timeout covers them.)

``{BOOTX}`` is ``booti``, ``bootz`` or ``bootm`` by the deploy's kernel type (image, zimage,
uimage), with the kernel, ramdisk and DTB addresses of the device's ``parameters.<command>``.
"""

from __future__ import annotations

from typing import Any

from ..context import JobContext
from ..pipeline import Action
from ..schema.common import boolean, mapping, refused
from .bootloader import PARAMETERS, BootloaderOverlay, BootloaderReset, commands_check
from .bootloader_console import BootloaderCommands, BootloaderInterrupt
from .common import selected
from .connect import ConnectDevice
from .login import BOOT_FIELDS, AutoLogin

KIND, METHOD = "boot", "u-boot"
SCHEMA = mapping({
    **BOOT_FIELDS, "commands": commands_check, "reset": boolean, "parameters": PARAMETERS,
    "use_bootscript": refused("Boot scripts (use_bootscript) are not supported by dutlab yet; "
                              "remove use_bootscript: the commands are typed at the prompt."),
}, required=("commands",))


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    return selected(device, params, KIND, "method", METHOD)


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    top = UBootAction(params)
    top.children = [UBootOverlay(params, METHOD), ConnectDevice(params)]
    if params.get("reset", True):
        top.children.append(BootloaderReset(params, METHOD))
    top.children += [BootloaderInterrupt(params, METHOD), UBootCommands(params, METHOD)]
    if params.get("prompts"):
        top.children.append(AutoLogin(params))
    return top


class UBootAction(Action):
    name = "uboot-action"
    description = "interrupt U-Boot and type the boot commands, then wait for the shell"
    summary = "boot with U-Boot"


class UBootOverlay(BootloaderOverlay):
    boot_commands = {"image": "booti", "zimage": "bootz", "uimage": "bootm"}


class UBootCommands(BootloaderCommands):
    # U-Boot reports every TFTP failure as "TFTP error: '<the server's text>'"; the device lists
    # (LAVA's) name tftpd-hpa's "File not found", but dnsmasq says "file ... not found for ...".
    builtin_errors = ("TFTP error: ",)
