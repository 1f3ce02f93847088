"""Fencing after a worker outage (docs/worker.md, "When the worker is away"), on real parts: the
server and its queue consumer, dutlab-worker, dutlab-run and QEMU.

The worker is SIGKILLed mid-job. Back before the job's own timeout, it re-adopts the job, which
ends Complete however long the worker was Offline. Kept away past that timeout, the job ends
Incomplete (Infrastructure, naming the worker) while no other job gets the device; when the
worker returns it kills the orphaned run before the device runs anything else (a health check
first), and nothing the run sends changes the finished job. For the run to outlive its own
timeout, as a hung run or a frozen host would, it is stopped (SIGSTOP) while the worker is away.
Every process a test starts is ended by its pid when the test ends.
"""

from __future__ import annotations

import signal
import time

import pytest
from test_worker import (
    PLAIN_JOB,
    QEMU_DICT,
    WorkerProcess,
    assert_same_log,
    offer,
    qemu,
    qemu_job,
    record,
    server_log,
    submit,
    wait_for,
    wait_ticking,
    write_lines,
)

from dutlab.dispatcher.protocol import ApiError, Client, JobResult, job_path
from dutlab.dispatcher.upload import LogUploader, sync_finished_job
from labkit import Pid, cmdline, descendants, start_lab

#: short heartbeats and grace so an outage is seen in seconds
SETTINGS = {"worker_heartbeat_timeout": 5, "worker_offline_grace": 3, "scheduler_sweep": 1}
#: (b)'s job: its own timeout passes while the worker is away
SHORT_TIMEOUTS = "  job: {seconds: 30}\n  action: {seconds: 30}\n"



@pytest.fixture
def lab(tmp_path):
    """The server (SETTINGS), worker w1 (token in `lab.token_file`), no device yet."""
    lab, stop = start_lab(tmp_path, **SETTINGS)
    try:
        lab.worker_token = lab.add_worker("w1")
        lab.token_file = tmp_path / "worker.token"
        lab.token_file.write_text(lab.worker_token + "\n")
        yield lab
    finally:
        stop()


@pytest.fixture
def worker(lab, tmp_path):
    w = WorkerProcess(lab, tmp_path)
    yield w
    w.cleanup()


@pytest.fixture
def orphans():
    """Processes a test froze: SIGKILLed at the end whatever happened."""
    procs: list[Pid] = []
    yield procs
    for p in procs:
        p.signal(signal.SIGKILL)


def get(lab, path: str) -> dict:
    r = lab.api("GET", path)
    assert r.status == 200, r.text
    return r.json()


def wait_worker(lab, state: str, timeout: float = 60) -> float:
    wait_for(lambda: get(lab, "/api/v1/workers/w1")["state"] == state, timeout, f"worker w1 {state}")
    return time.monotonic()


def run_and_qemu(rec) -> list[Pid]:
    """dutlab-run and everything it started (QEMU on a pty, in a session of its own)."""
    procs = [Pid.of(rec.pid)] + [Pid.of(pid) for pid in descendants(rec.pid)]
    procs = [p for p in procs if p is not None]
    assert any("qemu-system" in " ".join(cmdline(p.pid)) for p in procs), [cmdline(p.pid) for p in procs]
    return procs


def test_uploader_stops_at_a_job_the_server_ended(lab, tmp_path):
    """What an orphaned run's uploader meets: a 409 that says the job is Finished; it stops."""
    lab.add_qemu_device("qemu01", "w1", dictionary=QEMU_DICT, health="Good")
    job_id = submit(lab, PLAIN_JOB)
    token = offer(lab, job_id)
    run = Client(lab.url, f"Job {token}")
    run.post(job_path(job_id, "logs"), {"index": 0, "lines": [record(i) for i in range(3)]})
    run.post(job_path(job_id, "finish"), JobResult.failed("Infrastructure", "ended elsewhere").finish_body("", 3))
    out = tmp_path / "output"
    out.mkdir()
    write_lines(out / "output.yaml", 0, 10)
    uploader = LogUploader(lab.url, job_id, token, out, interval=0.05)
    uploader.start()
    assert not uploader.close(JobResult("pass"), timeout=30)
    assert "already Finished (Incomplete)" in uploader.gone
    assert sync_finished_job(lab.url, job_id, token, out, JobResult("pass"), timeout=30)  # nothing to report
    assert len(server_log(lab, job_id)) == 3
    job = get(lab, f"/api/v1/jobs/{job_id}")
    assert (job["health"], job["error_msg"]) == ("Incomplete", "ended elsewhere")


