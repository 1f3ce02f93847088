"""The whole lab on this machine: server, consumer, real dutlab-worker, real QEMU.

Health checks decide device health; the README's demo and keep-running lab commands work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labkit import http

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("DUTLAB_ASSETS", "/var/cache/dutlab/assets"))
pytestmark = [pytest.mark.qemu, pytest.mark.skipif(not (ASSETS / "amd64" / "manifest.json").exists(),
                                                    reason="run scripts/build-qemu-assets.sh first")]


def test_new_device_gets_a_health_check_and_becomes_good(lab_server):
    lab_server.start_worker()
    lab_server.add_qemu_device(health_checks=True)
    device = lab_server.wait_health("qemu01", {"Good", "Bad"})
    history = lab_server.api("GET", "/api/v1/devices/qemu01/health-history").json()
    assert device["health"] == "Good", history
    jobs = lab_server.api("GET", "/api/v1/jobs").json()["results"]
    [check] = [j for j in jobs if j["health_check"]]
    assert check["health"] == "Complete" and check["actual_device"] == "qemu01"
    cases = lab_server.api("GET", f"/api/v1/jobs/{check['id']}/results").json()
    assert any(c["suite"] != "lava" and c["result"] == "pass" for c in cases), cases


def test_device_whose_qemu_cannot_start_becomes_bad_with_the_reason(lab_server):
    lab_server.start_worker()
    broken = "{% extends 'qemu.jinja2' %}\n{% set extra_options = ['-no-such-qemu-option'] %}\n"
    lab_server.add_qemu_device(dictionary=broken, health_checks=True)
    device = lab_server.wait_health("qemu01", {"Good", "Bad"})
    assert device["health"] == "Bad"
    history = lab_server.api("GET", "/api/v1/devices/qemu01/health-history").json()
    reasons = " ".join(h["reason"] for h in (history.get("results", history) if isinstance(history, dict) else history))
    assert "no-such-qemu-option" in reasons or "QEMU" in reasons, reasons
    # a Bad device gets no more jobs or health checks until an admin acts
    jobs = lab_server.api("GET", "/api/v1/jobs").json()["results"]
    assert len([j for j in jobs if j["health_check"]]) == 1


def run_demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.mark.slow
def test_demo_command_runs_a_job_and_prints_results():
    out = run_demo()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "results of job" in out.stdout and "Complete" in out.stdout
    assert "passed its health check" in out.stdout
    # the guest's terminal control sequences (ESC[6n...) are not passed on to the terminal
    assert "\x1b" not in out.stdout and not any(c < " " and c not in "\t\n" for c in out.stdout)
    # each job's Finished comes after its last console line, and a download says what it fetched
    lines = out.stdout.splitlines()
    finished = [i for i, line in enumerate(lines) if line.startswith("--- job ") and ": Finished" in line]
    assert finished and all(not line.startswith("  | ") for line in lines[finished[-1]:])
    assert any(line.split()[:2] == ["lava", "file-download"] and "(" in line for line in lines), out.stdout


@pytest.mark.slow
def test_demo_multinode_runs_the_two_role_example():
    out = run_demo("--multinode", "--port", "18090")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted examples/jobs/qemu-multinode.yaml" in out.stdout
    assert "qemu02 passed its health check" in out.stdout
    done = [line for line in out.stdout.splitlines() if line.startswith("job ") and line.endswith(": Complete")]
    assert [line.split()[1].rstrip(":").split(".")[1] for line in done] == ["0", "1"], out.stdout


@pytest.mark.slow
def test_keep_running_lab_exports_let_curl_submit():
    out = run_demo("--keep-running")
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        exports = next(line for line in out.stdout.splitlines() if line.startswith("export DUTLAB_URL="))
        values = dict(kv.split("=", 1) for kv in exports.removeprefix("export ").split())
        job = (REPO / "examples" / "jobs" / "qemu-smoke.yaml").read_text()
        r = subprocess.run(["curl", "-sS", "-H", f"Authorization: Token {values['DUTLAB_TOKEN']}",
                            "-H", "Content-Type: application/yaml", "--data-binary", job,
                            values["DUTLAB_URL"] + "/api/v1/jobs"], capture_output=True, text=True, timeout=60)
        body = yaml.safe_load(r.stdout)
        assert body["job_ids"], r.stdout + r.stderr
        job_id = body["job_ids"][0]
        deadline = time.monotonic() + 300
        state = {}
        while time.monotonic() < deadline:
            state = http("GET", f"{values['DUTLAB_URL']}/api/v1/jobs/{job_id}", token=values["DUTLAB_TOKEN"]).json()
            if state["state"] == "Finished":
                break
            time.sleep(0.5)
        assert state.get("health") == "Complete", state
    finally:
        stopped = run_demo("--stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
