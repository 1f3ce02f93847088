"""examples/inventories/boards.yml, converged as its header says, gives a lab whose board passes
its health check.

The board's "hardware" comes from tests/labkit/board.py (QEMU + u-boot, its UART relay, its PDU
outlet, the namespace with the lab bridge); everything else from the roles and playbooks the
inventory names: the server and the worker (installed from the dutlab wheel) with ser2net and
pdudaemon from playbooks/site.yml on this host, dnsmasq (DHCP + TFTP) from playbooks/plumbing.yml
run inside the board's namespace for uboot01-net, the device type and uboot01 with its dictionary
from playbooks/devices.yml. Nothing else is started: the server schedules the device type's
shipped health check on the new device by itself, the role-installed worker runs it (power
through pdudaemon, console through ser2net, the kernel and ramdisk staged in the TFTP root the
roles made, fetched by u-boot from dnsmasq at the worker's dispatcher_ip), and uboot01 becomes
Good. Then every step converges again without a change, and `site.yml --check --diff` predicts
none.

Ports, the pdudaemon address, client path and service name, the server's and worker's folders
and service names and the TFTP root move to free or private ones (extra variables, as
lab_hosts.RoleLab lays them out); the rest is the inventory as shipped. Everything is stopped and
removed at the end, whatever the outcome.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from ansible_harness import BIN, REPO, env, play
from lab_hosts import RoleLab
from test_pdudaemon_role import pdu_host  # noqa: F401 - fixture
from test_plumbing_roles import (  # noqa: F401 - fixtures
    dnsmasq_instance,
    dutlab_wheel,
    served_dirs,
    service,
    system_ser2net,
)

from labkit import free_port
from labkit.board import EmulatedBoardLab, default_mac, missing_prerequisites

pytestmark = [pytest.mark.ansible, pytest.mark.qemu, pytest.mark.board, pytest.mark.slow]

INVENTORY = REPO / "examples" / "inventories" / "boards.yml"
PLAYBOOKS = REPO / "playbooks"
#: the shipped health check boots these (device-types/health-checks/qemu-uboot-arm64.yaml)
HEALTH_CHECK_ASSETS = [Path("/var/cache/dutlab/assets/arm64") / name for name in ("vmlinuz", "initramfs.cpio.gz")]
HEALTH_CHECK_TIMEOUT = 900


def prerequisites() -> None:
    missing = missing_prerequisites()
    missing += [f"{path} (scripts/build-qemu-assets.sh --arch arm64)" for path in HEALTH_CHECK_ASSETS
                if not path.exists()]
    if missing:
        message = "the board lab needs: " + ", ".join(missing)
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def inventory_copy(tmp_path: Path, console_port: int, pdu_vars: dict) -> Path:
    """boards.yml with a free console port and the test's own pdudaemon and pduclient."""
    text = INVENTORY.read_text()
    assert text.count("7101") == 3 and text.count("pduclient --daemon localhost") == 3  # header+dictionary+ser2net
    client = f"{pdu_vars['dutlab_pdudaemon_client_path']} --daemon {pdu_vars['dutlab_pdudaemon_listen_address']}"
    text = text.replace("7101", str(console_port)).replace("pduclient --daemon localhost", client)
    path = tmp_path / "boards.yml"
    path.write_text(text)
    return path


def lab_variables(lab: RoleLab, hardware_dir: Path, tftp_root: Path, pdu_vars: dict) -> dict:
    """What moves to the test's own places; the worker's TFTP root stays the inventory's expression."""
    worker = lab.worker_vars()
    for key in ("dutlab_worker_qemu_arches", "dutlab_worker_tftp_root"):
        del worker[key]
    return {**lab.server_vars(), **worker, **pdu_vars, "dutlab_source": str(REPO),
            "dutlab_board_lab_dir": str(hardware_dir), "dutlab_tftp_root": str(tftp_root)}


