"""`manage jobs rm --older-than`: exactly the Finished jobs older than the age go, with their rows
(results, tags, notifications) and output folders; queued, running and newer jobs stay, and so
does each device's last health check."""

from __future__ import annotations

import datetime as dt

import pytest

import factories
from dutlab.service.errors import ApiError
from dutlab.service.lab import jobs, retention
from dutlab.service.logstore import JobFolder
from dutlab.service.models import Device, JobTag, Notification, Tag, TestCase, TestJob, TestSuite, utcnow
from dutlab.service.states import JobHealth, JobState


def job_aged(settings, user, days: float, state: JobState = JobState.FINISHED, health_check: bool = False) -> int:
    """A job that ended (or, unfinished, was submitted) `days` ago, with a folder, results, a tag
    and a notification."""
    [job] = jobs.submit(user, factories.job_text(f"{days} days"), settings)
    when = utcnow() - dt.timedelta(days=days)
    finished = state == JobState.FINISHED
    TestJob.update(state=state, health=JobHealth.COMPLETE if finished else JobHealth.UNKNOWN, submit_time=when,
                   end_time=when if finished else None, health_check=health_check).where(TestJob.id == job.id).execute()
    JobFolder(settings.output_dir, job.id).append(0, ['{"dt": "x", "lvl": "info", "msg": "hello"}'])
    suite = TestSuite.create(job=job, name="lava")
    TestCase.create(suite=suite, name="job", result=0)
    JobTag.create(job=job, tag=Tag.get_or_create(name="kept")[0])
    Notification.create(subject=f"job:{job.id}", job=job, event="finished", key="submitter", method="email")
    return job.id


def test_exactly_the_old_finished_jobs_go_with_their_rows_and_folders(db, settings):
    device = factories.device("qemu01", factories.device_type("qemu"), factories.worker("w1", online=False))
    alice, bob = factories.user("alice"), factories.user("bob")
    old = [job_aged(settings, alice, 40), job_aged(settings, bob, 31)]
    young = job_aged(settings, alice, 29)
    queued = job_aged(settings, alice, 90, JobState.SUBMITTED)
    running = job_aged(settings, alice, 90, JobState.RUNNING)
    last_check = job_aged(settings, alice, 100, health_check=True)
    Device.update(last_health_report_job=last_check).where(Device.id == device.id).execute()

    dry = retention.remove_old_jobs(settings, retention.parse_age("30"), dry_run=True)
    assert (dry.jobs, dry.kept, dry.folders) == (old, [last_check], 2)
    assert TestJob.select().count() == 6 and all(JobFolder(settings.output_dir, i).path.is_dir() for i in old)

    only_bob = retention.remove_old_jobs(settings, retention.parse_age("30d"), submitter="bob")
    assert only_bob.jobs == [old[1]] and not TestJob.get_or_none(TestJob.id == old[1])
    done = retention.remove_old_jobs(settings, retention.parse_age("720h"))
    assert (done.jobs, done.folders) == ([old[0]], 1)
    left = sorted(j.id for j in TestJob.select())
    assert left == sorted([young, queued, running, last_check])
    for gone in old:
        assert not JobFolder(settings.output_dir, gone).path.exists()
    for table in (TestSuite, JobTag, Notification):
        assert sorted({row.job_id for row in table.select()}) == left, table.__name__
    assert TestCase.select().count() == len(left)
    assert Device.get_by_id(device.id).last_health_report_job_id == last_check


def test_logs_only_keeps_the_rows(db, settings):
    factories.device("qemu01", factories.device_type("qemu"), factories.worker("w1", online=False))
    job_id = job_aged(settings, factories.user(), 10)
    removal = retention.remove_old_jobs(settings, retention.parse_age("1w"), logs_only=True)
    assert removal.jobs == [job_id] and removal.folders == 1
    assert TestJob.get_or_none(TestJob.id == job_id) and not JobFolder(settings.output_dir, job_id).path.exists()


@pytest.mark.parametrize("age", ["thirty", "30 days", "-3", "1y"])
def test_an_age_that_is_no_age_is_refused(age):
    with pytest.raises(ApiError, match="not a number of days"):
        retention.parse_age(age)
