#!/usr/bin/env python3
"""The demo lab: server + queue consumer + worker + one QEMU device, SQLite, on this machine.

  make demo   runs one job (examples/jobs/qemu-smoke.yaml), follows its log, prints the results
              and stops everything; exit status 0 only if the job is Complete.
  make lab    starts the same lab and leaves it running; prints the URL, an admin user and the
              DUTLAB_URL / DUTLAB_USER / DUTLAB_TOKEN exports the Ansible modules and curl use.
  make lab-stop  stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSETS = Path(os.environ.get("DUTLAB_ASSETS", "/var/cache/dutlab/assets"))
DICTIONARY = "{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def pick_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config = root / "server.yaml"
        self.pids: dict[str, int] = {}
        self.token = ""

    def server(self, *args: str) -> str:
        proc = subprocess.run([str(BIN / "dutlab-server"), "--config", str(self.config), "--log-level", "WARNING",
                               *args], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"demo: dutlab-server {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pids[name] = proc.pid

    def api(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                is_json = r.headers.get_content_type() == "application/json"
                return r.status, (json.loads(raw) if is_json else raw.decode())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def setup(self) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump({
            "data_dir": str(self.root / "data"), "listen": f"127.0.0.1:{self.port}",
            "template_dirs": [str(self.root / "device-types")], "health_checks_dir": str(self.root / "health-checks"),
            "secret_key_file": str(self.root / "secret_key"), "base_url": self.url,
        }))
        self.server("migrate")
        password = self.server("manage", "users", "add", "admin", "--superuser").strip().split()[-1]
        self.token = self.server("manage", "tokens", "add", "--user", "admin", "--description", "demo").split()[-1]
        self.server("manage", "device-types", "add", "qemu")
        worker_token = self.server("manage", "workers", "add", "worker1").split()[-1]
        (self.root / "worker-token").write_text(worker_token + "\n")
        os.chmod(self.root / "worker-token", 0o600)
        (self.root / "qemu01.jinja2").write_text(DICTIONARY)
        self.server("manage", "devices", "add", "qemu01", "--device-type", "qemu", "--worker", "worker1",
                    "--dictionary", str(self.root / "qemu01.jinja2"), "--description", "demo QEMU device")
        return {"user": "admin", "password": password, "token": self.token}

    def start(self) -> None:
        base = [str(BIN / "dutlab-server"), "--config", str(self.config)]
        self.spawn("server", base + ["serve"])
        self.spawn("consumer", base + ["consumer"])
        if worker_available():
            self.spawn("worker", [str(BIN / "dutlab-worker"), "--url", self.url, "--name", "worker1",
                                  "--token-file", str(self.root / "worker-token"),
                                  "--work-dir", str(self.root / "worker")])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.api("GET", "/api/v1/system/version")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        sys.exit(f"demo: the server did not answer on {self.url}; see {self.root}/server.log")

    def stop(self) -> None:
        # the worker first (it would start the next job), then its jobs while the server still
        # takes their last log lines and results, then the server and the consumer
        self._stop([pid for name, pid in self.pids.items() if name == "worker"])
        stop_job_runs(self.root / "worker")
        self._stop([pid for name, pid in reversed(self.pids.items()) if name != "worker"])

    @staticmethod
    def _stop(pids: list[int]) -> None:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def stop_job_runs(work_dir: Path, timeout: float = 30) -> None:
    """The lab's running jobs: dutlab-run (and its QEMU) live in sessions of their own, so that they
    outlive a worker restart, and stopping the worker leaves them. SIGTERM (the job cancels and
    cleans up), then SIGKILL whatever still names the worker's folder."""
    def ours() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if str(work_dir).encode() in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)


def worker_available() -> bool:
    import importlib.util

    return (BIN / "dutlab-worker").exists() and importlib.util.find_spec("dutlab.dispatcher.worker") is not None


def job_definition() -> str:
    text = (REPO / "examples" / "jobs" / "qemu-smoke.yaml").read_text()
    return text.replace("file:///var/cache/dutlab/assets", f"file://{ASSETS}")


def follow(lab: Lab, job_id: int, timeout: float = 600) -> dict:
    """Print the job's log as it arrives (console lines and results); return the finished job."""
    line = 0
    state = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job = lab.api("GET", f"/api/v1/jobs/{job_id}")
        if job["state"] != state:
            state = job["state"]
            print(f"--- job {job_id}: {state}" + (f" on {job['actual_device']}" if job["actual_device"] else ""))
        _, text = lab.api("GET", f"/api/v1/jobs/{job_id}/logs?start={line}")
        for record in yaml.safe_load(text) or []:
            line += 1
            print_record(record)
        if state == "Finished":
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s")


