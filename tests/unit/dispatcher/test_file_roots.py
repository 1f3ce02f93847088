"""file:// URLs name only files under the worker's file_roots and the job's own folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_run_cli import DEVICE, job, records, run

from dutlab.dispatcher import download
from dutlab.dispatcher.errors import JobError
from dutlab.dispatcher.worker.config import parse_args


def test_a_file_under_a_root_is_read_and_one_outside_is_a_job_error(tmp_path: Path) -> None:
    root, outside = tmp_path / "assets", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    (root / "vmlinuz").write_bytes(b"kernel")
    (outside / "shadow").write_text("root:$6$...")
    (root / "link").symlink_to(outside / "shadow")
    assert download.local_file(f"file://{root}/vmlinuz", [root]) == (root / "vmlinuz").resolve()
    for url in (f"file://{outside}/shadow", f"file://{root}/link", f"file://{root}/../private/shadow",
                "file:///etc/shadow"):
        with pytest.raises(JobError) as info:
            download.local_file(url, [root])
        assert url in str(info.value) and "file_roots" in str(info.value) and str(root) in str(info.value)
    # dutlab-run started by hand (no roots) reads what its user may read
    assert download.local_file(f"file://{outside}/shadow", None) == outside / "shadow"


def test_dutlab_run_with_file_roots_refuses_other_files_before_reading_them(tmp_path: Path) -> None:
    secret = tmp_path / "secret.img"
    secret.write_bytes(b"not for jobs")
    doc = job(actions=[{"deploy": {"to": "downloads", "images": {"blob": {"url": f"file://{secret}"}}}}])
    proc, out = run(tmp_path, doc, None, "--file-roots", "/var/cache/dutlab")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = yaml.safe_load((out / "result.yaml").read_text())
    assert result["error_type"] == "Job" and f"file://{secret}" in result["error_msg"]
    assert "/var/cache/dutlab" in result["error_msg"] and "file_roots" in result["error_msg"]
    assert not any("not for jobs" in str(r["msg"]) for r in records(out))
    # the job's own folders are always allowed, and an explicit root lets the file through
    proc, out = run(tmp_path, doc, None, "--file-roots", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dutlab_run_refuses_relative_file_roots(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job()))
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(DEVICE))
    proc = subprocess.run([sys.executable, "-m", "dutlab.dispatcher.run", str(tmp_path / "job.yaml"), "--device",
                           str(tmp_path / "device.yaml"), "--output-dir", str(tmp_path / "out"),
                           "--file-roots", "assets"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--file-roots 'assets': every folder must be an absolute path" in proc.stderr


def test_the_worker_setting_defaults_to_the_asset_cache_and_is_checked(tmp_path: Path, capsys) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    base = ["--url", "http://127.0.0.1:1", "--token-file", str(token), "--work-dir", str(tmp_path)]
    assert parse_args(base).file_roots == ["/var/cache/dutlab"]
    assert parse_args([*base, "--file-roots", "/srv/images:/var/cache/dutlab"]).file_roots == \
        ["/srv/images", "/var/cache/dutlab"]
    assert parse_args([*base, "--file-roots", ""]).file_roots == []
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"file_roots": ["/srv/images"]}))
    assert parse_args([*base, "--config", str(config)]).file_roots == ["/srv/images"]
    config.write_text(yaml.safe_dump({"file_roots": "srv/images"}))
    with pytest.raises(SystemExit):
        parse_args([*base, "--config", str(config)])
    assert "file_roots must be a list of absolute folder paths" in capsys.readouterr().err
