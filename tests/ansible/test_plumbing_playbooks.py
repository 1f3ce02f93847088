"""The care playbooks against a real lab on loopback: health-checks, backup, restore, upgrade.

Each one runs as an admin would (`ansible-playbook -i INVENTORY playbooks/X.yml`) through
ansible-runner, against a real dutlab server with a real worker and QEMU devices where jobs run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from ansible_harness import REPO, TARGET_PYTHON, play
from lab_hosts import RoleLab, build_wheel

from labkit import http

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


def history(lab, hostname: str) -> list[dict]:
    return lab.api("GET", f"/api/v1/devices/{hostname}/health-history").json()["results"]


# -- health-checks.yml -------------------------------------------------------------------------------

def test_health_checks_fail_naming_the_bad_devices_and_why(lab_server, tmp_path):
    lab_server.start_worker()
    lab_server.add_qemu_device("qemu01", health_checks=True)
    lab_server.add_qemu_device("qemu02", dictionary=BROKEN_QEMU, health_checks=True)
    lab_server.wait_health("qemu01", {"Good"})
    lab_server.wait_health("qemu02", {"Bad"})
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


# -- backup.yml and restore.yml ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def dutlab_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def server_inventory(lab: RoleLab, **server) -> Path:
    """Only a lab server (the roles' own inventory also has a worker)."""
    doc = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": TARGET_PYTHON},
                   "children": {"lab_servers": {"hosts": {"lab-server": lab.server_vars(**server)}}}}}
    path = lab.root / "inventory-server.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_backup_then_restore_onto_a_fresh_server(dutlab_wheel, tmp_path):
    # users of their own: the server role sets the user's home, which fails while another lab's
    # processes run as that user
    old, new = RoleLab(source=dutlab_wheel, user="dutlab-old"), None
    try:
        backups = old.root / "backups"
        inventory = server_inventory(old, dutlab_backup_dir=str(backups))
        play(REPO / "playbooks" / "site.yml", tmp_path, inventory=inventory)
        # a small lab: a device type, a worker, a device, a user with a token
        assert old.api("POST", "/api/v1/device-types", {"name": "qemu", "disable_health_checks": True}).status == 201
        assert old.api("POST", "/api/v1/workers", {"hostname": "w1"}).status == 201
        assert old.api("POST", "/api/v1/devices", {"hostname": "qemu01", "device_type": "qemu", "worker": "w1",
                                                   "health": "Good"}).status == 201
        old_token = old.admin_token()

        fetched = tmp_path / "fetched"
        run = play(REPO / "playbooks" / "backup.yml", tmp_path, inventory=inventory,
                   extravars={"backup_dest": str(fetched)})
        [archive] = list((fetched / "lab-server").glob("dutlab-backup-*.tar.gz"))
        [on_server] = list(backups.glob("dutlab-backup-*.tar.gz"))
        assert archive.read_bytes() == on_server.read_bytes()
        assert oct(on_server.stat().st_mode & 0o777) == "0o600" and on_server.owner() == "dutlab-old"
        # the controller's copy holds the same password hashes and secret key: private there too
        assert oct(archive.stat().st_mode & 0o777) == "0o600"
        assert oct(archive.parent.stat().st_mode & 0o777) == "0o700"
        assert f"restore_archive={archive}" in run["Where it is"]["msg"]
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("MANIFEST.json"))
        assert manifest["counts"]["devices"] == 1

        # a fresh server (same dutlab: the old one's virtualenv), installed by the server role
        new = RoleLab(source=dutlab_wheel, user="dutlab-new")
        new_inventory = server_inventory(new, dutlab_server_venv=str(old.root / "venv"),
                                         dutlab_backup_dir=str(new.root / "backups"))
        play(REPO / "playbooks" / "site.yml", tmp_path, inventory=new_inventory)
        old_services = [s for s in old.services if "worker" not in s]
        for name in old_services:
            subprocess.run(["service", name, "stop"], check=True, capture_output=True)

        restore = REPO / "playbooks" / "restore.yml"
        refused = play(restore, tmp_path, inventory=new_inventory, expect="failed",
                       extravars={"restore_archive": str(archive)})
        msg = refused["Say why nothing was restored"]["msg"]
        assert "this install is not empty" in msg and "-e restore_force=true" in msg, msg
        assert new.api("GET", "/api/v1/devices/qemu01").status == 404, "the refused restore changed the server"

        done = play(restore, tmp_path, inventory=new_inventory,
                    extravars={"restore_archive": str(archive), "restore_force": True})
        assert "restore complete. Next:" in done["What the restore said"]["msg"]
        assert done["Devices (all in Maintenance until someone checked them; then set them Unknown for a "
                    "health check)"]["msg"] == ["qemu01: Maintenance"]
        device = http("GET", f"{new.url}/api/v1/devices/qemu01", token=old_token).json()
        assert device["health"] == "Maintenance" and device["worker"] == "w1"
        assert new.api("GET", "/api/v1/system/whoami").json()["username"] == "admin"
        assert {path.owner() for path in (new.root / "data").rglob("*")} == {"dutlab-new"}
    finally:
        if new is not None:
            new.cleanup()
        old.cleanup()


# -- upgrade.yml -------------------------------------------------------------------------------------

SMOKE = REPO / "examples" / "jobs" / "qemu-smoke.yaml"