def converged_in_netns(netns: str, inventory: Path, extravars: Path, *args: str) -> dict:
    """playbooks/plumbing.yml for uboot01-net, run inside the board's namespace (step 3)."""
    proc = subprocess.run(["ip", "netns", "exec", netns, str(BIN / "ansible-playbook"), "-i", str(inventory),
                           str(PLAYBOOKS / "plumbing.yml"), "--limit", "uboot01-net", "-e", f"@{extravars}", *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO, env={**os.environ, **env()})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    recap = proc.stdout[proc.stdout.index("PLAY RECAP"):]
    return {key: int(value) for key, value in (item.split("=") for item in recap.split() if "=" in item)}


def wait_good(lab: RoleLab, hostname: str, board: EmulatedBoardLab) -> dict:
    """The device once its health check made it Good; the check's job log on any other outcome."""
    deadline = time.monotonic() + HEALTH_CHECK_TIMEOUT
    device: dict = {}
    while time.monotonic() < deadline:
        device = lab.api("GET", f"/api/v1/devices/{hostname}").json()
        if device["health"] == "Good":
            return device
        if device["health"] == "Bad":
            break
        time.sleep(2)
    job = device.get("last_health_report_job") or device.get("current_job")
    log = lab.api("GET", f"/api/v1/jobs/{job}/logs").text[-8000:] if job else "(no health check job)"
    raise AssertionError(f"{hostname} is {device.get('health')}, not Good; health check job {job}:\n{log}\n"
                         f"{lab.log()}\npower: {board.log('power')}\nqemu: {board.log('qemu')}")


@pytest.mark.timeout(1800)
def test_boards_inventory_board_passes_its_health_check(
        system_ser2net, dnsmasq_instance, served_dirs, pdu_host, dutlab_wheel, tmp_path):  # noqa: F811
    prerequisites()
    _, pdu_vars = pdu_host
    console_port = free_port()
    inventory = inventory_copy(tmp_path, console_port, pdu_vars)
    hardware_dir = served_dirs / "board-lab"
    tftp_root = served_dirs / "tftp"
    # a service user of its own: the server role moves a user's home to its data folder
    lab = RoleLab(source=dutlab_wheel, user=f"dutlab-{uuid.uuid4().hex[:6]}")
    extravars = lab_variables(lab, hardware_dir, tftp_root, pdu_vars)
    extravars_file = tmp_path / "extravars.yml"
    extravars_file.write_text(yaml.safe_dump(extravars))
    site = PLAYBOOKS / "site.yml"
    devices = PLAYBOOKS / "devices.yml"
    here = "--limit !uboot01-net"

    board = EmulatedBoardLab(hardware_dir, "uboot01", services=False)
    try:
        assert board.mac == default_mac("uboot01") == "52:54:00:bc:bc:9f", "the inventory's lease is for this MAC"
        assert board.server_ip == "10.232.0.1", "the inventory's dispatcher_ip is the bridge's address"
        board.start()
        # steps 2-4 of the inventory's header
        first = play(site, tmp_path, inventory=inventory, extravars=extravars, cmdline=f"{here} --diff")
        assert first.changed.get("worker01") and first.changed.get("lab-server"), first.changed
        assert converged_in_netns(board.netns, inventory, extravars_file)["failed"] == 0
        added = play(devices, tmp_path, inventory=inventory, extravars=extravars, cmdline="--diff")
        assert added.changed == {"lab-server": 2}, added.changed_tasks()

        worker_settings = yaml.safe_load((lab.etc / "worker.yaml").read_text())
        assert (worker_settings["tftp_root"], worker_settings["dispatcher_ip"]) == (str(tftp_root), "10.232.0.1")
        rendered = lab.api("GET", "/api/v1/devices/uboot01/dictionary?render=1").json()["config"]
        config = yaml.safe_load(rendered)
        assert config["commands"]["connect"] == f"telnet 127.0.0.1 {console_port}"
        assert config["parameters"]["interfaces"]["target"] == {"ip": "10.232.0.10", "mac": board.mac}

        # the server runs the health check on the new device by itself
        device = wait_good(lab, "uboot01", board)
        job_id = device["last_health_report_job"]
        job = lab.api("GET", f"/api/v1/jobs/{job_id}").json()
        assert job["health"] == "Complete" and job["actual_device"] == "uboot01", job
        cases = {case["name"]: case["result"] for case in lab.api("GET", f"/api/v1/jobs/{job_id}/results").json()
                 if case["suite"] != "lava"}
        assert cases == {"uname": "pass", "uboot-bootargs": "pass", "device-tree": "pass"}, cases
        log = lab.api("GET", f"/api/v1/jobs/{job_id}/logs").text
        assert "DHCP client bound to address 10.232.0.10" in log, "u-boot did not get the inventory's lease"
        assert "10.232.0.1" in log and f"dutlab-{job_id}-" in log, "u-boot fetched nothing from the TFTP root"
        assert list(tftp_root.glob("dutlab-*")) == [], "the job's TFTP folder outlived the job"
        assert not board.powered, "the board is still powered after its health check"

        # a lab that ran a job converges without a change, and check mode predicts none
        again = play(site, tmp_path, inventory=inventory, extravars=extravars, cmdline=here)
        assert again.changed == {}, again.changed_tasks()
        netns_again = converged_in_netns(board.netns, inventory, extravars_file)
        assert netns_again["changed"] == 0, netns_again
        devices_again = play(devices, tmp_path, inventory=inventory, extravars=extravars)
        assert devices_again.changed == {}, devices_again.changed_tasks()
        check = play(site, tmp_path, inventory=inventory, extravars=extravars, cmdline=f"{here} --check --diff")
        assert check.changed == {}, check.changed_tasks()
        assert lab.api("GET", "/api/v1/devices/uboot01").json()["health"] == "Good"
    finally:
        lab.cleanup()  # the worker first: a job it runs would power the board
        service("dutlab-dnsmasq", "stop")
        board.stop()
    assert board.leftovers() == []
