"""The u-boot board types render what LAVA's types of the same name render.

Each expected value is a fact of LAVA's rendering of that device type (LAVA's template
files under etc/dispatcher-config/device-types/ rendered with a dictionary like LAB below);
the comment next to it says which. Whitespace differs in one place only: where LAVA joins
empty kernel arguments with two spaces, dutlab writes one.
"""

from pathlib import Path

import pytest

from dutlab.dispatcher.schema.loader import parse_job
from dutlab.service import devicecfg
from dutlab.service.config import Settings
from dutlab.service.lab import device_types
from dutlab.service.models import Device, DeviceType
from dutlab.service.templating import load_device_config, shipped_device_types_dir

SHIPPED = [shipped_device_types_dir()]
PDU = "pduclient --daemon localhost --hostname pdu01 --port 1 --command "
# what a lab's dictionary adds to the device type (the emulated board lab writes these)
LAB = (
    "{% set connection_command = 'telnet 127.0.0.1 7101' %}\n"
    f"{{% set power_on_command = '{PDU}on' %}}\n"
    f"{{% set power_off_command = '{PDU}off' %}}\n"
    f"{{% set hard_reset_command = '{PDU}reboot' %}}\n"
)
BOARDS = ["qemu-uboot-arm64", "beaglebone-black", "bcm2711-rpi-4-b", "imx8mm-evk"]


def board(device_type, extra="", **context):
    dictionary = f"{{% extends '{device_type}.jinja2' %}}\n" + LAB + extra
    return load_device_config(dictionary, hostname="board01", device_type=device_type, context=context,
                              search_path=SHIPPED)


def uboot(cfg):
    return cfg["actions"]["boot"]["methods"]["u-boot"]


def ramdisk_commands(cfg):
    return uboot(cfg)["ramdisk"]["commands"]


def bootargs(cfg, command_set="ramdisk"):
    (line,) = [c for c in uboot(cfg)[command_set]["commands"] if c.startswith("setenv bootargs ")]
    return line.removeprefix("setenv bootargs ").strip("'")


# LAVA's base-uboot `ramdisk` set: common commands, TFTP loads, bootargs, {BOOTX}
HIGH_LIMITS = ["setenv initrd_high 0xffffffff", "setenv fdt_high 0xffffffff"]
NETWORK = ["dhcp", "setenv serverip {SERVER_IP}"]
LOADS = ["tftp {KERNEL_ADDR} {KERNEL}", "tftp {RAMDISK_ADDR} {RAMDISK}", "tftp {TEE_ADDR} {TEE}",
         "setenv initrd_size ${filesize}", "tftp {DTB_ADDR} {DTB}"]

EXPECTED = {
    "qemu-uboot-arm64": {
        # u-boot 2023.01 qemu_arm64 `printenv`: kernel_addr_r, ramdisk_addr_r, fdt_addr (QEMU's DTB)
        "addresses": {"booti": ("0x40400000", "0x44000000", "0x40000000"),
                      "bootm": ("0x40400000", "0x44000000", "0x40000000")},
        "bootargs": "console=ttyAMA0,115200n8 root=/dev/ram0 ip=dhcp",  # PL011 of QEMU virt
        "prompt": "=>",  # u-boot's default prompt, seen on the emulated board
        "mkimage_arch": "arm64",
        "high_limits": True,
    },
    "beaglebone-black": {
        # LAVA's beaglebone-black: bootz_kernel_addr 0x82000000, ramdisk 0x83000000, dtb 0x88000000;
        # bootm the same
        "addresses": {"bootz": ("0x82000000", "0x83000000", "0x88000000"),
                      "bootm": ("0x82000000", "0x83000000", "0x88000000")},
        "bootargs": "console=ttyO0,115200n8 root=/dev/ram0 ip=dhcp",  # LAVA: console_device ttyO0
        "prompt": "U-Boot",  # LAVA: bootloader_prompt U-Boot
        "mkimage_arch": "arm",  # LAVA: uboot_mkimage_arch arm
        "high_limits": True,
    },
    "bcm2711-rpi-4-b": {
        # LAVA's bcm2711-rpi-4-b: booti/bootm kernel 0x00200000, ramdisk 0x09900000, dtb 0x09800000
        "addresses": {"booti": ("0x00200000", "0x09900000", "0x09800000"),
                      "bootm": ("0x00200000", "0x09900000", "0x09800000")},
        # LAVA: console ttyS1, extra_kernel_args earlycon=uart,mmio32,0xfe215040
        "bootargs": "console=ttyS1,115200n8 root=/dev/ram0 earlycon=uart,mmio32,0xfe215040 ip=dhcp",
        "prompt": "U-Boot>",  # LAVA: bootloader_prompt U-Boot>
        "mkimage_arch": "arm64",
        "high_limits": True,
    },
    "imx8mm-evk": {
        # LAVA's imx8mm-evk (imx8m common): u-boot's own ${loadaddr} ${initrd_addr} ${fdt_addr},
        # for booti, bootz and bootm
        "addresses": {name: ("${loadaddr}", "${initrd_addr}", "${fdt_addr}") for name in ("booti", "bootz", "bootm")},
        # LAVA: console_device 'ttymxc1,115200 earlycon=ec_imx6q,0x30890000', then ',115200n8'
        "bootargs": "console=ttymxc1,115200 earlycon=ec_imx6q,0x30890000,115200n8 root=/dev/ram0 ip=dhcp",
        "prompt": "=>",  # LAVA: base-uboot's default
        "mkimage_arch": "arm64",
        "high_limits": False,  # LAVA: base_high_limits false
    },
}
ALIASES = {"booti": "image", "bootz": "zimage", "bootm": "uimage"}  # LAVA writes both names


