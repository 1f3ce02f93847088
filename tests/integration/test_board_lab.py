"""The emulated u-boot board (tests/labkit/board.py), driven the way a lab admin drives a real one.

Power goes through `pduclient` to the real pdudaemon, the console is `telnet 127.0.0.1 <port>` to
the real ser2net, u-boot gets its lease and its files from the real dnsmasq on the lab bridge.
The u-boot command set and addresses used here are the ones the `qemu-uboot-arm64` device type
needs; every test ends with nothing of its lab left running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pexpect
import pytest
import yaml

from labkit import free_port
from labkit.board import ASSETS, EmulatedBoardLab, missing_prerequisites

pytestmark = [pytest.mark.qemu, pytest.mark.board]

INTERRUPT_PROMPT = "Hit any key to stop autoboot"
UBOOT_PROMPT = "\n=> "  # at a line start: crc32 prints "==> "
SHELL_PROMPT = "dutlab:~# "
#: booti on QEMU virt with Debian's u-boot: Image at kernel_addr_r, ramdisk at ramdisk_addr_r, and the
#: device tree QEMU generated (u-boot's own, ${fdtcontroladdr}): there is no .dtb file for `virt`
KERNEL_ADDR, RAMDISK_ADDR, DTB_ADDR = "0x40400000", "0x44000000", "${fdtcontroladdr}"


def ramdisk_commands(server_ip: str, kernel: str, ramdisk: str, bootargs: str, *, uboot_header: bool) -> list[str]:
    """The `ramdisk` command set, placeholders filled in: raw ramdisks need their size on booti."""
    ramdisk_arg = RAMDISK_ADDR if uboot_header else f"{RAMDISK_ADDR}:${{initrd_size}}"
    return ["setenv autoload no", "dhcp", f"setenv serverip {server_ip}",
            f"tftp {KERNEL_ADDR} {kernel}", f"tftp {RAMDISK_ADDR} {ramdisk}", "setenv initrd_size ${filesize}",
            f"setenv bootargs '{bootargs}'", f"booti {KERNEL_ADDR} {ramdisk_arg} {DTB_ADDR}"]


@pytest.fixture
def board(tmp_path):
    missing = missing_prerequisites()
    if missing:
        message = "the emulated board lab needs: " + ", ".join(missing) + " (scripts/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    lab = EmulatedBoardLab(tmp_path / "board-lab")
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
    assert lab.leftovers() == [], f"the lab left these behind: {lab.leftovers()}"


def console(board: EmulatedBoardLab, log: Path) -> pexpect.spawn:
    """The board's console, as the dictionary's connection_command opens it."""
    client = pexpect.spawn(board.connection_command, encoding="utf-8", codec_errors="replace", timeout=60,
                           logfile=open(log, "a"))  # noqa: SIM115 - closed with the spawn
    client.expect_exact("Escape character")
    return client


def power(board: EmulatedBoardLab, action: str) -> None:
    done = board.pduclient(action)
    assert done.returncode == 0, f"{board.power_command(action)}: {done.returncode} {done.stdout}{done.stderr}"


def interrupt(client: pexpect.spawn) -> None:
    client.expect_exact(INTERRUPT_PROMPT)
    client.send(" ")
    client.expect_exact(UBOOT_PROMPT)


def uboot(client: pexpect.spawn, command: str, timeout: float = 60) -> str:
    """Type one u-boot command; return what it printed before the next prompt."""
    client.sendline(command)
    client.expect_exact(UBOOT_PROMPT, timeout=timeout)
    return client.before


def test_board_powers_through_pdudaemon_and_keeps_its_console_across_power_cycles(board, tmp_path):
    payload = os.urandom(300_000)
    (board.tftp_root / "payload.bin").write_bytes(payload)
    client = console(board, tmp_path / "console.log")
    assert not board.powered
    power(board, "on")
    assert board.powered, "pduclient ... on returned before QEMU ran: pdudaemon answers after switching"
    interrupt(client)

    assert "DHCP client bound to address " + board.board_ip in uboot(client, "setenv autoload no; dhcp")
    fetched = uboot(client, "tftpboot ${loadaddr} payload.bin")
    assert f"Bytes transferred = {len(payload)}" in fetched, fetched
    assert f"TFTP from server {board.server_ip}" in fetched
    crc = uboot(client, "crc32 ${loadaddr} ${filesize}")
    assert f"==> {zlib.crc32(payload):08x}" in crc, crc
    missing = uboot(client, "tftpboot ${loadaddr} no-such-file")
    assert re.search(r"TFTP error: 'file \S*no-such-file not found", missing), missing

    # off: the board goes dark, the console (ser2net + the serial device) stays
    power(board, "off")
    assert not board.powered
    client.sendline("version")
    with pytest.raises(pexpect.TIMEOUT):
        client.expect_exact("U-Boot", timeout=3)
    power(board, "on")
    interrupt(client)  # the same telnet session sees the next boot
    power(board, "reboot")  # hard_reset_command: off, --delay seconds, on
    interrupt(client)
    client.close()

    leases = (board.root / "leases").read_text()
    assert f"{board.mac} {board.board_ip} {board.name}" in leases
    power_log = board.log("power")
    assert [line.split()[1] for line in power_log.splitlines()] == ["on", "off", "on", "off", "on"], power_log


def test_uboot_boots_the_arm64_kernel_and_initramfs_over_tftp(board, tmp_path):
    assets = ASSETS
    if not (assets / "vmlinuz").exists():
        message = f"no arm64 kernel in {assets}: run scripts/build-qemu-assets.sh --arch arm64"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    shutil.copy(assets / "vmlinuz", board.tftp_root / "Image")
    shutil.copy(assets / "initramfs.cpio.gz", board.tftp_root / "initramfs.cpio.gz")
    made = subprocess.run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "ramdisk", "-C", "none", "-d",
                           str(assets / "initramfs.cpio.gz"), str(board.tftp_root / "uInitrd")],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    client = console(board, tmp_path / "console.log")
    power(board, "on")

    # raw (gzip) ramdisk: booti needs addr:size
    interrupt(client)
    *setup, boot = ramdisk_commands(board.server_ip, "Image", "initramfs.cpio.gz", "console=ttyAMA0,115200n8",
                                    uboot_header=False)
    for command in setup:
        out = uboot(client, command)
        assert "error" not in out.lower(), f"{command}: {out}"
    client.sendline(boot)
    client.expect_exact("Starting kernel")
    client.expect_exact(SHELL_PROMPT, timeout=180)
    client.sendline("cat /proc/cmdline")
    client.expect_exact("console=ttyAMA0,115200n8")
    client.expect_exact(SHELL_PROMPT)

    # soft reboot from Linux: the board comes back to u-boot; a mkimage'd ramdisk boots without a size
    client.sendline("reboot -f")
    interrupt(client)
    for command in ramdisk_commands(board.server_ip, "Image", "uInitrd", "console=ttyAMA0,115200n8",
                                    uboot_header=True)[:-1]:
        uboot(client, command)
    client.sendline(f"booti {KERNEL_ADDR} {RAMDISK_ADDR} {DTB_ADDR}")
    client.expect_exact("AArch64 Linux RAMDisk Image")
    client.expect_exact(SHELL_PROMPT, timeout=180)

    # a kernel that panics (the initramfs panics on dutlab.panic=1); the PDU brings the board back
    power(board, "reboot")
    interrupt(client)
    *setup, boot = ramdisk_commands(board.server_ip, "Image", "initramfs.cpio.gz",
                                    "console=ttyAMA0,115200n8 dutlab.panic=1", uboot_header=False)
    for command in setup:
        uboot(client, command)
    client.sendline(boot)
    client.expect_exact("Kernel panic - not syncing", timeout=180)
    # the wrong kernel file: u-boot's own error, at once (a gzip file instead is taken for a compressed
    # Image: "kernel_comp_addr_r or kernel_comp_size is not provided!")
    power(board, "reboot")
    interrupt(client)
    for command in ramdisk_commands(board.server_ip, "uInitrd", "uInitrd", "console=ttyAMA0",
                                    uboot_header=True)[:-1]:
        uboot(client, command)
    assert "Bad Linux ARM64 Image magic!" in uboot(client, f"booti {KERNEL_ADDR} {RAMDISK_ADDR} {DTB_ADDR}")
    client.close()


def test_failures_an_admin_sees(board, tmp_path):
    """What the lab gives each failure of issue 12 scope 8, before any dutlab code is involved."""
    # a PDU pdudaemon does not know: refused, non-zero, named
    unknown = subprocess.run(board.power_command("on").replace(board.pdu_hostname, "pdu-nosuch"), shell=True,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 127 and "pdu-nosuch" in unknown.stderr and "nack" in unknown.stderr, unknown
    # no pdudaemon at that address: non-zero, names host:port
    nobody = subprocess.run(board.power_command("on").replace(board.pdu_daemon, "127.1.2.3").split(),
                            capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 1 and "127.1.2.3:16421" in nobody.stderr, nobody
    # a console port ser2net does not export: telnet is refused
    refused = subprocess.run(["telnet", "127.0.0.1", str(free_port())], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "Connection refused" in refused.stdout + refused.stderr, refused
    # the board's plug is out: pdudaemon switches the outlet and says so, the board never talks
    client = console(board, tmp_path / "console.log")
    board.unplug()
    power(board, "on")
    assert not board.powered
    with pytest.raises(pexpect.TIMEOUT):
        client.expect_exact(INTERRUPT_PROMPT, timeout=10)
    board.plug()
    power(board, "on")
    interrupt(client)
    client.close()


def test_the_device_dictionary_drives_the_lab_through_a_rendered_device_config(board, tmp_path):
    """A real server renders the dictionary; the rendered connect and power commands work the board."""
    from labkit import start_lab

    (tmp_path / "server").mkdir()
    lab, stop = start_lab(tmp_path / "server")
    try:
        lab.start_worker("worker1")
        lab.add_qemu_device("uboot01", dictionary=board.dictionary(), device_type="qemu-uboot-arm64")
        reply = lab.api("GET", "/api/v1/devices/uboot01/dictionary?render=1")
        assert reply.status == 200, reply.text
        config = yaml.safe_load(reply.json()["config"])
        commands = config["commands"]
        assert commands["connect"] == board.connection_command
        assert commands["power_on"] == board.power_command("on")
        assert commands["power_off"] == board.power_command("off")
        assert commands["hard_reset"] == board.power_command("reboot")
        assert config["parameters"]["interfaces"]["target"] == {"ip": board.board_ip, "mac": board.mac}

        client = pexpect.spawn(commands["connect"], encoding="utf-8", codec_errors="replace", timeout=60,
                               logfile=open(tmp_path / "console.log", "a"))  # noqa: SIM115
        client.expect_exact("Escape character")
        on = subprocess.run(commands["power_on"], shell=True, capture_output=True, text=True, timeout=120)
        assert on.returncode == 0, on.stderr
        interrupt(client)
        off = subprocess.run(commands["power_off"], shell=True, capture_output=True, text=True, timeout=120)
        assert off.returncode == 0 and not board.powered, off.stderr
        client.close()
        device = lab.api("GET", "/api/v1/devices/uboot01").json()
        assert (device["worker"], device["device_type"]) == ("worker1", "qemu-uboot-arm64"), device
    finally:
        stop()


def test_make_board_lab_runs_a_lavacli_job_on_uboot01_and_stop_leaves_nothing(tmp_path):
    """scripts/board_lab.py (make board-lab / board-lab-stop) in a folder of the test's own: with the
    exports it prints, lavacli submits examples/jobs/uboot-tftp-ramdisk.yaml to uboot01 (after the
    board's own health check) and the job completes with its results; the stop leaves nothing running."""
    missing = missing_prerequisites()
    if missing:
        pytest.fail(str(missing)) if os.environ.get("CI") else pytest.skip(", ".join(missing))
    import sys

    from labkit import http

    repo = Path(__file__).resolve().parents[2]
    root = tmp_path / "board-lab"
    env = {**os.environ, "DUTLAB_BOARD_LAB_DIR": str(root)}
    script = [sys.executable, str(repo / "scripts" / "board_lab.py")]
    out = subprocess.run(script, capture_output=True, text=True, timeout=300, env=env)
    netns = ""
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        netns = re.search(r"namespace (\S+),", out.stdout).group(1)
        exports = next(line for line in out.stdout.splitlines() if line.startswith("export DUTLAB_URL="))
        values = dict(kv.split("=", 1) for kv in exports.removeprefix("export ").split())
        url, token = values["DUTLAB_URL"], values["DUTLAB_TOKEN"]
        assert values["DUTLAB_USER"] == "admin"
        # what the script prints about the board is what the server renders for uboot01
        config = yaml.safe_load(http("GET", f"{url}/api/v1/devices/uboot01/dictionary?render=1", token=token)
                                .json()["config"])
        assert re.search(r"console:\s+(telnet 127\.0\.0\.1 \d+)", out.stdout).group(1) == config["commands"]["connect"]
        assert re.search(r"power:\s+(pduclient .* --command on)", out.stdout).group(1) == config["commands"]["power_on"]
        assert "a job:     examples/jobs/uboot-tftp-ramdisk.yaml" in out.stdout

        job_file = tmp_path / "uboot-tftp-ramdisk.yaml"
        job_file.write_text((repo / "examples" / "jobs" / "uboot-tftp-ramdisk.yaml").read_text()
                            .replace("file:///var/cache/dutlab/assets/arm64", f"file://{ASSETS}"))
        lavacli = Path(sys.executable).parent / "lavacli"
        cli_env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}

        def cli(*args: str, timeout: float = 60) -> str:
            done = subprocess.run([str(lavacli), *args], capture_output=True, text=True, env=cli_env, timeout=timeout)
            assert done.returncode == 0, f"lavacli {' '.join(args)}: {done.stdout}{done.stderr}"
            return done.stdout

        cli("identities", "add", "board-lab", "--uri", f"{url}/RPC2", "--username", "admin", "--token", token)
        job_id = cli("-i", "board-lab", "jobs", "submit", str(job_file)).strip()
        assert job_id.isdigit(), job_id
        cli("-i", "board-lab", "jobs", "wait", job_id, "--polling", "2", "--timeout", "600", timeout=660)
        show = yaml.safe_load(cli("-i", "board-lab", "jobs", "show", job_id, "--yaml"))
        assert (show["state"], show["health"], show["device"]) == ("Finished", "Complete", "uboot01"), show
        results = cli("-i", "board-lab", "results", job_id).splitlines()
        assert results[0] == "Results:" and [r for r in results if r.startswith("* 0_smoke.")] == [
            "* 0_smoke.uname [pass]", "* 0_smoke.false-case [fail]", "* 0_smoke.speed [pass]"], results
        assert "* lava.job [pass]" in results
        # uboot01 passed its health check before the job ran (the scheduler runs it first)
        device = http("GET", f"{url}/api/v1/devices/uboot01", token=token).json()
        assert device["health"] == "Good", device
    finally:
        stopped = subprocess.run([*script, "--stop"], capture_output=True, text=True, timeout=300, env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert netns and not Path("/run/netns", netns).exists()
    # nothing of the lab runs: no QEMU, ser2net, pdudaemon, dnsmasq, UART relay, server, worker or run
    ours = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(root).encode() in _cmdline(pid)]
    assert ours == [], [_cmdline(pid) for pid in ours]


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