def print_record(record: dict) -> None:
    lvl, msg = record.get("lvl"), record.get("msg")
    if lvl == "results":
        return
    if lvl in ("target", "input"):
        print(f"  | {msg}")
    elif lvl in ("info", "error", "warning", "exception"):
        print(f"  {lvl}: {msg}")


def print_results(lab: Lab, job_id: int) -> None:
    _, cases = lab.api("GET", f"/api/v1/jobs/{job_id}/results")
    print(f"\nresults of job {job_id}:")
    print(f"  {'suite':<20} {'case':<28} {'result':<8} measurement")
    for c in cases:
        m = "" if c["measurement"] == "None" else f"{float(c['measurement']):g} {c['unit']}".strip()
        print(f"  {c['suite']:<20} {c['name']:<28} {c['result']:<8} {m}")


def wait_device_good(lab: Lab, timeout: float = 300) -> None:
    """The new device is Unknown: the scheduler runs its health check first, as LAVA does."""
    deadline = time.monotonic() + timeout
    announced = False
    while time.monotonic() < deadline:
        _, dev = lab.api("GET", "/api/v1/devices/qemu01")
        if dev["health"] == "Good":
            print("--- qemu01 passed its health check: Good")
            return
        if dev["health"] == "Bad":
            _, hist = lab.api("GET", "/api/v1/devices/qemu01/health-history")
            sys.exit(f"demo: qemu01 failed its health check: {hist}")
        if not announced:
            print("--- qemu01 is new (health Unknown): running its health check first")
            announced = True
        time.sleep(0.5)
    sys.exit("demo: qemu01 did not pass its health check in time")


def demo(args: argparse.Namespace) -> int:
    root = REPO / "run" / "demo"
    shutil.rmtree(root, ignore_errors=True)
    lab = Lab(root, pick_port(args.port))
    lab.setup()
    lab.start()
    try:
        status, body = lab.api("POST", "/api/v1/jobs", {"definition": job_definition()})
        if status != 201:
            print(f"demo: submission refused ({status}): {body}")
            return 1
        job_id = body["job_ids"][0]
        print(f"--- submitted examples/jobs/qemu-smoke.yaml as job {job_id} ({lab.url}/api/v1/jobs/{job_id})")
        if not worker_available():
            time.sleep(1)
            _, job = lab.api("GET", f"/api/v1/jobs/{job_id}")
            print(f"--- no dispatcher installed yet: job {job_id} is {job['state']} (queued)")
            return 0
        wait_device_good(lab)
        job = follow(lab, job_id)
        print_results(lab, job_id)
        print(f"\njob {job_id}: {job['health']}" + (f" ({job['error_type']}: {job['error_msg']})"
                                                   if job["health"] != "Complete" else ""))
        return 0 if job["health"] == "Complete" else 1
    finally:
        lab.stop()


def keep_running(args: argparse.Namespace) -> int:
    root = REPO / "run" / "lab"
    if (root / "pids.json").exists():
        stop(args)
    shutil.rmtree(root, ignore_errors=True)
    lab = Lab(root, pick_port(args.port))
    creds = lab.setup()
    lab.start()
    (root / "pids.json").write_text(json.dumps(lab.pids))
    print(f"dutlab lab running: dashboard and API at {lab.url}/  (logs in {root})")
    print(f"admin user: admin, password: {creds['password']}")
    print(f"export DUTLAB_URL={lab.url} DUTLAB_USER=admin DUTLAB_TOKEN={creds['token']}")
    print("submit a job:  curl -H \"Authorization: Token $DUTLAB_TOKEN\" -H 'Content-Type: application/yaml' "
          "--data-binary @examples/jobs/qemu-smoke.yaml $DUTLAB_URL/api/v1/jobs")
    print("stop it:       make lab-stop")
    return 0


def stop(args: argparse.Namespace) -> int:
    pids_file = REPO / "run" / "lab" / "pids.json"
    if not pids_file.exists():
        print("no lab is running (run/lab/pids.json is missing)")
        return 0
    lab = Lab(pids_file.parent, 0)
    lab.pids = json.loads(pids_file.read_text())
    lab.stop()
    pids_file.unlink()
    print("lab stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-running", action="store_true", help="start the lab and leave it running")
    parser.add_argument("--stop", action="store_true", help="stop the lab started with --keep-running")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if args.stop:
        return stop(args)
    return keep_running(args) if args.keep_running else demo(args)


if __name__ == "__main__":
    sys.exit(main())
