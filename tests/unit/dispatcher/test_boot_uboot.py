"""boot method: u-boot: its schema, placeholders and {BOOTX}, the settings' precedence, the
console dialogue (against a scripted console process) and how u-boot's messages are classified."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dutlab.dispatcher.actions import boot_uboot
from dutlab.dispatcher.actions.bootloader import settings
from dutlab.dispatcher.actions.bootloader_console import BootloaderCommands, BootloaderInterrupt, bootloader_error
from dutlab.dispatcher.actions.connect import ConnectDevice
from dutlab.dispatcher.actions.finalize import Finalize
from dutlab.dispatcher.actions.registry import build_actions
from dutlab.dispatcher.context import JobContext, TftpFiles
from dutlab.dispatcher.errors import InfrastructureError, JobError
from dutlab.dispatcher.log import JobLogger, read_log
from dutlab.dispatcher.pipeline import Pipeline
from dutlab.dispatcher.schema.common import JobDefinitionError
from dutlab.dispatcher.schema.job import validate_job
from factories import board_device

DEVICE = board_device()
KERNEL = "dutlab-1-x/kernel/Image"
RAMDISK = "dutlab-1-x/ramdisk/rootfs.cpio.gz.uboot"


def device(**changes: Any) -> dict[str, Any]:
    copy = yaml.safe_load(yaml.safe_dump(DEVICE))
    for path, value in changes.items():
        node = copy
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return copy


def boot_block(**extra: Any) -> dict[str, Any]:
    return {"method": "u-boot", "commands": "ramdisk", "prompts": ["dutlab:~# "], **extra}


def boot_job(block: dict[str, Any]) -> dict[str, Any]:
    return {"job_name": "u-boot", "device_type": "qemu-uboot-arm64", "timeouts": {"job": {"minutes": 5}},
            "actions": [{"boot": block}]}


def context(tmp_path: Path, block: dict[str, Any], dev: dict[str, Any] | None = None,
            staged: TftpFiles | None = None) -> JobContext:
    ctx = JobContext(job_id=1, job=boot_job(block), device=dev or device(),
                     logger=JobLogger(tmp_path / "output.yaml"), output_dir=tmp_path, work_dir=tmp_path,
                     tmp_dir=tmp_path / "tmp", dispatcher_ip="10.0.2.2")
    ctx.tftp = staged
    return ctx


def staged(kernel_type: str = "image", ramdisk: bool = True, header: bool = True, dtb: bool = False) -> TftpFiles:
    files = {"kernel": KERNEL}
    if ramdisk:
        files["ramdisk"] = RAMDISK if header else RAMDISK.removesuffix(".uboot")
    if dtb:
        files["dtb"] = "dutlab-1-x/dtb/board.dtb"
    return TftpFiles(folder=Path("/srv/tftp/dutlab-1-x"), files=files, kernel_type=kernel_type,
                     ramdisk_header=header)


def overlay_commands(ctx: JobContext) -> list[str]:
    overlay = build_actions(ctx)[0].children[0]
    assert overlay.name == "bootloader-overlay"
    assert overlay.validate(ctx) == []
    overlay.run(ctx)
    return ctx.bootloader_commands


# -- schema ---------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [
    boot_block(),
    boot_block(commands=["dhcp", "tftp {KERNEL_ADDR} {KERNEL}", "{BOOTX}"], reset=False),
    boot_block(parameters={"shutdown-message": "reboot: Restarting system", "interrupt-character": " ",
                           "interrupt-prompt": "Press SPACE", "bootloader_prompt": "=> ", "final-message": "Starting",
                           "kernel-start-message": "Linux version", "error-messages": ["Card did not respond"]},
               auto_login={"login_prompt": "login:", "username": "root"}, timeout={"minutes": 3}),
], ids=["named", "list", "parameters"])
def test_good_u_boot_blocks_validate(block: dict[str, Any]) -> None:
    validate_job(boot_job(block))


@pytest.mark.parametrize(("block", "path", "message"), [
    ({"method": "u-boot", "prompts": ["# "]}, "actions[0].boot.commands", "The required key 'commands' is missing."),
    (boot_block(commands="nfs"), "actions[0].boot.commands",
     "The nfs command set boots an NFS root filesystem and dutlab does not support NFS root filesystems yet "
     "(no NFS server on the worker); use commands: ramdisk."),
    (boot_block(commands=["dhcp", "setenv bootargs root=/dev/nfs nfsroot={NFS_SERVER_IP}:{NFSROOTFS}"]),
     "actions[0].boot.commands[1]", "This command mounts an NFS root filesystem and dutlab does not support NFS "
                                    "root filesystems yet (no NFS server on the worker); boot a ramdisk instead."),
    (boot_block(use_bootscript=True), "actions[0].boot.use_bootscript",
     "Boot scripts (use_bootscript) are not supported by dutlab yet; remove use_bootscript: the commands are typed "
     "at the prompt."),
    (boot_block(parameters={"error-messages": ["Bad ("]}), "actions[0].boot.parameters.error-messages[0]",
     "does not compile"),
    (boot_block(commands=[]), "actions[0].boot.commands", "at least 1 item"),
    (boot_block(type="image"), "actions[0].boot.type", "Unknown key 'type'"),
])
def test_malformed_u_boot_blocks_name_the_path(block: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(JobDefinitionError) as info:
        validate_job(boot_job(block))
    assert info.value.path == path and message in info.value.message, info.value


def test_the_pipeline_has_lava_names(tmp_path: Path) -> None:
    ctx = context(tmp_path, boot_block())
    top = build_actions(ctx)[0]
    assert type(top).__module__ == boot_uboot.__name__
    assert [top.name, *(c.name for c in top.children)] == [
        "uboot-action", "bootloader-overlay", "connect-device", "reset-device", "bootloader-interrupt",
        "bootloader-commands", "auto-login-action"]
    no_reset = build_actions(context(tmp_path, boot_block(reset=False, prompts=None)))[0]
    assert [c.name for c in no_reset.children] == ["bootloader-overlay", "connect-device", "bootloader-interrupt",
                                                   "bootloader-commands"]


# -- placeholders ---------------------------------------------------------------------------

def test_the_ramdisk_set_with_a_u_boot_ramdisk_and_no_dtb(tmp_path: Path) -> None:
    ctx = context(tmp_path, boot_block(), staged=staged())
    assert overlay_commands(ctx) == [
        "setenv autoload no", "setenv initrd_high 0xffffffff", "setenv fdt_high 0xffffffff", "dhcp",
        "setenv serverip 10.0.2.2", f"tftp 0x40400000 {KERNEL}", f"tftp 0x44000000 {RAMDISK}",
        "setenv initrd_size ${filesize}", "setenv bootargs 'console=ttyAMA0,115200n8 root=/dev/ram0 ip=dhcp'",
        "booti 0x40400000 0x44000000 0x40000000"]
    infos = [r["msg"] for r in read_log(tmp_path / "output.yaml") if r["lvl"] == "info"]
    assert "dropped 'tftp {DTB_ADDR} {DTB}' ({DTB}: the job deploys no dtb)" in infos
    assert "dropped 'tftp {TEE_ADDR} {TEE}' ({TEE}: the job deploys no tee)" in infos
    assert "{SERVER_IP} is 10.0.2.2 (dispatcher_ip)" in infos


@pytest.mark.parametrize(("kernel_type", "files", "bootx"), [
    ("image", {"header": True}, "booti 0x40400000 0x44000000 0x40000000"),
    ("image", {"header": False}, "booti 0x40400000 0x44000000:${initrd_size} 0x40000000"),
    ("image", {"ramdisk": False}, "booti 0x40400000 - 0x40000000"),
    ("uimage", {"header": True}, "bootm 0x40400000 0x44000000 0x40000000"),
    ("zimage", {"header": False}, "bootz 0x82000000 0x83000000:${initrd_size} 0x88000000"),
])
def test_bootx_follows_the_kernel_type_and_the_ramdisk(tmp_path: Path, kernel_type: str, files: dict[str, bool],
                                                       bootx: str) -> None:
    dev = device(parameters__bootz={"kernel": "0x82000000", "ramdisk": "0x83000000", "dtb": "0x88000000"})
    ctx = context(tmp_path, boot_block(commands=["{BOOTX}"]), dev, staged(kernel_type, **files))
    assert overlay_commands(ctx) == [bootx]


def test_a_deployed_dtb_is_fetched_and_a_job_list_is_used_as_given(tmp_path: Path) -> None:
    commands = ["setenv serverip {SERVER_IP}", "tftp {DTB_ADDR} {DTB}", "tftp {RAMDISK_ADDR} {RAMDISK}",
                "echo job {LAVA_JOB_ID} ${filesize}", "{BOOTX}"]
    ctx = context(tmp_path, boot_block(commands=commands), staged=staged(dtb=True, ramdisk=False))
    assert overlay_commands(ctx) == ["setenv serverip 10.0.2.2", "tftp 0x40000000 dutlab-1-x/dtb/board.dtb",
                                     "echo job 1 ${filesize}", "booti 0x40400000 - 0x40000000"]
    warnings = [r["msg"] for r in read_log(tmp_path / "output.yaml") if r["lvl"] == "warning"]
    assert warnings == ["using the boot commands of the job definition, not the device's command sets"]


def test_a_command_set_the_device_lacks_is_named_with_the_ones_it_has(tmp_path: Path) -> None:
    ctx = context(tmp_path, boot_block(commands="usb"), staged=staged())
    with pytest.raises(JobError, match=r"1.1 bootloader-overlay: uboot01 has no u-boot command set 'usb' "
                                       r"\(it has: (ramdisk, nfs|nfs, ramdisk)\)"):
        Pipeline(ctx, build_actions(ctx), Finalize()).validate()


def test_unfillable_placeholders_are_errors_not_typed(tmp_path: Path) -> None:
    ctx = context(tmp_path, boot_block(commands=["{BOOTX}"]), staged=staged(kernel_type=""))
    with pytest.raises(JobError) as info:
        overlay_commands(ctx)
    assert str(info.value) == ("the boot command '{BOOTX}' has placeholders dutlab cannot fill: {BOOTX}; give the "
                               "deploy's kernel a type (image, zimage or uimage)")
    ctx = context(tmp_path, boot_block(commands=["nbd {NBDSERVERIP}"]), staged=staged())
    with pytest.raises(JobError, match=r"'nbd \{NBDSERVERIP\}' has placeholders dutlab cannot fill: \{NBDSERVERIP\}$"):
        overlay_commands(ctx)


def test_a_kernel_type_without_load_addresses_is_a_job_error(tmp_path: Path) -> None:
    ctx = context(tmp_path, boot_block(), staged=staged(kernel_type="zimage"))
    with pytest.raises(JobError) as info:
        overlay_commands(ctx)
    assert str(info.value) == ("the deploy's kernel type zimage boots with bootz, but device uboot01 has no bootz "
                               "load addresses (parameters.bootz); it has addresses for: booti, bootm")


def test_file_placeholders_need_a_tftp_deploy(tmp_path: Path) -> None:
    ctx = context(tmp_path, boot_block())
    with pytest.raises(JobError, match="no deploy to: tftp ran before this boot"):
        overlay_commands(ctx)


# -- settings: job parameters > device method parameters > constants --------------------------

def test_settings_precedence(tmp_path: Path) -> None:
    found = settings(context(tmp_path, boot_block()), boot_block(), "u-boot")
    assert (found.prompt, found.interrupt_prompt, found.interrupt_character) == (
        "=>", "Hit any key to stop autoboot", "")
    assert (found.final_message, found.kernel_start_message, found.shutdown_message) == (
        "Starting kernel", "Linux version [0-9]", "The system is going down for reboot NOW")
    assert "Bad Linux ARM64 Image magic!" in found.error_messages and found.needs_interrupt
    job = boot_block(parameters={"bootloader_prompt": "U-Boot>", "interrupt-prompt": "Press any key",
                                 "interrupt-character": "x", "bootloader-final-message": "Booting",
                                 "boot_message": "Booting Linux", "shutdown-message": "reboot: Restarting",
                                 "error-messages": ["No ethernet found"]})
    found = settings(context(tmp_path, job), job, "u-boot")
    assert (found.prompt, found.interrupt_prompt, found.interrupt_character) == ("U-Boot>", "Press any key", "x")
    assert (found.final_message, found.kernel_start_message, found.shutdown_message) == (
        "Booting", "Booting Linux", "reboot: Restarting")
    assert found.error_messages[-1] == "No ethernet found" and "File not found" in found.error_messages


# -- how u-boot's messages end the boot ---------------------------------------------------------

@pytest.mark.parametrize(("command", "line", "error_type", "message"), [
    ("tftp 0x44000000 dutlab-1-x/ramdisk/rd", "TFTP error: 'File not found' (1)", InfrastructureError,
     "bootloader-commands: u-boot printed \"TFTP error: 'File not found' (1)\" after 'tftp 0x44000000 "
     "dutlab-1-x/ramdisk/rd': the board could not fetch 'dutlab-1-x/ramdisk/rd'; check the TFTP server (its root "
     "must be the worker's TFTP root) and the board's network link"),
    ("dhcp", "Retry time exceeded; starting again", InfrastructureError,
     "bootloader-commands: u-boot printed 'Retry time exceeded; starting again' after 'dhcp': the board got no DHCP "
     "answer; check the lab's DHCP server and the board's network link"),
    ("dhcp", "TFTP error: 'File not found' (1)", InfrastructureError,
     "after 'dhcp': the board could not fetch the DHCP server's boot file (type 'setenv autoload no' before dhcp to "
     "fetch nothing)"),
    ("booti 0x40400000 - 0x40000000", "Bad Linux ARM64 Image magic!", JobError,
     "bootloader-commands: u-boot refused the job's files: 'Bad Linux ARM64 Image magic!' after 'booti 0x40400000 "
     "- 0x40000000'; check the deploy's kernel type and images"),
    ("booti 0x40400000 0x44000000 0x40000000", "Wrong Ramdisk Image Format", JobError, "refused the job's files"),
    ("tftp 0x40400000 big", "TFTP error: trying to overwrite reserved memory...", JobError, "refused the job's"),
    ("mmc rescan", "Resetting CPU ...", InfrastructureError,
     "bootloader-commands: u-boot printed 'Resetting CPU ...' after 'mmc rescan'"),
])
def test_u_boot_messages_are_classified(command: str, line: str, error_type: type, message: str) -> None:
    error = bootloader_error("bootloader-commands", "u-boot", command, line)
    assert type(error) is error_type and message in str(error), error


# -- the dialogue, against a scripted console ------------------------------------------------

FAKE_UBOOT = textwrap.dedent('''
    import sys, time
    def out(text):
        sys.stdout.write(text); sys.stdout.flush()
    out("U-Boot 2023.01\\r\\nHit any key to stop autoboot:  2 ")
    sys.stdin.readline()
    out("\\r\\n=> ")
    for line in sys.stdin:
        line = line.strip()
        out(line + "\\r\\n")
        if line.startswith("tftp") and "missing" in line:
            out("TFTP error: 'File not found' (1)\\r\\nNot retrying...\\r\\n=> ")
        elif line.startswith("booti") and "garbage" in line:
            out("Bad Linux ARM64 Image magic!\\r\\n=> ")
        elif line.startswith("booti") and "unknown" in line:
            out("something else went wrong\\r\\n=> ")
        elif line.startswith("booti"):
            out("\\r\\nStarting kernel ...\\r\\n\\r\\n[    0.000000] Linux version 6.1.0\\r\\n")
            time.sleep(30)
        else:
            out("=> ")
''')


def dialogue(tmp_path: Path, commands: list[str], **block: Any) -> JobContext:
    script = tmp_path / "fake-uboot.py"
    script.write_text(FAKE_UBOOT)
    dev = device(commands={"connect": f"{sys.executable} {script}"}, character_delays={"boot": 1})
    ctx = context(tmp_path, boot_block(**block), dev)
    ctx.connection_timeout = 5.0
    ConnectDevice(ctx.job["actions"][0]["boot"]).run(ctx)
    BootloaderInterrupt(ctx.job["actions"][0]["boot"], "u-boot").run(ctx)
    ctx.bootloader_commands = commands
    return ctx


def run_commands(ctx: JobContext) -> None:
    try:
        BootloaderCommands(ctx.job["actions"][0]["boot"], "u-boot").run(ctx)
    finally:
        assert ctx.console is not None
        ctx.console.close()


def test_commands_are_typed_one_prompt_at_a_time_until_the_kernel_starts(tmp_path: Path) -> None:
    ctx = dialogue(tmp_path, ["setenv autoload no", "dhcp", "booti 0x40400000 - 0x40000000"])
    run_commands(ctx)
    records = read_log(tmp_path / "output.yaml")
    assert [r["msg"] for r in records if r["lvl"] == "input"] == ["", "setenv autoload no", "dhcp",
                                                                  "booti 0x40400000 - 0x40000000"]
    assert any("Linux version 6.1.0" in r["msg"] for r in records if r["lvl"] == "target")


def test_a_tftp_error_ends_the_boot_at_once_naming_the_file(tmp_path: Path) -> None:
    ctx = dialogue(tmp_path, ["tftp 0x44000000 missing/rd", "booti 1 2 3"])
    with pytest.raises(InfrastructureError, match="the board could not fetch 'missing/rd'"):
        run_commands(ctx)
    assert "booti 1 2 3" not in [r["msg"] for r in read_log(tmp_path / "output.yaml") if r["lvl"] == "input"]


def test_an_image_error_after_the_boot_command_is_a_job_error(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="refused the job's files: 'Bad Linux ARM64 Image magic!' after 'booti garbage'"):
        run_commands(dialogue(tmp_path, ["booti garbage"]))


def test_back_at_the_prompt_without_starting_the_kernel_is_a_job_error(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="u-boot returned to its prompt after 'booti unknown' without starting the "
                                       "kernel"):
        run_commands(dialogue(tmp_path, ["booti unknown"]))


def test_no_interrupt_prompt_is_an_infrastructure_error_naming_prompt_and_wait(tmp_path: Path) -> None:
    dev = device(commands={"connect": f"{sys.executable} -c 'import time; time.sleep(30)'"})
    ctx = context(tmp_path, boot_block(), dev)
    ctx.connection_timeout = 1.0
    ConnectDevice(boot_block()).run(ctx)
    try:
        with pytest.raises(InfrastructureError) as info:
            BootloaderInterrupt(boot_block(), "u-boot").run(ctx)
    finally:
        assert ctx.console is not None
        ctx.console.close()
    assert str(info.value).startswith("bootloader-interrupt: the interrupt prompt 'Hit any key to stop autoboot' "
                                      "did not appear within 1 s (last console output: nothing); check that the "
                                      "board is powered")


# -- a soft reboot asked for by the boot block -----------------------------------------------

FAKE_SHELL = textwrap.dedent('''
    import sys
    def out(text):
        sys.stdout.write(text); sys.stdout.flush()
    out("dutlab:~# ")
    for line in sys.stdin:
        out(line.strip() + "\\r\\n")
        if line.startswith("printf"):
            out("going down for a soft reboot NOW\\r\\n")
        elif line.startswith("reboot"):
            out("U-Boot 2023.01\\r\\nHit any key to stop autoboot:  2 ")
        else:
            out("dutlab:~# ")
''')


def soft_reboot(tmp_path: Path, **block: Any) -> tuple[JobContext, Path]:
    """reset-device of a boot block on a board at its shell, whose PDU command leaves a mark."""
    script = tmp_path / "fake-shell.py"
    script.write_text(FAKE_SHELL)
    pdu = tmp_path / "pdu-ran"
    dev = device(commands={"connect": f"{sys.executable} {script}", "hard_reset": f"touch {pdu}"})
    ctx = context(tmp_path, boot_block(**block), dev)
    ctx.connection_timeout = 3.0
    ctx.deadline = time.monotonic() + 30
    ConnectDevice(ctx.job["actions"][0]["boot"]).run(ctx)
    reset = next(a for a in build_actions(ctx)[0].children if a.name == "reset-device")
    try:
        reset.run(ctx)
    finally:
        assert ctx.console is not None
        ctx.console.close()
    return ctx, pdu


@pytest.mark.parametrize("commands", ["reboot -f", ["printf 'going down for a soft reboot %s\\n' NOW", "reboot -f"]])
def test_soft_reboot_commands_validate_as_a_string_or_a_list(commands: Any) -> None:
    validate_job(boot_job(boot_block(soft_reboot=commands)))


@pytest.mark.parametrize(("value", "message"), [([], "at least 1 item"),
                                                 (3, "Expected a command (a string) or a list of commands")])
def test_a_malformed_soft_reboot_names_its_path(value: Any, message: str) -> None:
    with pytest.raises(JobDefinitionError) as info:
        validate_job(boot_job(boot_block(soft_reboot=value)))
    assert info.value.path == "actions[0].boot.soft_reboot" and message in info.value.message, info.value


def test_the_boot_soft_reboot_is_typed_instead_of_the_pdu_and_waits_for_the_shutdown_message(tmp_path: Path) -> None:
    commands = ["printf 'going down for a soft reboot %s\\n' NOW", "reboot -f"]
    ctx, pdu = soft_reboot(tmp_path, soft_reboot=commands,
                           parameters={"shutdown-message": "going down for a soft reboot NOW"})
    assert not pdu.exists(), "the device's hard_reset ran although the boot asked for a soft reboot"
    records = read_log(tmp_path / "output.yaml")
    assert [r["msg"] for r in records if r["lvl"] == "input"] == commands
    assert "soft reboot: the board printed 'going down for a soft reboot NOW'" in [
        r["msg"] for r in records if r["lvl"] == "info"]


def test_a_soft_reboot_without_its_shutdown_message_is_an_infrastructure_error(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError) as info:
        soft_reboot(tmp_path, soft_reboot="true")  # the device's constant: LAVA's default message
    assert str(info.value).startswith(
        "reset-device: the shutdown message 'The system is going down for reboot NOW' did not appear within 3 s of "
        "typing 'true' (the boot's soft_reboot), so the board did not reboot (last console output: ")
    assert str(info.value).endswith("check the boot's soft_reboot and the shutdown-message (the boot's parameters, "
                                    "else the device's constants)")


def test_without_a_boot_soft_reboot_the_pdu_resets_the_board(tmp_path: Path) -> None:
    _, pdu = soft_reboot(tmp_path)
    assert pdu.exists()
