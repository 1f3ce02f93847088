"""The worker side of a lab: workers, the real dutlab-worker, QEMU devices, waiting for health.

`Lab` is a `LabServer` that can also run workers; devices of any kind go through `add_device`
(a board helper adds its own device types and dictionaries the same way).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import BIN, REPO
from .server import LabError, LabServer

ASSETS = Path(os.environ.get("DUTLAB_ASSETS", "/var/cache/dutlab/assets"))
QEMU_DICTIONARY = "{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n"


def file_root_args() -> tuple[str, ...]:
    """dutlab-worker options that let jobs name the test assets in file:// URLs: none when they
    are under the worker's default file root (/var/cache/dutlab), else --file-roots with them."""
    if ASSETS.resolve().is_relative_to("/var/cache/dutlab"):
        return ()
    return ("--file-roots", f"/var/cache/dutlab:{ASSETS.resolve()}")


def worker_available() -> tuple[bool, str]:
    """Whether dutlab-worker and dutlab-run are installed next to this interpreter."""
    for script, module in (("dutlab-worker", "dutlab.dispatcher.worker"), ("dutlab-run", "dutlab.dispatcher.run")):
        if not (BIN / script).exists() or importlib.util.find_spec(module) is None:
            return False, f"{script} is not installed in {BIN}"
    return True, ""


def qemu_available(arch: str = "amd64") -> tuple[bool, str]:
    """Whether the QEMU test assets of `arch` are built and their QEMU is installed."""
    manifest = ASSETS / arch / "manifest.json"
    if not manifest.exists():
        return False, f"no QEMU assets in {ASSETS / arch} (run scripts/build-qemu-assets.sh)"
    binary = json.loads(manifest.read_text())["qemu_binary"]
    if shutil.which(binary) is None:
        return False, f"{binary} is not installed"
    return True, ""


def smoke_job() -> str:
    """examples/jobs/qemu-smoke.yaml, its images taken from ASSETS."""
    text = (REPO / "examples" / "jobs" / "qemu-smoke.yaml").read_text()
    return text.replace("file:///var/cache/dutlab/assets", f"file://{ASSETS}")


@dataclass
class Lab(LabServer):
    """A server with workers and devices."""

    #: extra dutlab-worker arguments for every start_worker (tests: shorter long-polls)
    worker_args: tuple[str, ...] = ()
    worker_tokens: dict[str, str] = field(default_factory=dict)

    def add_worker(self, name: str, **fields: Any) -> str:
        """Register a worker; return its token (also kept in `worker_tokens`)."""
        token = self.json("POST", "/api/v1/workers", {"hostname": name, **fields})["token"]
        self.worker_tokens[name] = token
        return token

    def start_worker(self, name: str = "worker1", token: str | None = None, *extra: str) -> Path:
        """Start the real dutlab-worker `name` (registered first when it is not yet); its work dir."""
        token = token or self.worker_tokens.get(name) or self.add_worker(name)
        token_file = self.root / f"{name}.token"
        token_file.write_text(token + "\n")
        os.chmod(token_file, 0o600)
        work = self.root / f"worker-{name}"
        self.spawn(f"worker-{name}", [str(BIN / "dutlab-worker"), "--url", self.url, "--name", name,
                                      "--token-file", str(token_file), "--work-dir", str(work),
                                      *file_root_args(), *self.worker_args, *extra])
        return work

    def stop_worker(self, name: str, sig: int = signal.SIGTERM, tree: bool = True) -> int | None:
        """Stop dutlab-worker `name`; tree=False leaves its runs going (for a re-adoption)."""
        return self.procs.stop(f"worker-{name}", sig, tree=tree)

    def wait_worker_online(self, name: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            worker = self.json("GET", f"/api/v1/workers/{name}")
            if worker["state"] == "Online":
                return worker
            if time.monotonic() > deadline:
                raise LabError(f"dutlab-worker {name} did not come online in {timeout:.0f}s:\n"
                               f"{self.log('worker-' + name)}")
            time.sleep(0.05)

    def add_qemu_device(self, hostname: str = "qemu01", worker: str = "worker1", dictionary: str | None = None,
                        device_type: str = "qemu", health_checks: bool = False, **fields: Any) -> dict:
        """A QEMU device (its device type made first when missing, health checks off unless asked)."""
        if self.api("GET", f"/api/v1/device-types/{device_type}").status == 404:
            self.add_device_type(device_type, **({} if health_checks else {"disable_health_checks": True}))
        return self.add_device(hostname, device_type, worker, dictionary or QEMU_DICTIONARY, **fields)

    def wait_health(self, hostname: str, wanted: set[str], timeout: float = 240, state: str = "",
                    interval: float = 0.5) -> dict:
        """The device once its health is one of `wanted` (and its state `state`, when given)."""
        deadline = time.monotonic() + timeout
        device: dict = {}
        while time.monotonic() < deadline:
            device = self.json("GET", f"/api/v1/devices/{hostname}")
            if device["health"] in wanted and (not state or device["state"] == state):
                return device
            time.sleep(interval)
        workers = "\n".join(self.log(name) for name in self.procs.names() if name.startswith("worker-"))
        raise LabError(f"{hostname} still {device.get('health')}/{device.get('state')} after {timeout:.0f}s:\n"
                       f"{self.log('serve')}\n{workers}")

    def qemu_device_ready(self, hostname: str = "qemu01", worker: str = "worker1", health_check: bool = False,
                          timeout: float = 240) -> dict:
        """Register worker + QEMU device, start the worker, wait until the device is Good and Idle.

        health_check=True: the device starts Unknown and must pass the shipped health check first;
        else health checks are off and the device starts Good.
        """
        if worker not in self.worker_tokens:
            self.add_worker(worker)
        self.add_qemu_device(hostname, worker, health_checks=health_check,
                             **({} if health_check else {"health": "Good"}))
        self.start_worker(worker)
        self.wait_worker_online(worker, timeout)
        device = self.wait_health(hostname, {"Good", "Bad"}, timeout, state="Idle", interval=0.1)
        if device["health"] == "Bad":
            history = self.json("GET", f"/api/v1/devices/{hostname}/health-history")
            raise LabError(f"{hostname} failed its health check: {history}")
        return device