@pytest.mark.parametrize("device_type", BOARDS)
def test_ramdisk_commands_in_order(device_type):
    facts = EXPECTED[device_type]
    prepare = ["setenv autoload no"] + (HIGH_LIMITS if facts["high_limits"] else [])
    expected = prepare + NETWORK + LOADS + [f"setenv bootargs '{facts['bootargs']}'", "{BOOTX}"]
    assert ramdisk_commands(board(device_type)) == expected


@pytest.mark.parametrize("device_type", BOARDS)
def test_addresses_per_boot_command(device_type):
    params = board(device_type)["parameters"]
    sets = EXPECTED[device_type]["addresses"]
    for command in ("booti", "bootz", "bootm"):
        if command not in sets:
            assert command not in params and ALIASES[command] not in params
            continue
        kernel, ramdisk, dtb = sets[command]
        for name in (command, ALIASES[command]):
            assert params[name]["kernel"] == kernel
            assert params[name]["ramdisk"] == ramdisk
            assert params[name]["dtb"] == dtb


@pytest.mark.parametrize("device_type", BOARDS)
def test_prompts_interrupt_and_lab_commands(device_type):
    cfg = board(device_type)
    params = uboot(cfg)["parameters"]
    assert params["bootloader_prompt"] == EXPECTED[device_type]["prompt"]
    # LAVA's base-uboot: interrupt_prompt "Hit any key to stop autoboot", interrupt_char "" (a bare
    # newline, as interrupt-newline is true), needs_interrupt true
    assert params["interrupt_prompt"] == "Hit any key to stop autoboot"
    assert params["interrupt_char"] == ""
    assert params["needs_interrupt"] is True
    assert cfg["actions"]["deploy"]["parameters"] == {
        "add_header": "u-boot", "mkimage_arch": EXPECTED[device_type]["mkimage_arch"],
        "append_dtb": False, "use_xip": False}
    assert cfg["commands"] == {"connect": "telnet 127.0.0.1 7101", "power_on": PDU + "on",
                               "power_off": PDU + "off", "hard_reset": PDU + "reboot"}
    assert set(cfg["actions"]["deploy"]["methods"]) == {"tftp"}
    assert set(cfg["actions"]["boot"]["methods"]) == {"minimal", "u-boot"}
    assert cfg["devicetype"] == device_type


@pytest.mark.parametrize("device_type", BOARDS)
def test_uboot_constants(device_type):
    constants = board(device_type)["constants"]
    ub = constants["u-boot"]
    # LAVA's base.jinja2 u-boot section
    assert ub["interrupt-prompt"] == "Hit any key to stop autoboot"
    assert ub["interrupt-character"] == " "
    assert ub["interrupt-newline"] is True
    assert ub["final-message"] == "Starting kernel"
    assert ub["error-messages"][:4] == ["Resetting CPU", "Must RESET board to recover", "TIMEOUT",
                                        "Retry count exceeded"]
    for message in ("File not found", "Bad Linux ARM64 Image magic!", "Wrong Ramdisk Image Format",
                    "TFTP error: trying to overwrite reserved memory", "zimage: Bad magic"):
        assert message in ub["error-messages"]
    assert constants["kernel-start-message"] == "Linux version [0-9]"
    # LAVA's imx8m common: uboot_extra_error_message "Invalid partition", shutdown "Restarting system"
    imx = device_type == "imx8mm-evk"
    assert ("Invalid partition" in ub["error-messages"]) is imx
    assert len(ub["error-messages"]) == 18 + imx
    assert constants["shutdown-message"] == (
        "Restarting system" if imx else "The system is going down for reboot NOW")
    # LAVA's bcm2711-rpi-4-b: interrupt_ctrl_list ['c'] (Ctrl-C instead of the character)
    assert ub["interrupt_ctrl_list"] == (["c"] if device_type == "bcm2711-rpi-4-b" else [])


