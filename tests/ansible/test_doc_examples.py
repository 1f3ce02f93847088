"""Every module's EXAMPLES, as `ansible-doc` shows them, run as written against a real server.

The examples name the lab `http://lab.example.org:8000` and its tokens by variables
(`dutlab_admin_token`, `dutlab_token`); tasks that leave the connection out take it from
DUTLAB_URL and DUTLAB_TOKEN, as the doc fragment says. The test points that URL at a real server,
moves the files they write under /etc/ into a temp folder, and first creates what an example
takes for granted (the users a group lists, the board it takes out for repair). The job module's
examples boot QEMU: they run in test_lab_e2e.py, on a lab whose worker runs them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_harness import BIN, REPO, env, play

from labkit import http

pytestmark = pytest.mark.ansible

PLACEHOLDER_URL = "http://lab.example.org:8000"
#: modules in an order where each example finds what it needs (the device example ends by removing qemu01)
ORDER = ("worker", "device_type", "user", "group", "token", "job_info", "device_info", "device", "job")
RPI4_HEALTH_CHECK = """\
job_name: rpi4 health check
device_type: bcm2711-rpi-4-b
visibility: public
timeouts: {job: {minutes: 10}}
actions:
- boot: {method: minimal, prompts: ['# ']}
"""


def documented_examples(modules: tuple[str, ...]) -> dict[str, str]:
    """module -> its EXAMPLES text, from `ansible-doc --json` (what a user copies)."""
    out = subprocess.run([str(BIN / "ansible-doc"), "--json", *(f"dutlab.lab.{m}" for m in modules)],
                         capture_output=True, text=True, timeout=300, env=env())
    assert out.returncode == 0, out.stderr
    return {name.rsplit(".", 1)[1]: doc["examples"] for name, doc in json.loads(out.stdout).items()}


def as_run_here(text: str, url: str, root: Path) -> str:
    """The example with the placeholder lab and /etc/ of this test."""
    return text.replace(PLACEHOLDER_URL, url).replace(" /etc/", f" {root}/etc/")


def examples_playbook(tmp_path: Path, url: str, token: str, modules: tuple[str, ...]) -> Path:
    """One play per module; its tasks are the module's EXAMPLES, in a tasks file of their own."""
    plays = []
    for module, text in documented_examples(modules).items():
        tasks = tmp_path / f"{module}-examples.yml"
        tasks.write_text(as_run_here(text, url, tmp_path))
        assert yaml.compose(tasks.read_text()) is not None  # the example parses as YAML (tags included)
        plays.append((module, {
            "name": f"examples of dutlab.lab.{module}", "hosts": "localhost", "gather_facts": False,
            "environment": {"DUTLAB_URL": url, "DUTLAB_TOKEN": token},
            "vars": {"dutlab_admin_token": token, "dutlab_token": token, "vault_alice_password": "alice-pw-1"},
            "tasks": [{"name": f"{module} examples", "ansible.builtin.include_tasks": tasks.name}]}))
    plays.sort(key=lambda p: ORDER.index(p[0]))
    path = tmp_path / "examples.yml"
    path.write_text(yaml.safe_dump([play for _, play in plays], sort_keys=False))
    return path


def incomplete_job(lab) -> int:
    """A job that ended Incomplete (job_info's examples look for one): its worker reports a failure."""
    token = lab.manage("workers", "add", "w-jobs").stdout.split()[-1]
    r = lab.api("POST", "/api/v1/devices", {"hostname": "qemu-jobs", "device_type": "qemu", "worker": "w-jobs",
                                            "dictionary": "{% extends 'qemu.jinja2' %}\n"})
    assert r.status == 201, r.text
    lab.api("PATCH", "/api/v1/devices/qemu-jobs", {"health": "Good"})
    job_id = lab.api("POST", "/api/v1/jobs", {"definition": (REPO / "examples" / "jobs" / "qemu-smoke.yaml")
                                              .read_text()}).json()["job_ids"][0]
    for _ in range(50):
        offer = http("POST", f"{lab.url}/internal/v1/workers/w-jobs/poll", {"protocol": 2, "wait": 1},
                     auth=f"Worker {token}").json()["start"]
        if offer:
            break
    [offer] = offer
    finish = http("POST", f"{lab.url}/internal/v1/jobs/{job_id}/finish", {"result": "fail", "error_type": "Test",
                  "error_msg": "a test failed", "log_line_count": 0}, auth=f"Job {offer['token']}")
    assert finish.status == 200, finish.text
    return job_id


def test_every_module_example_runs_as_written(lab_server, tmp_path):
    lab = lab_server
    # what the examples take for granted (not worker01: its example registers it and keeps the token)
    lab.manage("device-types", "add", "qemu", "--disable-health-checks")
    for name in ("alice", "carol", "ci-bot"):
        lab.manage("users", "add", name)
    lab.manage("groups", "add", "kernel-team")
    lab.manage("device-tags", "create", "kvm")
    for hostname in ("rpi4-01", "qemu01"):  # qemu01: device_info's; the device example changes, then removes it
        r = lab.api("POST", "/api/v1/devices", {"hostname": hostname, "device_type": "qemu",
                                                "dictionary": "{% extends 'qemu.jinja2' %}\n"})
        assert r.status == 201, r.text
    (tmp_path / "health-checks").mkdir()
    (tmp_path / "health-checks" / "rpi4.yaml").write_text(RPI4_HEALTH_CHECK)
    for folder in ("etc/ci", "etc/dutlab"):
        (tmp_path / folder).mkdir(parents=True)
    incomplete_job(lab)

    modules = tuple(m for m in ORDER if m != "job")
    run = play(examples_playbook(tmp_path, lab.url, lab.admin_token, modules), tmp_path, cwd=tmp_path)
    assert not run.failed_tasks, run.stdout[-6000:]

    worker = lab.api("GET", "/api/v1/workers/worker01").json()
    assert (worker["description"], worker["health"]) == ("rack 2, QEMU and three boards", "Maintenance")
    assert "dispatcher_tftp_ip" in lab.api("GET", "/api/v1/workers/worker01/files/config").json()["text"]
    assert "MIRROR" in lab.api("GET", "/api/v1/workers/worker01/files/env-dut").json()["text"]
    assert (tmp_path / "etc" / "dutlab" / "worker-token").stat().st_mode & 0o777 == 0o600
    assert lab.api("GET", "/api/v1/device-types/bcm2711-rpi-4-b").status == 200
    assert lab.api("GET", "/api/v1/device-types/imx8mp-evk").json()["disable_health_checks"] is True
    assert lab.api("GET", "/api/v1/groups/lab-admins").json()["permissions"] == ["admin"]
    assert lab.api("GET", "/api/v1/users/alice").json()["is_active"] is False
    assert lab.api("GET", "/api/v1/users/bob").json()["is_staff"] is True
    assert (tmp_path / "etc" / "ci" / "dutlab-token").is_file()
    assert not [t for t in lab.api("GET", "/api/v1/tokens?user=ci-bot").json()["results"]
                if t["description"] == "gitlab-ci"]  # created, then revoked
    rpi4 = lab.api("GET", "/api/v1/devices/rpi4-01").json()
    assert (rpi4["health"], rpi4["owner_group"]) == ("Maintenance", "kernel-team")
    assert lab.api("GET", "/api/v1/devices/qemu01").status == 404  # changed, then removed
    assert run["The first of them with its results"]["jobs"][0]["health"] == "Incomplete"
