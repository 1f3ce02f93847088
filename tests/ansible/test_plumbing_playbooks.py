"""The care playbooks against a real lab on loopback: health-checks, backup, restore, upgrade.

Each one runs as an admin would (`ansible-playbook -i INVENTORY playbooks/X.yml`) through
ansible-runner, against a real dutlab server with a real worker and QEMU devices where jobs run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from ansible_harness import REPO, TARGET_PYTHON, play

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]

ASSETS = Path(os.environ.get("DUTLAB_ASSETS") or "/var/cache/dutlab/assets") / "amd64"
BROKEN_QEMU = "{% extends 'qemu.jinja2' %}\n{% set extra_options = ['-no-such-qemu-option'] %}\n"


@pytest.fixture(autouse=True)
def _assets():
    if not (ASSETS / "manifest.json").exists():
        pytest.skip(f"no QEMU assets in {ASSETS}: run scripts/build-qemu-assets.sh --arch amd64")


def api_inventory(tmp_path: Path, lab, **hostvars) -> Path:
    """lab_servers = this machine, talking to `lab`'s REST API with its admin token."""
    doc = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": TARGET_PYTHON},
                   "children": {"lab_servers": {"hosts": {"lab-server": {
                       "dutlab_api_url": lab.url, "dutlab_api_token": lab.admin_token, **hostvars}}}}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def wait_health(lab, hostname: str, wanted: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    device = {}
    while time.monotonic() < deadline:
        device = lab.api("GET", f"/api/v1/devices/{hostname}").json()
        if device["health"] in wanted:
            return device
        time.sleep(0.5)
    raise AssertionError(f"{hostname} still {device.get('health')}:\n{lab.log('serve')}")


def history(lab, hostname: str) -> list[dict]:
    return lab.api("GET", f"/api/v1/devices/{hostname}/health-history").json()["results"]


# -- health-checks.yml -------------------------------------------------------------------------------

def test_health_checks_fail_naming_the_bad_devices_and_why(lab_server, tmp_path):
    lab_server.start_worker()
    lab_server.add_qemu_device("qemu01", health_checks=True)
    lab_server.add_qemu_device("qemu02", dictionary=BROKEN_QEMU, health_checks=True)
    wait_health(lab_server, "qemu01", {"Good"})
    wait_health(lab_server, "qemu02", {"Bad"})
    inventory = api_inventory(tmp_path, lab_server)
    playbook = REPO / "playbooks" / "health-checks.yml"

    run = play(playbook, tmp_path, inventory=inventory, expect="failed",
               extravars={"health_check_poll": 1, "health_check_timeout": 300})
    msg = run["Every checked device is Good"]["msg"]
    assert msg.startswith("health checks failed: qemu02: Bad, health check job"), msg
    assert "no-such-qemu-option" in msg and "qemu01" not in msg, msg
    for hostname, health in (("qemu01", "Good"), ("qemu02", "Bad")):
        entries = history(lab_server, hostname)
        assert entries[0]["new_health"] == health
        assert entries[1]["new_health"] == "Unknown"
        assert entries[1]["reason"] == "requested by playbooks/health-checks.yml"

    # only the good one, named on the command line: the play passes and leaves the other alone
    before = history(lab_server, "qemu02")
    good = play(playbook, tmp_path, inventory=inventory, cmdline="-e health_check_devices=qemu01",
                extravars={"health_check_poll": 1, "health_check_timeout": 300})
    assert "Request a health check (health Unknown)" in good.changed_tasks()
    assert history(lab_server, "qemu01")[1]["reason"] == "requested by playbooks/health-checks.yml"
    assert history(lab_server, "qemu02") == before

    unknown = play(playbook, tmp_path, inventory=inventory, expect="failed",
                   extravars={"health_check_devices": ["qemu01", "nosuch"]})
    assert "no device named nosuch" in unknown["Every device asked for exists"]["msg"]
