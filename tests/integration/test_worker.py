"""dutlab-worker and the log uploader against a real server on loopback.

The jobs are real: dutlab-run boots the QEMU test assets. The worker, the server and the runs are
killed and restarted mid-job; afterwards the server's log must equal the run's local output.yaml
line for line (nothing lost, nothing duplicated) and no process of the job may be left. Every
process a test starts is ended by its pid or process group when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from dutlab.dispatcher.client import Client
from dutlab.dispatcher.jobsdb import JobsDB
from dutlab.dispatcher.upload import LogUploader, sync_finished_job
from labtools import BIN, REPO

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
ASSETS = Path(os.environ.get("DUTLAB_ASSETS") or Path.home() / ".cache" / "dutlab" / "assets")
SMOKE_JOB = REPO / "examples" / "jobs" / "qemu-smoke.yaml"
# A job nobody runs: the uploader tests drive the worker API themselves.
PLAIN_JOB = """\
job_name: uploader
device_type: qemu
visibility: public
timeouts:
  job: {minutes: 5}
context: {arch: amd64}
actions:
- boot: {method: qemu, media: tmpfs, prompts: ['# ']}
"""


def record(i: int) -> str:
    return json.dumps({"dt": "2026-01-01T00:00:00+00:00", "lvl": "target", "msg": f"line {i}"})


def write_lines(path: Path, first: int, count: int) -> None:
    with open(path, "a") as fh:
        for i in range(first, first + count):
            fh.write(f"- {record(i)}\n")


def server_log(lab, job_id: int) -> list[str]:
    r = lab.api("GET", f"/api/v1/jobs/{job_id}/logs")
    assert r.status == 200, r.text
    return r.text.splitlines()


def submit(lab, definition: str) -> int:
    r = lab.api("POST", "/api/v1/jobs", {"definition": definition})
    assert r.status == 201, r.text
    return r.json()["job_ids"][0]


@pytest.fixture
def lab(lab_server, tmp_path):
    """The server with device type qemu, worker w1 (token in `lab.token_file`) and device qemu01."""
    lab_server.manage("device-types", "add", "qemu", "--disable-health-checks")
    token = lab_server.manage("workers", "add", "w1").stdout.strip().split()[-1]
    d = tmp_path / "qemu01.jinja2"
    d.write_text(QEMU_DICT)
    lab_server.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", "--dictionary", str(d))
    lab_server.token_file = tmp_path / "worker.token"
    lab_server.token_file.write_text(token + "\n")
    lab_server.worker_token = token
    return lab_server


def offer(lab, job_id: int) -> str:
    """Poll as worker w1 until the server hands out `job_id`; return its job token."""
    worker = Client(lab.url, f"Worker {lab.worker_token}")
    for _ in range(20):
        reply = worker.post("/internal/v1/workers/w1/poll", {"protocol": 1, "version": "t", "running": [],
                                                             "wait": 2})
        for item in reply["start"]:
            if item["id"] == job_id:
                return item["token"]
    raise AssertionError(f"job {job_id} was never offered")


# -- the uploader on its own ---------------------------------------------------------------------

def test_sync_finishes_first_and_uploads_only_what_is_missing(lab, tmp_path):
    job_id = submit(lab, PLAIN_JOB)
    token = offer(lab, job_id)
    out = tmp_path / "output"
    out.mkdir()
    write_lines(out / "output.yaml", 0, 2500)
    with open(out / "output.yaml", "a") as fh:
        fh.write('- {"dt": "2026-01-01T00:00:00+00:00", "lvl": "tar')  # torn by a SIGKILL mid-write
    (out / "description.yaml").write_text("pipeline: []\n")
    # The run had uploaded 30 lines before it died.
    job = Client(lab.url, f"Job {token}")
    job.post(f"/internal/v1/jobs/{job_id}/logs", {"index": 0, "lines": [record(i) for i in range(30)]})

    result = {"result": "fail", "error_type": "Infrastructure", "error_msg": "dutlab-run exited with status -9"}
    assert sync_finished_job(lab.url, job_id, token, out, result, timeout=60)
    local = (out / "output.yaml").read_text().splitlines()[:-1]
    assert server_log(lab, job_id) == local
    shown = lab.wait_job(job_id)
    assert (shown["health"], shown["error_type"]) == ("Incomplete", "Infrastructure")
    assert lab.api("GET", f"/api/v1/jobs/{job_id}/description").text == "pipeline: []\n"
    # Reporting again (a worker restarted before it forgot the job) changes nothing.
    assert sync_finished_job(lab.url, job_id, token, out, result, timeout=60)
    assert server_log(lab, job_id) == local


def test_uploader_rides_through_a_server_restart(lab, tmp_path):
    job_id = submit(lab, PLAIN_JOB)
    token = offer(lab, job_id)
    out = tmp_path / "output"
    out.mkdir()
    uploader = LogUploader(lab.url, job_id, token, out, batch_max=100, interval=0.05)
    uploader.start()
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            write_lines(out / "output.yaml", n, 7)
            n += 7
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        lab.stop("serve")
        written_while_down = len((out / "output.yaml").read_text().splitlines())
        time.sleep(1.5)
        assert len((out / "output.yaml").read_text().splitlines()) > written_while_down
        lab.restart("serve")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert uploader.close({"result": "pass"}, timeout=60)
    assert server_log(lab, job_id) == (out / "output.yaml").read_text().splitlines()
    assert lab.wait_job(job_id)["health"] == "Complete"


# -- the worker daemon ---------------------------------------------------------------------------

class WorkerProcess:
    """One dutlab-worker; remembers every job process group it saw, to end them all at teardown."""

    def __init__(self, lab, tmp: Path, *extra: str) -> None:
        self.lab = lab
        self.work_dir = tmp / "work"
        self.log_file = tmp / "worker.log"
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.pgids: set[int] = set()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "dutlab-worker"), "--url", self.lab.url, "--name", "w1",
             "--token-file", str(self.lab.token_file), "--work-dir", str(self.work_dir),
             "--poll-wait", "5", "--keep-jobs", "--level", "DEBUG", "--log-file", str(self.log_file),
             *self.extra],
            stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(15)

    def log(self) -> str:
        try:
            return self.log_file.read_text()
        except FileNotFoundError:
            return ""

    def job(self, job_id: int, timeout: float = 60):
        """The worker's record of `job_id` once it has a process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.work_dir / "worker.sqlite3").exists():
                db = JobsDB(self.work_dir / "worker.sqlite3")
                try:
                    job = db.get(job_id)
                finally:
                    db.close()
                if job is not None and job.pgid:
                    self.pgids.add(job.pgid)
                    return job
            time.sleep(0.05)
        raise AssertionError(f"the worker never started job {job_id}:\n{self.log()}")

    def output(self, job_id: int) -> Path:
        return self.work_dir / "jobs" / str(job_id) / "output"

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pgid in self.pgids:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def worker(lab, tmp_path):
    w = WorkerProcess(lab, tmp_path)
    yield w
    w.cleanup()


