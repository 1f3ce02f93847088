"""dutlab-worker and the log uploader against a real server on loopback.

The jobs are real: dutlab-run boots the QEMU test assets. The worker, the server and the runs are
killed and restarted mid-job; afterwards the server's log must equal the run's local output.yaml
line for line (nothing lost, nothing duplicated) and no process of the job may be left. Every
process a test starts is ended by its pid or process group when the test ends.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from dutlab.dispatcher.jobsdb import JobsDB
from dutlab.dispatcher.protocol import Client, ErrorType, JobResult, job_path, poll_path
from dutlab.dispatcher.upload import LogUploader, sync_finished_job
from labkit import BIN, file_root_args, start_lab

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
ASSETS = Path(os.environ.get("DUTLAB_ASSETS") or "/var/cache/dutlab/assets") / "amd64"
# The health check's job (kernel + initramfs under TCG, a test shell), with a test that prints a
# line every 0.2 s for `seconds`: long enough to restart things mid-job, short for a test.
QEMU_JOB = """\
device_type: qemu
job_name: worker {name}
visibility: public
timeouts:
  job: {{minutes: 6}}
  action: {{minutes: 3}}
context: {{arch: amd64}}
actions:
- deploy:
    to: tmpfs
    images:
      kernel:
        url: file://{assets}/vmlinuz
        image_arg: -kernel {{kernel}} -append "console=ttyS0,115200"
      initrd:
        url: file://{assets}/initramfs.cpio.gz
        image_arg: -initrd {{initrd}}
        compression: gz
        format: cpio.newc
        overlays: {{lava: true}}
- boot:
    method: qemu
    media: tmpfs
    prompts: ['[~/][^\\r\\n]*# ']
- test:
    definitions:
    - from: inline
      name: ticks
      path: inline/ticks.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: ticks}}
        run:
          steps:
          - i=0; while [ $i -lt {ticks} ]; do echo tick $i; i=$((i+1)); sleep 0.2; done
          - lava-test-case ticked --shell test $i -eq {ticks}
