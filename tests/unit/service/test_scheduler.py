"""Scheduler rules, in process on the configured backend (no HTTP, no queue consumer)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import factories as f
from dutlab.dispatcher.protocol import JobResult
from dutlab.service import scheduler
from dutlab.service.db import connection
from dutlab.service.errors import ApiError
from dutlab.service.lab import jobs
from dutlab.service.models import Device, HealthHistory, TestJob, Worker, utcnow
from dutlab.service.states import DeviceHealth, DeviceState, JobHealth, JobState, WorkerState

PASS = JobResult("pass")


def submit(user, settings, **kw) -> TestJob:
    return jobs.submit(user, f.job_text(**kw), settings)[0]


def state(job: TestJob) -> JobState:
    return JobState(TestJob.get_by_id(job.id).state)


def test_priority_then_submit_time(db, settings):
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    f.device("q1", dt, w)
    low = submit(alice, settings, name="low", priority="low")
    first = submit(alice, settings, name="first")
    high = submit(alice, settings, name="high", priority=100)
    second = submit(alice, settings, name="second")
    order = []
    for _ in range(4):
        report = scheduler.run_pass(settings)
        assert len(report.scheduled) == 1
        job = TestJob.get_by_id(report.scheduled[0])
        order.append(job.description)
        jobs.mark_running(job)
        jobs.finish(job, PASS)
    assert order == ["high", "first", "second", "low"]
    assert {state(j) for j in (low, first, high, second)} == {JobState.FINISHED}


def test_tags_must_be_a_subset_of_device_tags(db, settings):
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    f.device("plain", dt, w)
    tagged = f.device("tagged", dt, w, tags=("usb", "big"))
    job = submit(alice, settings, extra="tags: [usb]")
    scheduler.run_pass(settings)
    assert TestJob.get_by_id(job.id).actual_device_id == tagged.id
    with pytest.raises(ApiError) as err:
        submit(alice, settings, extra="tags: [nonexistent]")
    assert err.value.path == "tags[0]"


def test_tag_not_carried_by_any_device_is_refused_at_submit(db, settings):
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    f.device("q1", dt, w)
    f.device("q2", dt, w, tags=("a",))
    from dutlab.service.models import Tag
    Tag.create(name="b")
    with pytest.raises(ApiError) as err:
        submit(alice, settings, extra="tags: [a, b]")
    assert err.value.status == 400 and err.value.path == "tags"


def test_owner_restrictions(db, settings):
    alice, bob, carol = f.user("alice"), f.user("bob"), f.user("carol")
    team = f.group("team", carol)
    dt, w = f.device_type(), f.worker()
    f.device("alices", dt, w, owner_user=alice)
    f.device("teams", dt, w, owner_group=team)
    with pytest.raises(ApiError) as err:
        submit(bob, settings)
    assert err.value.status == 403
    a = submit(alice, settings)
    c = submit(carol, settings)
    scheduler.run_pass(settings)
    assert Device.get_by_id(TestJob.get_by_id(a.id).actual_device_id).hostname == "alices"
    assert Device.get_by_id(TestJob.get_by_id(c.id).actual_device_id).hostname == "teams"


def test_health_checks_come_first(db, settings):
    alice = f.user()
    dt, w = f.device_type(health_checks=True), f.worker()
    dev = f.device("q1", dt, w, health=DeviceHealth.UNKNOWN)
    job = submit(alice, settings)
    report = scheduler.run_pass(settings)
    assert report.scheduled == [] and len(report.health_checks) == 1
    hc = TestJob.get_by_id(report.health_checks[0])
    assert hc.health_check and hc.actual_device_id == dev.id and hc.state == JobState.SCHEDULED
    assert state(job) == JobState.SUBMITTED
    jobs.mark_running(hc)
    jobs.finish(hc, PASS)
    assert Device.get_by_id(dev.id).health == DeviceHealth.GOOD
    history = HealthHistory.select().where(HealthHistory.device == dev).order_by(HealthHistory.id.desc()).first()
    assert "passed" in history.reason and history.actor == "dutlab-health"
    report = scheduler.run_pass(settings)
    assert report.scheduled == [job.id]


def test_failed_health_check_makes_device_bad_with_reason(db, settings):
    dt, w = f.device_type(health_checks=True), f.worker()
    dev = f.device("q1", dt, w, health=DeviceHealth.UNKNOWN)
    hc = TestJob.get_by_id(scheduler.run_pass(settings).health_checks[0])
    jobs.mark_running(hc)
    jobs.finish(hc, JobResult.failed("Infrastructure", "QEMU exited immediately (exit code 1)"))
    dev = Device.get_by_id(dev.id)
    assert dev.health == DeviceHealth.BAD and dev.state == DeviceState.IDLE
    reason = HealthHistory.select().where(HealthHistory.device == dev).order_by(HealthHistory.id.desc()).first()
    assert "QEMU exited immediately" in reason.reason
    assert scheduler.run_pass(settings).health_checks == []


def test_health_check_due_by_hours_and_jobs(db, settings):
    dt, w = f.device_type(health_checks=True, health_frequency=2, health_denominator="jobs"), f.worker()
    dev = f.device("q1", dt, w, health=DeviceHealth.GOOD)
    alice = f.user()
    hc = TestJob.get_by_id(scheduler.run_pass(settings).health_checks[0])  # never checked: due
    jobs.mark_running(hc)
    jobs.finish(hc, PASS)
    for _ in range(2):
        job = submit(alice, settings)
        assert scheduler.run_pass(settings).scheduled == [job.id]
        jobs.mark_running(TestJob.get_by_id(job.id))
        jobs.finish(TestJob.get_by_id(job.id), PASS)
    assert len(scheduler.run_pass(settings).health_checks) == 1  # 2 jobs since: due again
    del dev


def test_infrastructure_error_sends_device_to_unknown(db, settings):
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    dev = f.device("q1", dt, w)
    job = submit(alice, settings)
    scheduler.run_pass(settings)
    jobs.finish(jobs.mark_running(TestJob.get_by_id(job.id)), JobResult.failed("Infrastructure", "power on failed"))
    assert Device.get_by_id(dev.id).health == DeviceHealth.UNKNOWN
    job2 = submit(alice, settings)
    scheduler.run_pass(settings)
    jobs.finish(jobs.mark_running(TestJob.get_by_id(job2.id)), JobResult.failed("Test", "a test failed"))
    assert Device.get_by_id(dev.id).health == DeviceHealth.UNKNOWN  # a test failure changes nothing


def test_worker_job_limit(db, settings):
    alice = f.user()
    dt, w = f.device_type(), f.worker(job_limit=1)
    f.device("q1", dt, w)
    f.device("q2", dt, w)
    a, b = submit(alice, settings), submit(alice, settings)
    assert len(scheduler.run_pass(settings).scheduled) == 1
    assert scheduler.run_pass(settings).scheduled == []
    running = a if state(a) == JobState.SCHEDULED else b
    jobs.finish(jobs.mark_running(TestJob.get_by_id(running.id)), PASS)
    assert len(scheduler.run_pass(settings).scheduled) == 1


def test_offline_or_maintenance_worker_gets_nothing(db, settings):
    from dutlab.service.states import WorkerHealth

    alice = f.user()
    dt = f.device_type()
    f.device("q1", dt, f.worker("off", online=False))
    f.device("q2", dt, f.worker("maint", health=WorkerHealth.MAINTENANCE))
    submit(alice, settings)
    assert scheduler.run_pass(settings).scheduled == []


def test_queue_timeout_cancels(db, settings):
    alice = f.user()
    dt = f.device_type()
    f.device("q1", dt, f.worker(online=False))
    job = submit(alice, settings, extra="  queue: {seconds: 5}")
    TestJob.update(submit_time=utcnow() - timedelta(seconds=10)).where(TestJob.id == job.id).execute()
    assert scheduler.run_pass(settings).timed_out == [job.id]
    job = TestJob.get_by_id(job.id)
    assert job.state == JobState.FINISHED and job.health == JobHealth.CANCELED
    assert "queue timeout" in job.failure_comment


def test_worker_heartbeat_timeout(db, settings):
    """Missed heartbeats make a worker Offline; its running job stays (the rest: test_fencing.py)."""
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    dev = f.device("q1", dt, w)
    job = submit(alice, settings)
    scheduler.run_pass(settings)
    jobs.mark_running(TestJob.get_by_id(job.id))
    Worker.update(last_ping=utcnow() - timedelta(seconds=settings.worker_heartbeat_timeout + 5)).execute()
    report = scheduler.run_pass(settings)
    assert report.workers_offline == ["w1"]
    assert Worker.get_by_id(w.id).state == WorkerState.OFFLINE
    assert state(job) == JobState.RUNNING
    assert Device.get_by_id(dev.id).state == DeviceState.RUNNING


def test_cancel_submitted_is_immediate_and_running_goes_canceling(db, settings):
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    f.device("q1", dt, w)
    a, b = submit(alice, settings), submit(alice, settings)
    scheduler.run_pass(settings)
    running = a if state(a) == JobState.SCHEDULED else b
    queued = b if running is a else a
    assert jobs.cancel(alice, TestJob.get_by_id(queued.id)).health == JobHealth.CANCELED
    assert jobs.cancel(alice, TestJob.get_by_id(running.id)).state == JobState.CANCELING
    done = jobs.finish(TestJob.get_by_id(running.id), JobResult.failed("Canceled", ""))
    assert done.health == JobHealth.CANCELED


def test_concurrent_passes_never_double_book(db, settings):
    """Parallel passes and parallel submissions: every job runs once, no device gets two jobs."""
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    devices = [f.device(f"q{i}", dt, w) for i in range(8)]
    text = f.job_text()
    errors: list[BaseException] = []
    submitted: list[int] = []
    lock = threading.Lock()

    def submitter(n: int) -> None:
        try:
            with connection():
                for _ in range(n):
                    job = jobs.submit(alice, text, settings)[0]
                    with lock:
                        submitted.append(job.id)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def passer(stop: threading.Event) -> None:
        try:
            with connection():
                while not stop.is_set():
                    scheduler.run_pass(settings)
                    finish_some()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def finish_some() -> None:
        for job in list(TestJob.select().where(TestJob.state == JobState.SCHEDULED)):
            try:
                jobs.finish(jobs.mark_running(job), PASS)
            except ApiError as exc:  # another passer finished it first: a Finished job takes no state
                if exc.status != 409:
                    raise

    stop = threading.Event()
    passers = [threading.Thread(target=passer, args=(stop,)) for _ in range(3)]
    subs = [threading.Thread(target=submitter, args=(25,)) for _ in range(8)]
    for t in passers + subs:
        t.start()
    for t in subs:
        t.join()
    # wait while the passes make progress (a loaded machine is slow, not wrong): give up only
    # after 15 s in which no job finished
    left, idle = None, 0
    while idle < 300:
        now = TestJob.select().where(TestJob.state != JobState.FINISHED).count()
        if now == 0:
            break
        idle = 0 if now != left else idle + 1
        left = now
        threading.Event().wait(0.05)
    stop.set()
    for t in passers:
        t.join()
    assert not errors, errors
    assert len(submitted) == 200 and TestJob.select().count() == 200
    assert TestJob.select().where(TestJob.state == JobState.FINISHED).count() == 200
    assert TestJob.select().where(TestJob.health == JobHealth.COMPLETE).count() == 200
    # one job per device at any time: every job has a device, and no two overlapping on one device
    per_device: dict[int, list[TestJob]] = {}
    for job in TestJob.select():
        assert job.actual_device_id in {d.id for d in devices}
        per_device.setdefault(job.actual_device_id, []).append(job)
    for rows in per_device.values():
        rows.sort(key=lambda j: j.scheduled_time)
        for before, after in zip(rows, rows[1:], strict=False):
            assert before.end_time <= after.scheduled_time


def test_broken_dictionary_makes_device_bad_instead_of_a_health_check(db, settings):
    dt, w = f.device_type(health_checks=True), f.worker()
    dev = f.device("q1", dt, w, health=DeviceHealth.UNKNOWN)
    Device.update(dictionary="{% extends 'qemu.jinja2' %}\n{% set memory = %}\n").where(Device.id == dev.id).execute()
    report = scheduler.run_pass(settings)
    assert report.health_checks == []
    dev = Device.get_by_id(dev.id)
    assert dev.health == DeviceHealth.BAD
    reason = HealthHistory.select().where(HealthHistory.device == dev).order_by(HealthHistory.id.desc()).first()
    assert "invalid device configuration" in reason.reason and "line 2" in reason.reason
