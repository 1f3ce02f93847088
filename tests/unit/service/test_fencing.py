"""Fencing after a worker outage (docs/worker.md), in process on the configured backend.

A job whose worker is Offline keeps its device and its state until its own timeout (plus
worker_offline_grace) has passed since it started; then it ends Incomplete naming the worker,
and nothing its run sends afterwards changes it. A device of an Offline worker is offered to no
job, and a returning worker is told which of its runs were ended before any new job starts on
their devices.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import factories as f
from dutlab.dispatcher.protocol import ENDED_PROTOCOL, JobResult
from dutlab.service import scheduler
from dutlab.service.errors import ApiError
from dutlab.service.lab import jobs, results, workers
from dutlab.service.logstore import JobFolder
from dutlab.service.models import Device, HealthHistory, TestJob, Worker, utcnow
from dutlab.service.states import DeviceHealth, DeviceState, JobHealth, JobState, WorkerState

TIMEOUT = 300  # factories.JOB: timeouts.job {minutes: 5}


def record(i: int) -> str:
    return json.dumps({"dt": "2026-01-01T00:00:00+00:00", "lvl": "target", "msg": f"line {i}"})


def running_job(settings, health_checks: bool = False) -> tuple[TestJob, Device, Worker]:
    """A job Running on q1 of worker w1, which then misses its heartbeats (Offline)."""
    dt, w = f.device_type(health_checks=health_checks), f.worker()
    dev = f.device("q1", dt, w)
    if health_checks:  # a recent health check passed: the next job is a normal one
        hc = TestJob.get_by_id(scheduler.run_pass(settings).health_checks[0])
        jobs.finish(jobs.mark_running(hc), JobResult("pass"))
    job = jobs.submit(f.user(), f.job_text(), settings)[0]
    assert scheduler.run_pass(settings).scheduled == [job.id]
    job = jobs.mark_running(TestJob.get_by_id(job.id))
    results.append_log(job, 0, [record(i) for i in range(5)], settings)
    go_offline(w, settings)
    return job, dev, w


def go_offline(w: Worker, settings, seconds_ago: float = 0) -> None:
    Worker.update(last_ping=utcnow() - timedelta(seconds=settings.worker_heartbeat_timeout + 5 + seconds_ago)).where(
        Worker.id == w.id).execute()
    scheduler.run_pass(settings)
    assert Worker.get_by_id(w.id).state == WorkerState.OFFLINE


def started_ago(job: TestJob, seconds: float) -> None:
    TestJob.update(start_time=utcnow() - timedelta(seconds=seconds)).where(TestJob.id == job.id).execute()


def test_job_keeps_its_device_while_its_worker_is_away_within_its_timeout(db, settings):
    job, dev, w = running_job(settings)
    # Offline far longer than any grace, but the job started within its own timeout.
    Worker.update(offline_since=utcnow() - timedelta(days=2)).where(Worker.id == w.id).execute()
    started_ago(job, TIMEOUT + settings.worker_offline_grace - 30)
    report = scheduler.run_pass(settings)
    assert report.abandoned == []
    job = TestJob.get_by_id(job.id)
    assert (job.state, job.health) == (JobState.RUNNING, JobHealth.UNKNOWN)
    dev = Device.get_by_id(dev.id)
    assert (dev.state, dev.current_job_id, dev.health) == (DeviceState.RUNNING, job.id, DeviceHealth.GOOD)
    # The worker comes back and still runs it: re-adopted, nothing to kill, it ends as it reports.
    workers.heartbeat(w, "t", ENDED_PROTOCOL, settings.worker_heartbeat_timeout)
    assert workers.work_for(w, {job.id}) == {"start": [], "cancel": [], "unknown": [], "ended": []}
    done = jobs.finish_reported(job, JobResult("pass"), "", 5, settings)
    assert done.health == JobHealth.COMPLETE


def test_job_ends_incomplete_once_its_timeout_passed_and_nothing_changes_it_after(db, settings):
    job, dev, w = running_job(settings)
    started_ago(job, TIMEOUT + settings.worker_offline_grace + 5)
    report = scheduler.run_pass(settings)
    assert report.abandoned == [job.id]
    job = TestJob.get_by_id(job.id)
    assert (job.state, job.health, job.error_type) == (JobState.FINISHED, JobHealth.INCOMPLETE, "Infrastructure")
    assert job.error_msg.startswith("worker w1 is offline (gone for ")
    assert f"the job's timeout (300 s, plus {settings.worker_offline_grace} s to finalize and report)" in job.error_msg
    dev = Device.get_by_id(dev.id)
    assert (dev.state, dev.current_job_id, dev.health) == (DeviceState.IDLE, None, DeviceHealth.UNKNOWN)
    history = HealthHistory.select().where(HealthHistory.device == dev).order_by(HealthHistory.id.desc()).first()
    assert "worker w1 is offline" in history.reason
    # What the orphaned run sends now is refused and changes nothing.
    folder = JobFolder(settings.output_dir, job.id)
    submitted = folder.read("description.yaml")  # the pipeline as built at submission
    assert submitted and "boot-qemu-image" in submitted
    for call in (lambda: results.append_log(job, 5, [record(5), record(6)], settings),
                 lambda: results.append_log(job, 0, [record(i) for i in range(7)], settings),
                 lambda: jobs.mark_running(job),
                 # more lines than stored: still this 409, not one asking for the rest of the log
                 lambda: jobs.finish_reported(job, JobResult("pass"), "steps: []", 7, settings)):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 409 and err.value.extra == {"state": "Finished", "health": "Incomplete"}
        assert "already Finished (Incomplete)" in err.value.message
    # A protocol 1 client's finish is answered as before, a 200 (it would retry anything else).
    assert jobs.finish_reported(job, JobResult("pass"), "x", 7, settings, refuse_finished=False).id == job.id
    assert folder.line_count() == 5 and folder.read("description.yaml") == submitted
    job = TestJob.get_by_id(job.id)
    assert (job.health, job.error_type) == (JobHealth.INCOMPLETE, "Infrastructure")
    assert scheduler.run_pass(settings).abandoned == []  # ended once


def test_device_of_an_offline_worker_gets_no_job_and_no_health_check(db, settings):
    job, dev, w = running_job(settings, health_checks=True)
    started_ago(job, TIMEOUT + settings.worker_offline_grace + 5)
    assert scheduler.run_pass(settings).abandoned == [job.id]
    assert Device.get_by_id(dev.id).health == DeviceHealth.UNKNOWN  # due for a health check
    waiting = jobs.submit(f.user("bob"), f.job_text(), settings)[0]
    for _ in range(3):
        report = scheduler.run_pass(settings)
        assert (report.scheduled, report.health_checks) == ([], [])
    assert TestJob.get_by_id(waiting.id).state == JobState.SUBMITTED
    # Back Online: the health check comes before the waiting job.
    workers.heartbeat(w, "t", ENDED_PROTOCOL, settings.worker_heartbeat_timeout)
    report = scheduler.run_pass(settings)
    assert report.scheduled == [] and len(report.health_checks) == 1


def test_scheduled_job_counts_from_when_it_was_scheduled(db, settings):
    dt, w = f.device_type(), f.worker()
    f.device("q1", dt, w)
    job = jobs.submit(f.user(), f.job_text(), settings)[0]
    scheduler.run_pass(settings)
    go_offline(w, settings)
    assert TestJob.get_by_id(job.id).state == JobState.SCHEDULED  # the worker may have spawned it
    TestJob.update(scheduled_time=utcnow() - timedelta(seconds=TIMEOUT + settings.worker_offline_grace + 5)).where(
        TestJob.id == job.id).execute()
    assert scheduler.run_pass(settings).abandoned == [job.id]


def test_canceled_job_of_an_offline_worker_waits_too_and_ends_canceled(db, settings):
    job, dev, w = running_job(settings)
    assert jobs.cancel(job.submitter, job).state == JobState.CANCELING
    assert scheduler.run_pass(settings).abandoned == []
    started_ago(job, TIMEOUT + settings.worker_offline_grace + 5)
    assert scheduler.run_pass(settings).abandoned == [job.id]
    assert TestJob.get_by_id(job.id).health == JobHealth.CANCELED


def test_online_worker_is_not_fenced_and_an_absurd_timeout_does_not_break_the_pass(db, settings):
    dt, w = f.device_type(), f.worker()
    f.device("q1", dt, w)
    job = jobs.submit(f.user(), f.job_text(), settings)[0]
    scheduler.run_pass(settings)
    job = jobs.mark_running(TestJob.get_by_id(job.id))
    started_ago(job, 10 * TIMEOUT)
    assert scheduler.run_pass(settings).abandoned == []  # its worker polls: the worker's to report
    definition = json.loads(job.definition)
    definition["timeouts"]["job"] = {"days": 10**15}
    TestJob.update(definition=json.dumps(definition)).where(TestJob.id == job.id).execute()
    go_offline(w, settings)
    assert scheduler.run_pass(settings).abandoned == []
    assert TestJob.get_by_id(job.id).state == JobState.RUNNING


def test_fenced_health_check_sends_the_device_to_unknown_not_bad(db, settings):
    dt, w = f.device_type(health_checks=True), f.worker()
    dev = f.device("q1", dt, w, health=DeviceHealth.UNKNOWN)
    hc = jobs.mark_running(TestJob.get_by_id(scheduler.run_pass(settings).health_checks[0]))
    go_offline(w, settings)
    started_ago(hc, workers.job_timeout(hc) + settings.worker_offline_grace + 5)
    assert scheduler.run_pass(settings).abandoned == [hc.id]
    assert TestJob.get_by_id(hc.id).health == JobHealth.INCOMPLETE
    dev = Device.get_by_id(dev.id)
    assert dev.health == DeviceHealth.UNKNOWN and dev.last_health_report_job_id is None


def test_returning_worker_is_told_what_ended_before_its_device_gets_new_work(db, settings):
    job, dev, w = running_job(settings)
    started_ago(job, TIMEOUT + settings.worker_offline_grace + 5)
    scheduler.run_pass(settings)
    waiting = jobs.submit(f.user("bob"), f.job_text(), settings)[0]
    workers.heartbeat(w, "t", ENDED_PROTOCOL, settings.worker_heartbeat_timeout)
    assert scheduler.run_pass(settings).scheduled == [waiting.id]
    # The worker still runs the ended job: it must kill it first; the new job is held back.
    answer = workers.work_for(w, {job.id, 999, 2**70, -1}, ENDED_PROTOCOL)
    assert answer["start"] == [] and answer["unknown"] == [-1, 999, 2**70]
    [ended] = answer["ended"]
    assert (ended["id"], ended["health"]) == (job.id, "Incomplete") and "worker w1 is offline" in ended["reason"]
    # protocol 1 workers get it as unknown, which they kill as well
    assert workers.work_for(w, {job.id}, 1) == {"start": [], "cancel": [], "unknown": [job.id]}
    # once it no longer lists the run, the new job starts
    [start] = workers.work_for(w, set(), ENDED_PROTOCOL)["start"]
    assert start["id"] == waiting.id
