"""The server and worker roles converge playbooks/site.yml on this host, as an admin would run it.

Converge (changes) → probes (HTTP, worker Online, files and modes, systemd-analyze verify on the
rendered units) → converge again (changed = 0) → --check --diff (changed = 0). Paths live in one
temp folder and service names are unique (lab_hosts.RoleLab); the services are stopped after.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from ansible_harness import REPO, play
from lab_hosts import RoleLab, build_wheel, mode

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

SITE = REPO / "playbooks" / "site.yml"


@pytest.fixture(scope="session")
def dutlab_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def role_lab(dutlab_wheel):
    lab = RoleLab(source=dutlab_wheel)
    try:
        yield lab
    finally:
        lab.cleanup()


def wait_worker(lab: RoleLab, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    worker = {}
    while time.monotonic() < deadline:
        worker = lab.api("GET", f"/api/v1/workers/{lab.worker_name}").json()
        if worker.get("state") == state:
            return worker
        time.sleep(0.5)
    raise AssertionError(f"worker {lab.worker_name} is {worker.get('state')}, not {state}\n{lab.log()}")


def verify_units(folder: Path) -> None:
    units = sorted(folder.glob("*.service"))
    assert len(units) == 3, units
    out = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60)
    # unknown keys and bad values only warn: any output is a failure
    noise = [line for line in out.stderr.splitlines() if "Failed to open" not in line or "/dev/" not in line]
    assert out.returncode == 0 and not noise, out.stderr


def test_site_converges_idempotently_and_runs_the_lab(role_lab, tmp_path):
    inventory = role_lab.inventory()
    first = play(SITE, tmp_path, inventory=inventory, cmdline="--diff")
    assert first.changed, first.stdout[-3000:]

    # the server answers, the worker is Online, the token files are private
    assert role_lab.api("GET", "/api/v1/system/version").status == 200
    wait_worker(role_lab, "Online")
    etc = role_lab.etc
    assert mode(etc / "admin-token") == "0600 root:root"
    assert mode(etc / "worker-token") == "0600 root:root"
    assert mode(etc / "server.yaml") == "0640 root:dutlab"
    assert mode(role_lab.root / "data" / "secret_key") == "0600 dutlab:dutlab"
    assert (etc / "admin-password").exists() and mode(etc / "admin-password") == "0600 root:root"
    for name in role_lab.services:
        status = subprocess.run(["service", name, "status"], capture_output=True, text=True)
        assert status.returncode == 0, f"{name}: {status.stdout}{status.stderr}\n{role_lab.log()}"
    verify_units(role_lab.root / "systemd")

    second = play(SITE, tmp_path, inventory=inventory)
    assert second.changed == {}, second.changed_tasks()
    check = play(SITE, tmp_path, inventory=inventory, cmdline="--check --diff")
    assert check.changed == {}, check.changed_tasks()

    # a restart of the worker keeps it registered with the same token
    subprocess.run(["service", role_lab.services[0], "restart"], check=True, capture_output=True)
    wait_worker(role_lab, "Online")