def test_character_delays_and_timeouts():
    # LAVA's beaglebone-black: boot_character_delay 10; imx8m common: boot 5, test 5
    assert board("beaglebone-black")["character_delays"] == {"boot": 10}
    assert board("imx8mm-evk")["character_delays"] == {"boot": 5, "test": 5}
    assert "character_delays" not in board("qemu-uboot-arm64")
    # LAVA's bcm2711-rpi-4-b: action_timeout_bootloader_interrupt '60' (seconds)
    assert board("bcm2711-rpi-4-b")["timeouts"]["actions"]["bootloader-interrupt"] == {"seconds": 60}
    assert board("beaglebone-black")["timeouts"]["actions"]["bootloader-interrupt"] == {"seconds": 30}
    # a LAVA dictionary may write a number as a string
    cfg = board("beaglebone-black", "{% set action_timeout_uboot_commands = '4' %}")
    assert cfg["timeouts"]["actions"]["uboot-commands"] == {"minutes": 4}


def test_nfs_command_set_is_offered():
    # present as in LAVA, so that `commands: nfs` is refused as not supported rather than unknown
    cfg = board("imx8mm-evk")
    assert uboot(cfg)["nfs"]["commands"][-1] == "{BOOTX}"
    # LAVA's imx8m common: extra_nfsroot_args ",v3"
    assert bootargs(cfg, "nfs") == ("console=ttymxc1,115200 earlycon=ec_imx6q,0x30890000,115200n8 root=/dev/nfs rw "
                                    "nfsroot={NFS_SERVER_IP}:{NFSROOTFS},tcp,hard,v3 ip=dhcp")
    assert "nfsroot={NFS_SERVER_IP}:{NFSROOTFS},tcp,hard " in bootargs(board("beaglebone-black"), "nfs")


def test_emulated_board_lab_dictionary():
    cfg = board("qemu-uboot-arm64", "{% set device_mac = '52:54:00:12:34:70' %}")
    assert cfg["parameters"]["interfaces"] == {"target": {"ip": None, "mac": "52:54:00:12:34:70"}}
    assert cfg["parameters"]["booti"]["kernel"] == "0x40400000"  # the address sets stay
    assert cfg["commands"]["connect"] == "telnet 127.0.0.1 7101"
    assert "zimage" not in cfg["parameters"]  # an arm64 board: no bootz


def test_dictionary_beats_job_context():
    extra = "{% set console_device = 'ttyAMA1' %}{% set bootloader_prompt = 'virt=>' %}"
    cfg = board("qemu-uboot-arm64", extra, console_device="ttyAMA3", bootloader_prompt="ctx=>")
    assert bootargs(cfg).startswith("console=ttyAMA1,115200n8 ")
    assert uboot(cfg)["parameters"]["bootloader_prompt"] == "virt=>"


def test_job_context_beats_template_defaults():
    cfg = board("bcm2711-rpi-4-b", console_device="ttyS0", extra_kernel_args="8250.nr_uarts=1 cma=64M",
                bootloader_prompt="=>", booti_kernel_addr="0x00080000")
    # the Raspberry Pi kernel sources case of LAVA's bcm2711-rpi-4-b notes: extra_kernel_args replaces
    # the earlycon default
    assert bootargs(cfg) == "console=ttyS0,115200n8 root=/dev/ram0 8250.nr_uarts=1 cma=64M ip=dhcp"
    assert uboot(cfg)["parameters"]["bootloader_prompt"] == "=>"
    assert cfg["parameters"]["booti"]["kernel"] == "0x00080000"
    assert cfg["parameters"]["booti"]["dtb"] == "0x09800000"
    cfg = board("beaglebone-black", console_device="ttyS2", extra_kernel_args="quiet")
    assert bootargs(cfg) == "console=ttyS2,115200n8 root=/dev/ram0 quiet ip=dhcp"


def test_what_lava_fixes_the_job_cannot_change():
    # LAVA's beaglebone-black sets its addresses and mkimage arch without a default; imx8mm-evk
    # its console
    cfg = board("beaglebone-black", bootz_kernel_addr="0x1", uboot_mkimage_arch="arm64")
    assert cfg["parameters"]["bootz"]["kernel"] == "0x82000000"
    assert cfg["actions"]["deploy"]["parameters"]["mkimage_arch"] == "arm"
    assert bootargs(board("imx8mm-evk", console_device="ttyS0")).startswith("console=ttymxc1,115200 ")
    cfg = board("bcm2711-rpi-4-b", interrupt_ctrl_list=[])
    assert cfg["constants"]["u-boot"]["interrupt_ctrl_list"] == ["c"]