"""
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
def lab(tmp_path):
    """The server with device type qemu, worker w1 (token in `lab.token_file`) and device qemu01.

    The server is stopped for seconds in some tests: a long offline grace keeps the server's own
    sweep from ending the job meanwhile, which would hide what the worker reports.
    """
    lab, stop = start_lab(tmp_path, worker_offline_grace=600)
    try:
        lab.manage("device-types", "add", "qemu", "--disable-health-checks")
        token = lab.manage("workers", "add", "w1").stdout.strip().split()[-1]
        d = tmp_path / "qemu01.jinja2"
        d.write_text(QEMU_DICT)
        lab.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", "--dictionary", str(d))
        lab.token_file = tmp_path / "worker.token"
        lab.token_file.write_text(token + "\n")
        lab.worker_token = token
        yield lab
    finally:
        stop()


class CountingProxy:
    """A plain HTTP relay on loopback between the worker (and its runs) and the real server.

    It forwards every request unchanged and counts them by method and path, so a test can say
    how often the worker side sent a request (the server keeps no access log).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream).netloc
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        relay = self._relay

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                relay(self)

            do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="counting-proxy", daemon=True)
        self.thread.start()

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.counts[method, path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def _relay(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self.counts[handler.command, handler.path] += 1
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
        conn = http.client.HTTPConnection(self.upstream, timeout=120)  # longer than any long-poll
        try:
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        except OSError as exc:
            handler.send_error(502, f"relay to {self.upstream} failed: {exc}")
            return
        finally:
            conn.close()
        handler.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture
def proxy(lab):
    relay = CountingProxy(lab.url)
    yield relay
    relay.close()


def offer(lab, job_id: int) -> str:
    """Poll as worker w1 until the server hands out `job_id`; return its job token."""
    worker = Client(lab.url, f"Worker {lab.worker_token}")
    for _ in range(20):
        reply = worker.post(poll_path("w1"), {"protocol": 1, "version": "t", "running": [], "wait": 2})
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
    job.post(job_path(job_id, "logs"), {"index": 0, "lines": [record(i) for i in range(30)]})

    result = JobResult.failed(ErrorType.INFRASTRUCTURE, "dutlab-run exited with status -9")
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
    assert uploader.close(JobResult("pass"), timeout=60)
    assert server_log(lab, job_id) == (out / "output.yaml").read_text().splitlines()
    assert lab.wait_job(job_id)["health"] == "Complete"


# -- the worker daemon ---------------------------------------------------------------------------

class WorkerProcess:
    """One dutlab-worker; remembers every job process group it saw, to end them all at teardown."""

    def __init__(self, lab, tmp: Path) -> None:
        self.lab = lab
        self.work_dir = tmp / "work"
        self.log_file = tmp / "worker.log"
        self.extra: tuple[str, ...] = ()
        self.proc: subprocess.Popen | None = None
        self.pgids: set[int] = set()

    def start(self, *extra: str) -> None:
        """Start the worker; `extra` options are kept for the next start."""
        self.extra = extra or self.extra
        self.proc = subprocess.Popen(
            [str(BIN / "dutlab-worker"), "--url", self.lab.url, "--name", "w1",
             "--token-file", str(self.lab.token_file), "--work-dir", str(self.work_dir),
             "--poll-wait", "5", "--keep-jobs", "--level", "DEBUG", "--log-file", str(self.log_file),
             *file_root_args(), *self.extra],
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

    def job_gone(self, job_id: int) -> bool:
        db = JobsDB(self.work_dir / "worker.sqlite3")
        try:
            return db.get(job_id) is None
        finally:
            db.close()

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


def test_run_that_cannot_start_is_reported_once(lab, worker, proxy, tmp_path):
    worker.start("--url", proxy.url, "--run-command", str(tmp_path / "no-such-dutlab-run"))
    job_id = submit(lab, PLAIN_JOB)
    job = lab.wait_job(job_id, timeout=60)
    wait_for(lambda: f"job {job_id}: finished and reported" in worker.log(), 30, "the worker's report")
    assert worker.stop() == 0
    assert (job["health"], job["error_type"]) == ("Incomplete", "Infrastructure")
    assert "dutlab-run exited with status 127 without a result" in job["error_msg"]
    assert "no-such-dutlab-run" in job["error_msg"]
    assert proxy.count("POST", job_path(job_id, "finish")) == 1  # the worker's, as no run sent one


# Runs that misbehave, played by small scripts in place of dutlab-run.

def run_script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-run"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def wait_state(lab, job_id: int, state: str) -> None:
    wait_for(lambda: lab.api("GET", f"/api/v1/jobs/{job_id}").json()["state"] == state, 60, f"job {state}")


def test_cancel_escalates_to_sigkill_after_the_grace(lab, worker, tmp_path):
    worker.start("--run-command", run_script(tmp_path, "trap '' TERM\nsleep 120\n"), "--cancel-grace", "1")
    job_id = submit(lab, PLAIN_JOB)
    rec = worker.job(job_id)
    wait_state(lab, job_id, "Running")
    asked = time.monotonic()
    assert lab.api("POST", f"/api/v1/jobs/{job_id}/cancel").status == 200
    job = lab.wait_job(job_id, timeout=60)
    assert job["health"] == "Canceled", job
    assert time.monotonic() - asked >= 1
    assert f"job {job_id}: still running 1s after SIGTERM; SIGKILL" in worker.log()
    assert group_gone(rec.pgid)


def test_run_that_ended_while_the_worker_was_away(lab, worker, tmp_path):
    worker.start("--run-command", run_script(tmp_path, "sleep 120\n"))
    job_id = submit(lab, PLAIN_JOB)
    rec = worker.job(job_id)
    wait_state(lab, job_id, "Running")
    worker.stop(signal.SIGKILL)
    os.killpg(rec.pgid, signal.SIGKILL)
    worker.start()
    job = lab.wait_job(job_id, timeout=30)
    assert (job["health"], job["error_type"]) == ("Incomplete", "Infrastructure")
    assert job["error_msg"].startswith(
        "dutlab-run ended while the worker was restarting (exit status unknown) without a result")


def test_report_survives_a_worker_restart_while_the_server_is_down(lab, worker, tmp_path):
    worker.start("--run-command", run_script(tmp_path, "echo started; sleep 120\n"))
    job_id = submit(lab, PLAIN_JOB)
    rec = worker.job(job_id)
    wait_state(lab, job_id, "Running")
    lab.stop("serve")
    os.killpg(rec.pgid, signal.SIGKILL)  # the worker sees the exit but cannot report it
    wait_for(lambda: f"job {job_id}: dutlab-run ended (status -9)" in worker.log(), 10, "the exit")
    worker.stop(signal.SIGKILL)
    lab.restart("serve")
    worker.start()
    job = lab.wait_job(job_id, timeout=30)
    assert (job["health"], job["error_type"]) == ("Incomplete", "Infrastructure")
    # The exit status seen before the restart was kept in the worker's jobs DB.
    assert job["error_msg"] == ("dutlab-run exited with status -9 (killed by SIGKILL) without a result; "
                                "end of run.log:\nstarted")


def test_job_the_server_forgot_is_killed_and_not_reported(lab, worker, tmp_path):
    # This run reports its own end, then hangs: the server lists it as unknown in the next poll.
    finish = ("import sys, time; from pathlib import Path; from dutlab.dispatcher.protocol import Client, job_path; "
              "a = sys.argv; arg = lambda k: a[a.index(k) + 1]; "
              "Client(arg('--server'), 'Job ' + Path(arg('--job-token-file')).read_text()).post("
              "job_path(int(arg('--job-id')), 'finish'), {'result': 'pass'}); time.sleep(120)")
    script = tmp_path / "finish-then-hang.py"
    script.write_text(finish)
    worker.start("--run-command", f"{sys.executable} {script}")
    job_id = submit(lab, PLAIN_JOB)
    rec = worker.job(job_id)
    assert lab.wait_job(job_id, timeout=30)["health"] == "Complete"
    wait_for(lambda: f"job {job_id}: the server has ended it (Complete); killing its run" in worker.log(), 30,
             "the worker to forget the job")
    assert group_gone(rec.pgid)
    wait_for(lambda: worker.job_gone(job_id), 10,
             "the job to be forgotten")
    assert "finished and reported" not in worker.log()
    assert lab.wait_job(job_id)["health"] == "Complete"


# -- what the server keeps for this worker -------------------------------------------------------

def put_file(lab, kind: str, text: str) -> None:
    r = lab.api("PUT", f"/api/v1/workers/w1/files/{kind}", {"text": text})
    assert r.status == 200, r.text


def dumped_env(job_dir: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (job_dir / "env.txt").read_text().splitlines() if "=" in line)


def test_the_servers_files_for_the_worker_reach_each_run(lab, worker, tmp_path, monkeypatch):
    """env.yaml, dispatcher.yaml and env-dut.yaml set on the server apply to the next run, and an
    edit to the one after (a stand-in for dutlab-run records its environment and arguments)."""
    put_file(lab, "env", "overrides: {LAB_PROXY: 'http://proxy.lab:3128'}\nremoves: [LAB_SECRET]\n")
    put_file(lab, "config", "dispatcher_ip: 192.0.2.5\nprefix: lab-\n")
    put_file(lab, "env-dut", "overrides: {DUT_MIRROR: 'http://mirror.lab'}\n")
    monkeypatch.setenv("LAB_SECRET", "from the worker host")
    worker.start("--run-command", run_script(tmp_path, 'env > env.txt\necho "$@" > args.txt\n'))
    first = submit(lab, PLAIN_JOB)
    lab.wait_job(first, timeout=60)
    job_dir = worker.work_dir / "jobs" / str(first)
    env = dumped_env(job_dir)
    assert env["LAB_PROXY"] == "http://proxy.lab:3128" and "LAB_SECRET" not in env
    args = (job_dir / "args.txt").read_text().split()
    assert args[args.index("--dispatcher-ip") + 1] == "192.0.2.5"
    assert args[args.index("--env-dut") + 1] == str(job_dir / "env-dut.yaml")
    assert yaml.safe_load((job_dir / "env-dut.yaml").read_text())["overrides"] == {"DUT_MIRROR": "http://mirror.lab"}
    assert yaml.safe_load((job_dir / "dispatcher.yaml").read_text()) == {"dispatcher_ip": "192.0.2.5", "prefix": "lab-"}

    put_file(lab, "env", "overrides: {LAB_PROXY: 'http://other.lab:3128'}\n")
    put_file(lab, "env-dut", "")  # deleted
    second = submit(lab, PLAIN_JOB)
    lab.wait_job(second, timeout=60)
    job_dir = worker.work_dir / "jobs" / str(second)
    env = dumped_env(job_dir)
    assert (env["LAB_PROXY"], env["LAB_SECRET"]) == ("http://other.lab:3128", "from the worker host")
    assert "--env-dut" not in (job_dir / "args.txt").read_text().split()


def test_a_worker_offering_a_lower_compatibility_refuses_the_job(lab, worker, tmp_path):
    """A job whose compatibility this worker's dutlab cannot meet is refused at fetch, before
    anything runs, with the message of docs/worker.md naming the side to upgrade."""
    from dutlab import dispatcher
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database
    from dutlab.service.models import TestJob

    job_id = submit(lab, PLAIN_JOB)  # w1 has never polled: the job waits
    db = open_database(load(str(lab.config)).database)  # as a newer server would have computed it
    try:
        TestJob.update(pipeline_compatibility=99).where(TestJob.id == job_id).execute()
    finally:
        db.close()
        database.initialize(None)
    worker.start("--run-command", run_script(tmp_path, "touch ran\n"))
    job = lab.wait_job(job_id, timeout=60)
    version = dispatcher.__version__
    assert (job["health"], job["error_type"]) == ("Incomplete", "Configuration"), job
    assert job["error_msg"] == (f"job {job_id} needs pipeline compatibility 99, dutlab {version} on worker w1 "
                                f"offers 1 for its methods: upgrade dutlab on worker w1 (the server runs dutlab "
                                f"{version})")
    assert not (worker.work_dir / "jobs" / str(job_id) / "ran").exists()  # nothing ran
    assert any("Configuration error: job" in line for line in server_log(lab, job_id))


# -- configuration -------------------------------------------------------------------------------

def run_worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dutlab-worker"), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("extra", "says"), [
    ({"poll-wiat": 3}, "worker.yaml: poll-wiat: unknown setting; known settings are cancel_grace, "),
    ({"level": "LOUD"}, "level must be one of DEBUG, INFO, WARNING, ERROR, not 'LOUD'"),
    ({"keep_jobs": "yes"}, "keep_jobs must be true or false"),
    ({"cancel-grace": "30s"}, "cancel_grace must be a number of seconds, not '30s'"),
])
def test_config_file_is_checked(tmp_path, extra, says):
    cfg = tmp_path / "worker.yaml"
    cfg.write_text(yaml.safe_dump({"url": "http://x:1", "token_file": "t", **extra}))
    proc = run_worker("--config", str(cfg))
    assert proc.returncode == 2
    assert says in proc.stderr


def test_config_needs_url_and_token_file(tmp_path):
    proc = run_worker("--token-file", "t", "--work-dir", str(tmp_path))
    assert proc.returncode == 2 and "url is required" in proc.stderr
    proc = run_worker("--url", "lab:8000", "--token-file", "t", "--work-dir", str(tmp_path))
    assert proc.returncode == 2 and "must start with http://" in proc.stderr
    proc = run_worker("--url", "http://127.0.0.1:9", "--token-file", str(tmp_path / "missing"),
                      "--work-dir", str(tmp_path))
    assert proc.returncode == 2 and "cannot read the worker token" in proc.stderr


# -- real jobs: dutlab-run + QEMU ------------------------------------------------------------------

qemu = pytest.mark.skipif(not (ASSETS / "vmlinuz").exists(),
                          reason=f"no QEMU test assets in {ASSETS} (scripts/build-qemu-assets.sh builds them)")


def qemu_job(name: str, seconds: float) -> str:
    return QEMU_JOB.format(name=name, assets=ASSETS, ticks=int(seconds / 0.2))


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def local_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_ticking(w: WorkerProcess, job_id: int, after: int = 1) -> Path:
    """Wait until the job's test prints its ticks; return the local output.yaml."""
    log = w.output(job_id) / "output.yaml"
    wait_for(lambda: sum("tick " in line for line in local_lines(log)) >= after, 240,
             f"job {job_id} to print 'tick {after}'")
    return log


def log_time(text: str, needle: str) -> float:
    """Epoch time of the first worker log line containing `needle` (logging's default clock format)."""
    line = next(line for line in text.splitlines() if needle in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def assert_same_log(lab, job_id: int, local: Path) -> None:
    server = server_log(lab, job_id)
    mine = local_lines(local)
    assert len(server) == len(mine), f"server has {len(server)} lines, the run wrote {len(mine)}"
    assert server == mine
    assert len(set(mine)) == len(mine)  # every record has its own timestamp: a copy would show


def assert_complete(lab, job_id: int) -> dict:
    job = lab.wait_job(job_id, timeout=300)
    assert (job["health"], job["error_msg"]) == ("Complete", ""), job
    return job


@pytest.mark.qemu
@qemu
def test_job_runs_and_reports_at_once(lab, worker):
    worker.start()
    job_id = submit(lab, qemu_job("basic", 1))
    rec = worker.job(job_id)
    job = assert_complete(lab, job_id)
    assert_same_log(lab, job_id, worker.output(job_id) / "output.yaml")
    assert any("tick 4" in line for line in server_log(lab, job_id))
    assert group_gone(rec.pgid)
    assert lab.api("GET", f"/api/v1/jobs/{job_id}/description").status == 200
    assert job["start_time"] and job["end_time"]


@pytest.mark.qemu
@qemu
def test_finish_is_sent_once_per_job(lab, worker, proxy):
    """dutlab-run sends the finish and marks it reported; the worker then sends none of its own."""
    worker.start("--url", proxy.url)
    job_id = submit(lab, qemu_job("once", 1))
    worker.job(job_id)
    assert_complete(lab, job_id)
    wait_for(lambda: f"job {job_id}: finished and reported" in worker.log(), 30, "the worker's report")
    assert (worker.output(job_id) / "reported").exists()
    assert proxy.count("POST", job_path(job_id, "logs")) >= 1  # the job's traffic went through the relay
    assert proxy.count("POST", job_path(job_id, "finish")) == 1
    assert_same_log(lab, job_id, worker.output(job_id) / "output.yaml")


@pytest.mark.qemu
@qemu
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_worker_restart_mid_job(lab, worker, sig):
    worker.start()
    job_id = submit(lab, qemu_job("worker restart", 8))
    rec = worker.job(job_id)
    log = wait_ticking(worker, job_id)
    assert worker.stop(sig) == (0 if sig == signal.SIGTERM else -sig)
    # Alone, the run goes on: it prints and uploads while no worker exists.
    printed = len(local_lines(log))
    time.sleep(1.5)
    assert rec.alive() and len(local_lines(log)) > printed
    worker.start()
    wait_for(lambda: f"job {job_id}: re-adopting" in worker.log(), 30, "the re-adoption")
    assert_complete(lab, job_id)
    assert_same_log(lab, job_id, log)
    assert group_gone(rec.pgid)
    wait_for(lambda: f"job {job_id}: finished and reported" in worker.log(), 30, "the report")


@pytest.mark.qemu
@qemu
def test_server_restart_mid_job(lab, worker):
    worker.start()
    job_id = submit(lab, qemu_job("server restart", 8))
    log = wait_ticking(worker, job_id)
    lab.stop("serve")
    printed = len(local_lines(log))
    time.sleep(2)
    assert len(local_lines(log)) > printed  # the job goes on without a server
    lab.restart("serve")
    assert_complete(lab, job_id)
    assert_same_log(lab, job_id, log)
    # The outage was logged with the URL and the error, and the worker is back.
    assert f"poll failed: cannot reach {lab.url}/internal/v1/workers/w1/poll: " in worker.log()
    wait_for(lambda: f"server {lab.url} answers again" in worker.log(), 30, "the worker to poll again")


@pytest.mark.qemu
@qemu
def test_killed_run_is_incomplete_infrastructure_at_once(lab, worker):
    worker.start()
    job_id = submit(lab, qemu_job("killed", 30))
    rec = worker.job(job_id)
    log = wait_ticking(worker, job_id)
    killed_at = time.time()
    os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while lab.api("GET", f"/api/v1/jobs/{job_id}").json()["state"] != "Finished":
        assert time.monotonic() < deadline, "the server never heard of the killed run"
        time.sleep(0.01)
    latency = time.time() - killed_at
    job = lab.wait_job(job_id)
    assert (job["health"], job["error_type"]) == ("Incomplete", "Infrastructure")
    assert job["error_msg"].startswith("dutlab-run exited with status -9 (killed by SIGKILL) without a result")
    assert_same_log(lab, job_id, log)
    assert group_gone(rec.pgid)  # QEMU went with it
    noticed = log_time(worker.log(), f"job {job_id}: dutlab-run ended") - killed_at
    ended = datetime.fromisoformat(job["end_time"].replace("Z", "+00:00")).timestamp() - killed_at
    print(f"run SIGKILLed -> worker noticed {noticed * 1000:.0f} ms, server end_time {ended * 1000:.0f} ms, "
          f"seen Finished over REST {latency * 1000:.0f} ms")
    assert latency < 1.0


@pytest.mark.qemu
@qemu
def test_cancel_ends_the_job_and_every_process(lab, worker):
    worker.start()
    job_id = submit(lab, qemu_job("cancel", 60))
    rec = worker.job(job_id)
    wait_ticking(worker, job_id)
    r = lab.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert r.status == 200, r.text
    job = lab.wait_job(job_id, timeout=60)
    assert job["health"] == "Canceled", job
    assert group_gone(rec.pgid)
    assert "SIGKILL" not in worker.log()  # finalize ended it within the grace
