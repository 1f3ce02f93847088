"""The whole lab from Ansible, from the built collection tarball as an admin installs it:
`ansible-playbook dutlab.lab.site` (server + worker), `dutlab.lab.devices` (device type, users,
groups, the QEMU device qemu01), then the job module's documented examples (test_doc_examples.py
runs the other modules'): a job submitted with dutlab.lab.job that waits and comes back Complete.

Needs the QEMU test assets (scripts/build-qemu-assets.sh, run by scripts/setup.sh) and real QEMU:
the worker the role installs runs the job with the dutlab-run of the wheel the role installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ansible_harness import REPO, Unsafe, install_built_collection, play
from lab_hosts import RoleLab, build_wheel
from test_doc_examples import examples_playbook

ASSETS = Path(os.environ.get("DUTLAB_ASSETS", "/var/cache/dutlab/assets"))
pytestmark = [
    pytest.mark.ansible, pytest.mark.qemu, pytest.mark.slow,
    pytest.mark.skipif(not (ASSETS / "amd64" / "manifest.json").exists(),
                       reason="run scripts/build-qemu-assets.sh first"),
]

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n"


@pytest.fixture
def role_lab(tmp_path_factory):
    lab = RoleLab(source=build_wheel(tmp_path_factory.mktemp("wheel")))
    try:
        yield lab
    finally:
        lab.cleanup()


def objects(worker: str) -> dict:
    return {
        "dutlab_device_types": [{"name": "qemu", "health_checks_disabled": True}],
        "dutlab_users": [{"username": "alice", "email": "alice@example.org", "password": "alice-pw-1"},
                         {"username": "carol", "groups": ["reviewers"]}],
        # a group lists its members, or its users name it: not both (each would undo the other)
        "dutlab_groups": [{"name": "kernel-team", "permissions": ["submit", "cancel_resubmit"],
                           "members": ["alice"]},
                          {"name": "reviewers", "permissions": ["cancel_resubmit"]}],
        "dutlab_devices": [{"hostname": "qemu01", "device_type": "qemu", "worker": worker,
                            "description": "QEMU x86_64, 512 MiB", "dictionary": Unsafe(QEMU_DICT),
                            "owner_group": "kernel-team"}],
    }


def test_site_devices_and_a_job_that_completes(role_lab, tmp_path):
    _tarball, installed = install_built_collection(tmp_path / "collection")
    inventory = role_lab.inventory(objects=objects(role_lab.worker_name))
    site = play("dutlab.lab.site", tmp_path, inventory=inventory, envvars=installed, cwd=tmp_path)
    assert site.changed, site.stdout[-3000:]
    assert role_lab.api("GET", f"/api/v1/workers/{role_lab.worker_name}").status == 200

    first = play("dutlab.lab.devices", tmp_path, inventory=inventory, cmdline="--diff", envvars=installed, cwd=tmp_path)
    assert first.changed == {"lab-server": 5}, first.changed_tasks()
    again = play("dutlab.lab.devices", tmp_path, inventory=inventory, envvars=installed, cwd=tmp_path)
    assert again.changed == {}, again.changed_tasks()
    check = play("dutlab.lab.devices", tmp_path, inventory=inventory, cmdline="--check --diff", envvars=installed,
                 cwd=tmp_path)
    assert check.changed == {}, check.changed_tasks()
    device = role_lab.api("GET", "/api/v1/devices/qemu01").json()
    assert device["worker"] == role_lab.worker_name and device["owner_group"] == "kernel-team"
    assert role_lab.api("GET", "/api/v1/groups/kernel-team").json()["members"] == ["alice"]
    assert role_lab.api("GET", "/api/v1/users/carol").json()["groups"] == ["reviewers"]

    # dutlab.lab.job's EXAMPLES as written: jobs/qemu-smoke.yaml and jobs/new.yaml where the example reads them
    job = (REPO / "examples" / "jobs" / "qemu-smoke.yaml").read_text()
    job = job.replace("file:///var/cache/dutlab/assets", f"file://{ASSETS}")
    (tmp_path / "jobs").mkdir()
    for name in ("qemu-smoke.yaml", "new.yaml"):
        (tmp_path / "jobs" / name).write_text(job)
    run = play(examples_playbook(tmp_path, role_lab.url, role_lab.admin_token(), ("job",)), tmp_path, cwd=tmp_path)
    smoke = run["Boot the kernel we just built and run the smoke tests"]
    assert smoke.get("health") == "Complete", f"{smoke}\n{role_lab.log()}"
    assert smoke["state"] == "Finished" and smoke["job"]["actual_device"] == "qemu01"
    assert any(case["suite"] != "lava" and case["result"] == "pass" for case in smoke["results"]), smoke["results"]
    validated = run["Validate a definition without submitting it"]
    assert validated["valid"] is True and "id" not in validated
    assert role_lab.api("GET", "/api/v1/jobs").json()["count"] == 1  # check mode submitted nothing