def test_imx8mm_fixed_addresses_without_uboot_environment():
    # LAVA's imx8m common with use_uboot_env_addr false
    cfg = board("imx8mm-evk", "{% set use_uboot_env_addr = false %}")
    assert [cfg["parameters"]["booti"][k] for k in ("kernel", "ramdisk", "dtb")] == [
        "0x40400000", "0x43800000", "0x43000000"]


def test_uboot_variables_of_lava_dictionaries():
    extra = (
        "{% set uboot_needs_usb = true %}{% set uboot_set_mac = true %}"
        "{% set uboot_mac_addr = '00:11:22:33:44:55' %}{% set base_uboot_commands = ['mmc rescan'] %}"
        "{% set uboot_ipaddr_cmd = 'setenv ipaddr 10.0.0.5' %}{% set uboot_initrd_high = '0x90000000' %}"
        "{% set uboot_fdt_extra_commands = ['fdt rm /soc/wdt'] %}{% set uboot_bootcmd = 'booti ${a}' %}"
    )
    cfg = board("beaglebone-black", extra)
    assert ramdisk_commands(cfg) == [
        "usb start", "mmc rescan", "setenv autoload no", "setenv initrd_high 0x90000000",
        "setenv fdt_high 0xffffffff", "setenv ethaddr 00:11:22:33:44:55", "setenv ipaddr 10.0.0.5",
        "setenv serverip {SERVER_IP}", *LOADS, "fdt addr {DTB_ADDR}", "fdt rm /soc/wdt",
        "setenv bootargs 'console=ttyO0,115200n8 root=/dev/ram0 ip=dhcp'", "booti ${a}"]
    assert uboot(cfg)["parameters"]["lava_mac"] == "00:11:22:33:44:55"
    # append_dtb: the DTB travels with the kernel, so no DTB load
    assert "tftp {DTB_ADDR} {DTB}" not in ramdisk_commands(board("beaglebone-black", "{% set append_dtb = true %}"))


def test_static_ip_raw_ramdisk_and_messages():
    extra = (
        "{% set static_ip = '10.1.1.2' %}{% set static_gateway = '10.1.1.1' %}"
        "{% set static_netmask = '255.255.255.0' %}{% set static_dns = '10.1.1.1' %}"
        "{% set uboot_ramdisk_format = 'raw' %}{% set uboot_error_messages = ['ERROR: board on fire'] %}"
        "{% set uboot_needs_interrupt = false %}{% set uboot_autoboot_prompt = 'Press SPACE to abort' %}"
        "{% set kernel_start_message = 'Booting Linux' %}{% set boot_message = 'Booting Linux on' %}"
    )
    cfg = board("qemu-uboot-arm64", extra)
    # LAVA's base.jinja2 static form: ip=<ip>::<gateway>:<netmask>:::off:<dns>:
    assert bootargs(cfg).endswith(" ip=10.1.1.2::10.1.1.1:255.255.255.0:::off:10.1.1.1:")
    assert cfg["actions"]["deploy"]["parameters"]["add_header"] == "raw"
    assert cfg["constants"]["u-boot"]["error-messages"] == ["ERROR: board on fire"]
    assert cfg["constants"]["u-boot"]["interrupt-prompt"] == "Press SPACE to abort"
    assert cfg["constants"]["kernel-start-message"] == "Booting Linux"
    params = uboot(cfg)["parameters"]
    assert params["needs_interrupt"] is False
    assert params["boot_message"] == "Booting Linux on"


def test_base_uboot_alone_renders_no_address_set():
    cfg = load_device_config("{% extends 'base-uboot.jinja2' %}", hostname="b1", device_type="custom",
                             context={}, search_path=SHIPPED)
    assert set(cfg["parameters"]) == {"pass"}
    assert bootargs(cfg) == "root=/dev/ram0 ip=dhcp"  # no console_device: no console= argument
    assert "commands" not in cfg


def test_board_types_are_listed_and_base_is_not():
    names = device_types.available_templates(Settings(template_dirs=[]))
    assert set(BOARDS) <= set(names)
    assert "base-uboot" not in names


HEALTH_CHECK = shipped_device_types_dir() / "health-checks" / "qemu-uboot-arm64.yaml"


def test_health_check_is_found_for_the_emulated_board(tmp_path: Path):
    settings = Settings(template_dirs=[], health_checks_dir=str(tmp_path))
    device = Device(device_type=DeviceType(name="qemu-uboot-arm64", health_check=""),
                    dictionary="{% extends 'qemu-uboot-arm64.jinja2' %}\n" + LAB)
    assert devicecfg.health_check_definition(device, settings) == HEALTH_CHECK.read_text()


def test_health_check_validates():
    job = parse_job(HEALTH_CHECK.read_text())
    assert job["device_type"] == "qemu-uboot-arm64"
    assert job["actions"][1]["boot"]["commands"] == "ramdisk"
