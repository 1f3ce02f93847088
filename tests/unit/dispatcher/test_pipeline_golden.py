"""Golden pipelines: Pipeline.describe() for known jobs, stored under tests/dispatcher/pipelines/.

A refactor that changes the pipeline shows up as a YAML diff. To accept a change, run
    DUTLAB_REGENERATE_PIPELINES=1 pytest tests/unit/dispatcher/test_pipeline_golden.py
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from dutlab.dispatcher.actions.finalize import Finalize
from dutlab.dispatcher.actions.registry import build_actions
from dutlab.dispatcher.context import JobContext
from dutlab.dispatcher.log import JobLogger
from dutlab.dispatcher.pipeline import Pipeline
from dutlab.dispatcher.schema.job import validate_job
from dutlab.service.templating import load_device_config, shipped_device_types_dir

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "dispatcher" / "pipelines"

HTTP_GIT_RETRY = {
    "job_name": "http images, git and url tests, retries",
    "device_type": "qemu",
    "visibility": "public",
    "timeouts": {"job": {"minutes": 30}, "actions": {"http-download": {"minutes": 4}},
                 "connections": {"lava-test-shell": {"seconds": 20}}},
    "context": {"arch": "amd64", "extra_options": ["-smp", 2]},
    "actions": [
        {"deploy": {"to": "tmpfs", "timeout": {"minutes": 10}, "images": {
            "kernel": {"url": "https://example.org/bzImage.xz", "compression": "xz",
                       "sha256sum": "a" * 64, "image_arg": "-kernel {kernel}"},
            "rootfs": {"url": "https://example.org/rootfs.ext4.gz", "compression": "gz",
                       "image_arg": "-drive format=raw,if=virtio,file={rootfs}"}}}},
        {"boot": {"method": "qemu", "media": "tmpfs", "failure_retry": 2, "timeout": {"minutes": 4},
                  "prompts": ["root@debian:~#"],
                  "auto_login": {"login_prompt": "login:", "username": "root"}}},
        {"test": {"timeout": {"minutes": 5}, "definitions": [
            {"from": "git", "name": "smoke-tests", "repository": "https://github.com/Linaro/test-definitions",
             "path": "automated/linux/smoke/smoke.yaml", "parameters": {"SKIP_INSTALL": True}},
            {"from": "url", "name": "bundle", "repository": "https://example.org/tests.tar.gz",
             "path": "tests/bundle.yaml"}]}},
    ],
}


def _file(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


JOBS = {
    "qemu-smoke": lambda: _file(ROOT / "examples" / "jobs" / "qemu-smoke.yaml"),
    "qemu-arm64": lambda: _file(ROOT / "examples" / "jobs" / "qemu-arm64.yaml"),
    "health-check-qemu": lambda: _file(ROOT / "device-types" / "health-checks" / "qemu.yaml"),
    "qemu-http-git-retry": lambda: HTTP_GIT_RETRY,
}


def describe(job: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    validate_job(job)
    device = load_device_config("{% extends 'qemu.jinja2' %}\n", hostname="qemu01", device_type="qemu",
                                context=job.get("context"), search_path=[shipped_device_types_dir()])
    ctx = JobContext(job_id=1, job=job, device=device, logger=JobLogger(tmp_path / "output.yaml"),
                     output_dir=tmp_path, work_dir=tmp_path, tmp_dir=tmp_path / "tmp")
    return Pipeline(ctx, build_actions(ctx), Finalize()).describe()


@pytest.mark.parametrize("name", sorted(JOBS))
def test_pipeline_matches_golden(name: str, tmp_path: Path) -> None:
    described = describe(JOBS[name](), tmp_path)
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("DUTLAB_REGENERATE_PIPELINES"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(yaml.safe_dump(described, sort_keys=False))
    assert described == yaml.safe_load(golden.read_text()), f"pipeline of {name} changed (see module docstring)"