@pytest.mark.qemu
@qemu
def test_worker_back_before_the_job_timeout_readopts_it_whatever_the_offline_time(lab, worker):
    lab.add_qemu_device("qemu01", "w1", dictionary=QEMU_DICT, health="Good")
    worker.start()
    job_id = submit(lab, qemu_job("outage a", 30))
    rec = worker.job(job_id)
    log = wait_ticking(worker, job_id)
    worker.stop(signal.SIGKILL)
    offline = wait_worker(lab, "Offline")
    # Away for several times the grace: before fencing, the server ended the job here.
    while time.monotonic() - offline < 4 * SETTINGS["worker_offline_grace"]:
        job, device = get(lab, f"/api/v1/jobs/{job_id}"), get(lab, "/api/v1/devices/qemu01")
        assert (job["state"], device["state"], device["health"]) == ("Running", "Running", "Good"), (job, device)
        time.sleep(0.5)
    assert rec.alive()
    worker.start()
    wait_for(lambda: f"job {job_id}: re-adopting" in worker.log(), 30, "the re-adoption")
    job = lab.wait_job(job_id, timeout=300)
    assert (job["health"], job["error_msg"]) == ("Complete", ""), job
    assert_same_log(lab, job_id, log)
    assert get(lab, "/api/v1/devices/qemu01")["health"] == "Good"


@pytest.mark.qemu
@qemu
def test_worker_away_past_the_job_timeout_fences_the_job_and_kills_the_orphan(lab, worker, orphans):
    lab.add_qemu_device("qemu01", "w1", dictionary=QEMU_DICT, health_checks=True)
    worker.start()
    lab.wait_health("qemu01", {"Good"}, state="Idle", interval=0.2)  # the first health check
    definition = qemu_job("outage b", 300)
    assert "  job: {minutes: 6}\n  action: {minutes: 3}\n" in definition
    job_id = submit(lab, definition.replace("  job: {minutes: 6}\n  action: {minutes: 3}\n", SHORT_TIMEOUTS))
    rec = worker.job(job_id)
    wait_ticking(worker, job_id)
    token = (worker.work_dir / "jobs" / str(job_id) / "token").read_text().strip()
    # The worker dies and its run hangs (stopped), so the run outlives its own timeout.
    worker.stop(signal.SIGKILL)
    frozen = run_and_qemu(rec)
    orphans.extend(frozen)
    for p in frozen:
        assert p.signal(signal.SIGSTOP)
    wait_worker(lab, "Offline")
    assert get(lab, f"/api/v1/jobs/{job_id}")["state"] == "Running"
    other = submit(lab, qemu_job("waits for qemu01", 1))

    job = lab.wait_job(job_id, timeout=120)
    assert (job["health"], job["error_type"]) == ("Incomplete", "Infrastructure"), job
    assert job["error_msg"].startswith("worker w1 is offline (gone for "), job
    assert "the job's timeout (30 s, plus 3 s to finalize and report) has passed" in job["error_msg"]
    lines = len(server_log(lab, job_id))
    # No other job gets the device while its worker is away: not the queued one, not a health check.
    time.sleep(4 * SETTINGS["scheduler_sweep"])
    assert get(lab, f"/api/v1/jobs/{other}")["state"] == "Submitted"
    device = get(lab, "/api/v1/devices/qemu01")
    assert (device["state"], device["health"], device["current_job"]) == ("Idle", "Unknown", None), device
    assert [j["id"] for j in get(lab, "/api/v1/jobs?limit=100")["results"] if j["id"] > job_id] == [other]
    assert all(p.running() for p in frozen)  # the orphan is still there when the worker returns

    worker.start()
    back = time.monotonic()
    for p in frozen:
        assert p.wait_gone(10), f"pid {p.pid} ({cmdline(p.pid)}) outlived the worker's return"
    print(f"orphaned dutlab-run + QEMU gone {time.monotonic() - back:.1f} s after the worker started")
    assert f"job {job_id}: the server has ended it (Incomplete: worker w1 is offline" in worker.log()
    # What the run (or anyone with its token) sends for the finished job changes nothing.
    run = Client(lab.url, f"Job {token}")
    for what, body in (("logs", {"index": lines, "lines": ['{"dt": "x", "lvl": "target", "msg": "late"}']}),
                       ("finish", JobResult("pass").finish_body("", lines)), ("state", {"state": "Running"})):
        with pytest.raises(ApiError) as refused:
            run.post(job_path(job_id, what), body)
        assert refused.value.job_ended and "already Finished (Incomplete)" in refused.value.error, refused.value
    assert len(server_log(lab, job_id)) == lines
    assert get(lab, f"/api/v1/jobs/{job_id}")["health"] == "Incomplete"

    # The device is checked before its next job.
    done = lab.wait_job(other, timeout=300)
    assert done["health"] == "Complete", done
    [check] = [j for j in get(lab, "/api/v1/jobs?limit=100")["results"] if j["id"] > other]
    assert check["health_check"] and check["actual_device"] == "qemu01" and check["health"] == "Complete"
    assert check["end_time"] <= done["start_time"]
    assert get(lab, "/api/v1/devices/qemu01")["health"] == "Good"
    assert len(server_log(lab, job_id)) == lines
