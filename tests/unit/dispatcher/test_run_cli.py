"""dutlab-run's command line: output files, exit status, errors before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

DEVICE = {"hostname": "qemu01", "devicetype": "qemu",
          "actions": {"deploy": {"methods": {"tmpfs": None, "downloads": None}},
                      "boot": {"methods": {"qemu": {"parameters": {"command": "qemu-system-x86_64"}}}}}}


def job(**overrides: Any) -> dict[str, Any]:
    base = {"job_name": "cli", "device_type": "qemu", "visibility": "public",
            "timeouts": {"job": {"minutes": 1}}, "actions": []}
    return {**base, **overrides}


def run(tmp_path: Path, job_doc: Any, device: Any = None, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "job.yaml").write_text(job_doc if isinstance(job_doc, str) else yaml.safe_dump(job_doc))
    (tmp_path / "device.yaml").write_text(device if isinstance(device, str) else yaml.safe_dump(device or DEVICE))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "dutlab.dispatcher.run", str(tmp_path / "job.yaml"),
                           "--device", str(tmp_path / "device.yaml"), "--output-dir", str(out),
                           "--work-dir", str(tmp_path / "work"), *extra], capture_output=True, text=True, timeout=60)
    return proc, out


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line[2:]) for line in (out / "output.yaml").read_text().splitlines()]


def test_a_deploy_only_job_passes_and_writes_every_file(tmp_path: Path) -> None:
    (tmp_path / "image").write_bytes(b"x" * 1000)
    doc = job(actions=[{"deploy": {"to": "downloads", "images": {"blob": {"url": f"file://{tmp_path}/image"}}}}])
    proc, out = run(tmp_path, doc, None, "--job-id", "12")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load((out / "result.yaml").read_text()) == {"result": "pass"}
    description = yaml.safe_load((out / "description.yaml").read_text())
    assert description["job"] == {"id": 12, "name": "cli", "timeout": 60.0}
    assert [a["name"] for a in description["pipeline"]] == ["downloads", "finalize"]
    assert records(out)[-1]["msg"] == {"definition": "lava", "case": "job", "result": "pass"}
    assert proc.stdout.startswith("job 12: Complete in ")
    assert not list((tmp_path / "work" / "tmp").iterdir())


def test_an_invalid_job_fails_fast_with_its_path(tmp_path: Path) -> None:
    doc = job(actions=[{"boot": {"method": "qemuu", "prompts": ["# "]}}])
    proc, out = run(tmp_path, doc)
    assert proc.returncode == 1
    result = yaml.safe_load((out / "result.yaml").read_text())
    assert result["result"] == "fail" and result["error_type"] == "Job"
    assert result["error_msg"].startswith("invalid job definition: actions[0].boot.method: ")
    assert records(out)[-1]["lvl"] == "results"
    assert not (out / "description.yaml").exists()


def test_a_method_the_device_does_not_offer_lists_the_reasons(tmp_path: Path) -> None:
    device = {**DEVICE, "actions": {"deploy": {"methods": {"tmpfs": None}}, "boot": {"methods": {"minimal": None}}}}
    doc = job(actions=[{"boot": {"method": "qemu", "media": "tmpfs", "prompts": ["# "]}}])
    proc, out = run(tmp_path, doc, device)
    result = yaml.safe_load((out / "result.yaml").read_text())
    assert result["error_type"] == "Job"
    assert result["error_msg"] == ("invalid job: actions[0].boot: no method accepts it: qemu01 does not offer boot "
                                   "method 'qemu' (it offers minimal); minimal: not method 'qemu'; "
                                   "u-boot: not method 'qemu'")


def test_an_unreadable_device_is_a_configuration_error(tmp_path: Path) -> None:
    proc, out = run(tmp_path, job(actions=[{"command": {"name": "x"}}]), "{not: [yaml")
    result = yaml.safe_load((out / "result.yaml").read_text())
    assert proc.returncode == 1 and result["error_type"] == "Configuration"
    assert "cannot read the device configuration" in result["error_msg"]


def test_every_problem_is_reported_before_anything_runs(tmp_path: Path) -> None:
    doc = job(actions=[{"command": {"name": "relay-on"}},
                       {"test": {"definitions": [{"from": "inline", "name": "t", "path": "t.yaml", "repository": {
                           "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "t"},
                           "run": {"steps": ["true"]}}}]}}])
    proc, out = run(tmp_path, doc)
    msg = yaml.safe_load((out / "result.yaml").read_text())["error_msg"]
    assert msg == ("invalid job: 1 user-command: the device has no user command 'relay-on' (it has: none); "
                   "2 lava-test-shell: a test action needs a deploy action before it (deploy builds the test "
                   "overlay); 2 lava-test-shell: a test action needs a boot action before it to reach a shell")
    assert not any(r["msg"].startswith("start: ") for r in records(out) if isinstance(r["msg"], str))


def test_secrets_are_masked_in_the_log(tmp_path: Path) -> None:
    doc = job(secrets={"TOKEN": "hunter2hunter2"},
              actions=[{"deploy": {"to": "downloads", "images": {"x": {"url": "http://127.0.0.1:1/hunter2hunter2"}}}}])
    proc, out = run(tmp_path, doc)
    text = (out / "output.yaml").read_text() + (out / "result.yaml").read_text() + proc.stdout
    assert "hunter2hunter2" not in text and "http://127.0.0.1:1/[MASKED]" in text