def group_gone(pgid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_run_that_cannot_start_is_reported(lab, tmp_path):
    w = WorkerProcess(lab, tmp_path, "--run-command", str(tmp_path / "no-such-dutlab-run"))
    w.start()
    try:
        job = lab.wait_job(submit(lab, PLAIN_JOB), timeout=60)
    finally:
        assert w.stop() == 0
        w.cleanup()
    assert (job["health"], job["error_type"]) == ("Incomplete", "Infrastructure")
    assert "dutlab-run exited with status 127 without a result" in job["error_msg"]
    assert "no-such-dutlab-run" in job["error_msg"]


# -- configuration -------------------------------------------------------------------------------

def run_worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dutlab-worker"), *args], capture_output=True, text=True, timeout=30)


def test_config_refuses_unknown_keys(tmp_path):
    cfg = tmp_path / "worker.yaml"
    cfg.write_text(yaml.safe_dump({"url": "http://x:1", "token_file": "t", "poll-wiat": 3}))
    proc = run_worker("--config", str(cfg))
    assert proc.returncode == 2
    assert "unknown key 'poll-wiat'" in proc.stderr


def test_config_needs_url_and_token_file(tmp_path):
    proc = run_worker("--token-file", "t", "--work-dir", str(tmp_path))
    assert proc.returncode == 2 and "url is required" in proc.stderr
    proc = run_worker("--url", "lab:8000", "--token-file", "t", "--work-dir", str(tmp_path))
    assert proc.returncode == 2 and "must start with http://" in proc.stderr
    proc = run_worker("--url", "http://127.0.0.1:9", "--token-file", str(tmp_path / "missing"),
                      "--work-dir", str(tmp_path))
    assert proc.returncode == 2 and "cannot read the worker token" in proc.stderr