def held_dictionary(release: Path) -> str:
    """A QEMU device with a user command that holds a job on the worker until `release` exists."""
    return ("{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
            "{% set user_commands = {'hold': {'do': 'while [ ! -e " + str(release) + " ]; do sleep 0.5; done'}} %}\n")


def held_job() -> dict:
    job = yaml.safe_load(SMOKE.read_text())
    job["job_name"] = "held across the upgrade"
    job["timeouts"]["job"] = {"minutes": 30}
    job["actions"].insert(0, {"command": {"name": "hold", "timeout": {"minutes": 25}}})
    return job


class Releaser(threading.Thread):
    """Lets the held job go once the playbook has put the worker in Maintenance and kept waiting.

    Records what the worker's virtualenv held at that moment: the upgrade must not have
    touched it while the job ran.
    """

    def __init__(self, lab: RoleLab, release: Path):
        super().__init__(daemon=True)
        self.lab, self.release = lab, release
        self.record = lab.root / "venv" / "dutlab-source-worker.txt"
        self.installed_at_release = ""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1):
            try:
                worker = self.lab.api("GET", f"/api/v1/workers/{self.lab.worker_name}").json()
            except (OSError, ValueError):
                continue  # the server restarts during the upgrade
            if worker.get("health") == "Maintenance":
                time.sleep(10)  # the playbook keeps waiting for the job meanwhile
                self.installed_at_release = self.record.read_text()
                self.release.touch()
                return


def kill_leftovers(root: Path) -> None:
    """Job processes outlive their worker by design; end those of this lab (by process group)."""
    groups = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                groups.add(os.getpgid(int(pid)))
        except OSError:
            continue
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_rolling_upgrade_waits_for_the_running_job_and_compares_known_good_jobs(dutlab_wheel, tmp_path):
    lab = RoleLab(source=dutlab_wheel, user="dutlab-upg")
    release = lab.root / "release-the-held-job"
    releaser = None
    try:
        inventory = lab.inventory(server={"dutlab_backup_dir": str(lab.root / "backups")})
        play(REPO / "playbooks" / "site.yml", tmp_path, inventory=inventory)
        assert lab.api("POST", "/api/v1/device-types", {"name": "qemu", "disable_health_checks": True}).status == 201
        for hostname in ("qemu01", "qemu02"):
            created = lab.api("POST", "/api/v1/devices", {
                "hostname": hostname, "device_type": "qemu", "worker": lab.worker_name, "health": "Good",
                "dictionary": held_dictionary(release)})
            assert created.status == 201, created.text
        submitted = lab.api("POST", "/api/v1/jobs", {"definition": yaml.safe_dump(held_job())})
        assert submitted.status == 201, submitted.text
        held = submitted.json()["job_ids"][0]
        deadline = time.monotonic() + 120
        while lab.api("GET", f"/api/v1/jobs/{held}").json()["state"] != "Running":
            assert time.monotonic() < deadline, f"job {held} did not start:\n{lab.log()}"
            time.sleep(0.5)

        # the same dutlab from another path: the roles see a new source and reinstall
        upgrade_wheel = tmp_path / "upgrade" / dutlab_wheel.name
        upgrade_wheel.parent.mkdir()
        shutil.copy(dutlab_wheel, upgrade_wheel)
        releaser = Releaser(lab, release)
        releaser.start()
        report = tmp_path / "upgrade-report.json"
        extravars = {"upgrade_source": str(upgrade_wheel), "upgrade_functional_jobs": [str(SMOKE)],
                     "upgrade_report": str(report), "backup_dest": str(tmp_path / "backups"),
                     "upgrade_poll": 2, "upgrade_job_timeout": 900}
        run = play(REPO / "playbooks" / "upgrade.yml", tmp_path, inventory=inventory, extravars=extravars)

        job = lab.api("GET", f"/api/v1/jobs/{held}").json()
        assert job["health"] == "Complete", job
        assert str(dutlab_wheel) in releaser.installed_at_release, "the worker was upgraded under a running job"
        assert str(upgrade_wheel) in releaser.record.read_text()
        assert "Install dutlab and its dependencies" in run.changed_tasks()
        worker = lab.api("GET", f"/api/v1/workers/{lab.worker_name}").json()
        assert worker["health"] == "Active" and worker["state"] == "Online", worker
        outcomes = json.loads(report.read_text())
        smoke = outcomes["before"]["qemu-smoke.yaml"]
        assert smoke["health"] == "Complete" and smoke["cases"]["0_smoke/uname"] == "pass", outcomes
        assert outcomes["after"] == outcomes["before"]
        assert list((tmp_path / "backups" / "lab-server").glob("dutlab-backup-*.tar.gz"))

        # against a baseline in which the smoke test had failed, the same lab "changed": the play fails
        baseline = tmp_path / "baseline.json"
        baseline.write_text(json.dumps({"before": {"qemu-smoke.yaml": {**smoke, "health": "Incomplete"}}}))
        differs = play(REPO / "playbooks" / "upgrade.yml", tmp_path, inventory=inventory, expect="failed",
                       extravars={**extravars, "upgrade_baseline": str(baseline)})
        msg = differs["The known-good jobs behave as before"]["msg"]
        assert msg.startswith("outcomes changed by the upgrade"), msg
        assert '"health": "Incomplete"}, after {"cases": {' in msg and msg.endswith('"health": "Complete"};'), msg
    finally:
        if releaser is not None:
            releaser.stop.set()
        release.touch()
        lab.cleanup()
        kill_leftovers(lab.root)
