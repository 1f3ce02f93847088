"""Fixtures for dutlab-run integration tests: QEMU assets, rendered devices, a runner.

Import the fixtures you use into the test module (pytest only loads conftest.py by itself).
Every process a test starts is tracked by PID and killed at the end; a QEMU left behind
by dutlab-run fails the test.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dutlab.service.templating import load_device_config, shipped_device_types_dir

# The same default as scripts/build-qemu-assets.sh and tests/conftest.py.
ASSETS = Path(os.environ.get("DUTLAB_ASSETS") or "/var/cache/dutlab/assets")
PROMPT = "dutlab:~# "


def assets_for(arch: str) -> Path:
    """The kernel + initramfs directory for ``arch``; skips the test when it was not built (fails it
    with CI=true, where setup builds them)."""
    directory = ASSETS / arch
    if not (directory / "manifest.json").exists():
        reason = f"no QEMU assets in {directory}: run scripts/build-qemu-assets.sh"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    return directory


def manifest(arch: str) -> dict[str, Any]:
    return json.loads((assets_for(arch) / "manifest.json").read_text())


def render_device(arch: str, dictionary: str = "", hostname: str = "qemu01") -> dict[str, Any]:
    """The device configuration the server would send: qemu.jinja2 rendered with context arch."""
    source = "{% extends 'qemu.jinja2' %}\n" + dictionary
    return load_device_config(source, hostname=hostname, device_type="qemu", context={"arch": arch},
                              search_path=[shipped_device_types_dir()])


def inline_definition(name: str, steps: list[str], **extra: Any) -> dict[str, Any]:
    return {"from": "inline", "name": name, "path": f"inline/{name}.yaml",
            "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": name},
                           "run": {"steps": steps}, **extra}}


def qemu_job(arch: str, definitions: list[dict[str, Any]] | None = None, *, context: dict[str, Any] | None = None,
             boot: dict[str, Any] | None = None, images: dict[str, Any] | None = None,
             job_timeout: int = 120) -> dict[str, Any]:
    """A kernel + initramfs job on the built assets, with short timeouts."""
    assets = assets_for(arch)
    images = images or {
        "kernel": {"url": f"file://{assets}/vmlinuz", "image_arg": "-kernel {kernel}"},
        "initrd": {"url": f"file://{assets}/initramfs.cpio.gz", "image_arg": "-initrd {initrd}"},
    }
    actions: list[dict[str, Any]] = [
        {"deploy": {"to": "tmpfs", "timeout": {"seconds": 30}, "images": images}},
        {"boot": {"method": "qemu", "media": "tmpfs", "timeout": {"seconds": 60}, "prompts": [PROMPT],
                  **(boot or {})}},
    ]
    if definitions:
        actions.append({"test": {"timeout": {"seconds": 60}, "definitions": definitions}})
    return {"job_name": f"dutlab-run {arch} test", "device_type": "qemu", "visibility": "public",
            "timeouts": {"job": {"seconds": job_timeout}, "connection": {"seconds": 45}},
            "context": {"arch": arch, **(context or {})}, "actions": actions}


@dataclass
class Outcome:
    """What one dutlab-run left behind."""

    returncode: int
    stdout: str
    output_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        return yaml.safe_load((self.output_dir / "result.yaml").read_text())

    @property
    def results(self) -> list[dict[str, Any]]:
        return [r["msg"] for r in self.records if r["lvl"] == "results"]

    def suite(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.results if r["definition"] == name]

    def messages(self, lvl: str) -> list[str]:
        return [r["msg"] for r in self.records if r["lvl"] == lvl]

    def qemu_pid(self) -> int | None:
        """The pid of the console process dutlab-run started (QEMU, or the connect command)."""
        for msg in self.messages("info"):
            if msg.startswith(("QEMU started, pid ", "console connected, pid ")):
                return int(msg.rsplit(" ", 1)[1])
        return None


class DutlabRun:
    """Runs the real ``dutlab-run`` CLI in a subprocess, in its own session."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.work_dir = tmp_path / "work"
        self.procs: list[subprocess.Popen[str]] = []
        self.qemu_pids: list[int] = []
        self.count = 0

    def start(self, job: dict[str, Any], device: dict[str, Any], job_id: int = 1,
              work_dir: Path | None = None, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], Path]:
        self.count += 1
        run_dir = self.tmp_path / f"run{self.count}"
        run_dir.mkdir()
        (run_dir / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
        (run_dir / "device.yaml").write_text(yaml.safe_dump(device, sort_keys=False))
        argv = [sys.executable, "-m", "dutlab.dispatcher.run", str(run_dir / "job.yaml"),
                "--device", str(run_dir / "device.yaml"), "--output-dir", str(run_dir / "output"),
                "--job-id", str(job_id), "--work-dir", str(work_dir or self.work_dir), *extra_args]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        return proc, run_dir / "output"

    def finish(self, proc: subprocess.Popen[str], output_dir: Path, timeout: float = 180) -> Outcome:
        stdout, _ = proc.communicate(timeout=timeout)
        outcome = Outcome(proc.returncode, stdout, output_dir, _read_records(output_dir / "output.yaml"))
        pid = outcome.qemu_pid()
        if pid:
            self.qemu_pids.append(pid)
        return outcome

    def run(self, job: dict[str, Any], device: dict[str, Any], **kwargs: Any) -> Outcome:
        proc, output_dir = self.start(job, device, **kwargs)
        return self.finish(proc, output_dir)

    def cleanup(self) -> list[int]:
        """Kill what is still running; return the QEMU pids dutlab-run failed to stop."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        leftovers = [pid for pid in self.qemu_pids if _alive(pid)]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        return leftovers


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line[2:]) for line in path.read_text().splitlines() if line]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def dutlab_run(tmp_path: Path) -> Iterator[DutlabRun]:
    runner = DutlabRun(tmp_path)
    yield runner
    leftovers = runner.cleanup()
    assert not leftovers, f"dutlab-run left QEMU running: pids {leftovers}"


def wait_for_log(output_dir: Path, text: str, timeout: float = 60) -> None:
    """Block until ``text`` appears in output.yaml (for signals sent mid-run)."""
    end = time.monotonic() + timeout
    path = output_dir / "output.yaml"
    while time.monotonic() < end:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout} s")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@dataclass
class HttpServer:
    root: Path
    url: str
    requests: list[str]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    """A real HTTP server on loopback serving ``tmp_path / 'www'``; records request paths."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HttpServer(root, f"http://127.0.0.1:{server.server_address[1]}", server.requests)  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join()
