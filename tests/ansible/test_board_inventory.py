"""examples/inventories/boards.yml, converged as its header says, gives a working board lab.

The board's "hardware" comes from tests/labkit/board.py (QEMU + u-boot, its UART relay, its PDU
outlet, the namespace with the lab bridge); everything else from the roles and playbooks the
inventory names: ser2net and pdudaemon from playbooks/plumbing.yml on worker01, dnsmasq from the
same playbook run inside the board's namespace for uboot01-net, the device type and the device
from playbooks/devices.yml against a real server with the worker worker01. Then the rendered
device configuration's own connect and power commands bring u-boot up on its console, and u-boot
gets the inventory's lease and a file from the role's TFTP root.

Ports, the pdudaemon address and service name and the TFTP root move to free or private ones;
the rest is the inventory as shipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from pathlib import Path

import pexpect
import pytest
import yaml
from ansible_harness import BIN, REPO, env, play
from test_pdudaemon_role import pdu_host  # noqa: F401 - fixture
from test_plumbing_roles import dnsmasq_instance, served_dirs, service, system_ser2net  # noqa: F401

from labkit import start_lab
from labkit.board import EmulatedBoardLab, default_mac, free_tcp_port, missing_prerequisites

pytestmark = [pytest.mark.ansible, pytest.mark.qemu, pytest.mark.board]

INVENTORY = REPO / "examples" / "inventories" / "boards.yml"
PLUMBING = REPO / "playbooks" / "plumbing.yml"
#: until device-types/qemu-uboot-arm64.jinja2 lands, the server gets this in its override folder
#: (the commands and parameters sections the test reads come from base.jinja2 either way)
STAND_IN_TEMPLATE = "{% extends 'base.jinja2' %}\n"


def inventory_copy(tmp_path: Path, console_port: int, pdu_address: str) -> Path:
    text = INVENTORY.read_text()
    assert text.count("7101") == 3 and "--daemon localhost" in text  # header, dictionary, ser2net
    text = text.replace("7101", str(console_port)).replace("--daemon localhost", f"--daemon {pdu_address}")
    path = tmp_path / "boards.yml"
    path.write_text(text)
    return path


def converged_in_netns(netns: str, inventory: Path, extravars: Path) -> dict:
    """playbooks/plumbing.yml for uboot01-net, run inside the board's namespace (step 3)."""
    proc = subprocess.run(["ip", "netns", "exec", netns, str(BIN / "ansible-playbook"), "-i", str(inventory),
                           str(PLUMBING), "--limit", "uboot01-net", "-e", f"@{extravars}"],
                          capture_output=True, text=True, timeout=900, cwd=REPO, env={**os.environ, **env()})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    recap = proc.stdout[proc.stdout.index("PLAY RECAP"):]
    return {key: int(value) for key, value in (item.split("=") for item in recap.split() if "=" in item)}


def test_boards_inventory_converges_to_a_lab_that_drives_the_board(
        system_ser2net, dnsmasq_instance, served_dirs, pdu_host, tmp_path):  # noqa: F811
    missing = missing_prerequisites()
    if missing:
        pytest.fail(str(missing)) if os.environ.get("CI") else pytest.skip(", ".join(missing))
    _, pdu_vars = pdu_host
    console_port = free_tcp_port()
    inventory = inventory_copy(tmp_path, console_port, pdu_vars["dutlab_pdudaemon_listen_address"])
    hardware_dir = served_dirs / "board-lab"
    tftp_root = served_dirs / "tftp"
    extravars = {"dutlab_source": str(REPO), "dutlab_board_lab_dir": str(hardware_dir),
                 "dutlab_tftp_root": str(tftp_root), "dutlab_tftp_worker_dir": "", **pdu_vars}
    extravars_file = tmp_path / "extravars.json"
    extravars_file.write_text(json.dumps(extravars))

    board = EmulatedBoardLab(hardware_dir, "uboot01", services=False)
    assert board.mac == default_mac("uboot01") == "52:54:00:bc:bc:9f", "the inventory's lease is for this MAC"
    (tmp_path / "server").mkdir()
    server, stop_server = start_lab(tmp_path / "server")
    client = None
    try:
        board.start()
        # step 2 (the plumbing part; the server and worker roles are tested in test_roles.py)
        for cmdline, changes in (("--diff", True), ("", False), ("--check --diff", False)):
            run = play(PLUMBING, tmp_path, inventory=inventory, extravars=extravars,
                       cmdline=f"--limit worker01 {cmdline}")
            assert bool(run.changed) == changes, f"{cmdline or 'second converge'}: {run.changed_tasks()}"
        # step 3, twice: the second run changes nothing
        assert converged_in_netns(board.netns, inventory, extravars_file)["failed"] == 0
        again = converged_in_netns(board.netns, inventory, extravars_file)
        assert again["changed"] == 0, again
        # step 4, against a real server that has the worker
        server.start_worker("worker01")
        if not (REPO / "device-types" / "qemu-uboot-arm64.jinja2").exists():
            (tmp_path / "server" / "etc" / "device-types").mkdir(parents=True, exist_ok=True)
            (tmp_path / "server" / "etc" / "device-types" / "qemu-uboot-arm64.jinja2").write_text(STAND_IN_TEMPLATE)
        play(REPO / "playbooks" / "devices.yml", tmp_path, inventory=inventory,
             extravars={"dutlab_api_url": server.url, "dutlab_api_token": server.admin_token})

        device = server.api("GET", "/api/v1/devices/uboot01").json()
        assert (device["device_type"], device["worker"]) == ("qemu-uboot-arm64", "worker01"), device
        rendered = server.api("GET", "/api/v1/devices/uboot01/dictionary?render=1")
        config = yaml.safe_load(rendered.json()["config"])
        commands = config["commands"]
        assert commands["connect"] == f"telnet 127.0.0.1 {console_port}"
        assert config["parameters"]["interfaces"]["target"] == {"ip": "10.232.0.10", "mac": board.mac}

        payload = os.urandom(123_456)
        (tftp_root / "probe.bin").write_bytes(payload)
        (tftp_root / "probe.bin").chmod(0o644)
        client = pexpect.spawn(commands["connect"], encoding="utf-8", codec_errors="replace", timeout=60,
                               logfile=open(tmp_path / "console.log", "a"))  # noqa: SIM115
        client.expect_exact("Escape character")
        on = subprocess.run(commands["power_on"], shell=True, capture_output=True, text=True, timeout=120)
        assert on.returncode == 0 and board.powered, on.stdout + on.stderr
        client.expect_exact("Hit any key to stop autoboot")
        client.send(" ")
        client.expect_exact("\n=> ")
        client.sendline("setenv autoload no; dhcp")
        client.expect_exact("DHCP client bound to address 10.232.0.10")
        client.expect_exact("\n=> ")
        client.sendline("tftpboot ${loadaddr} probe.bin; crc32 ${loadaddr} ${filesize}")
        client.expect_exact(f"==> {zlib.crc32(payload):08x}")
        off = subprocess.run(commands["power_off"], shell=True, capture_output=True, text=True, timeout=120)
        assert off.returncode == 0 and not board.powered, off.stdout + off.stderr
    finally:
        if client is not None:
            client.close()
        stop_server()
        service("dutlab-dnsmasq", "stop")
        board.stop()
    assert board.leftovers() == []
