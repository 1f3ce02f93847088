"""Queue timeouts (issue 18): an absurd one is refused at submission, and one scheduling pass over
thousands of queued jobs expires exactly those past their time, whatever else is stored."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import factories as f
from dutlab.dispatcher.schema.common import MAX_TIMEOUT_SECONDS
from dutlab.service import scheduler
from dutlab.service.db import is_sqlite, write_txn
from dutlab.service.lab import jobs
from dutlab.service.models import TestJob, utcnow
from dutlab.service.states import JobHealth, JobState

#: assorted queue timeouts (seconds), up to the schema's bound
TIMEOUTS = (1, 5, 30, 60, 600, 3600, 86400, 7 * 86400, MAX_TIMEOUT_SECONDS)
QUEUED = 5000


def test_an_absurd_queue_timeout_is_refused_and_the_bound_is_accepted(app):
    f.device("q1", f.device_type(), f.worker(online=False))
    absurd = f.job_text(extra="  queue: {days: 99999999999}")
    answer = app.api("POST", "/api/v1/jobs", absurd, headers={"Content-Type": "application/yaml"})
    assert answer.status == 400
    assert answer.json()["path"] == "timeouts.queue.days" and "use 1 to 366" in answer.json()["error"]
    answer = app.api("POST", "/api/v1/jobs", f.job_text(extra="  queue: {seconds: 31622401}"),
                     headers={"Content-Type": "application/yaml"})
    assert (answer.status, answer.json()["path"]) == (400, "timeouts.queue.seconds")
    answer = app.api("POST", "/api/v1/jobs", f.job_text(extra="  queue: {days: 366}"),
                     headers={"Content-Type": "application/yaml"})
    assert answer.status == 201
    assert TestJob.get_by_id(answer.json()["job_ids"][0]).queue_timeout == MAX_TIMEOUT_SECONDS


def test_one_pass_expires_exactly_the_jobs_past_their_queue_timeout(db, settings):
    alice = f.user()
    f.device("q1", f.device_type(), f.worker(online=False))  # no Online worker: nothing is scheduled
    template = jobs.submit(alice, f.job_text(), settings)[0]
    base = {k: v for k, v in TestJob.select().where(TestJob.id == template.id).dicts().get().items() if k != "id"}
    now = utcnow()
    rng = random.Random(18)
    rows, expected = [], set()
    for n in range(QUEUED):
        timeout = rng.choice((*TIMEOUTS, None))
        # its deadline a minute before or after `now` (the submit time may then lie ahead for short
        # timeouts): the pass, run within that minute, cannot see a job on the other side
        past = rng.random() < 0.5
        deadline = now + timedelta(seconds=-60 if past else 60)
        state = JobState.SUBMITTED if n % 10 else rng.choice((JobState.SCHEDULED, JobState.FINISHED))
        rows.append({**base, "description": f"j{n}", "queue_timeout": timeout, "state": state,
                     "submit_time": deadline - timedelta(seconds=timeout or 3600)})
        if timeout is not None and past and state == JobState.SUBMITTED:
            expected.add(f"j{n}")
    # rows no submission can make any more, that must not break the sweep (nor be expired)
    broken = [{**base, "description": "far-future", "queue_timeout": 2**31 - 1,
               "submit_time": datetime(9990, 1, 1)}]
    if is_sqlite():  # PostgreSQL's 32-bit column cannot even hold it
        broken.append({**base, "description": "overflowing", "queue_timeout": 10**15,
                       "submit_time": now - timedelta(days=1)})
    with write_txn():
        for start in range(0, len(rows), 500):
            TestJob.insert_many(rows[start:start + 500]).execute()
        TestJob.insert_many(broken).execute()
    before = dict(TestJob.select(TestJob.description, TestJob.state).tuples())

    report = scheduler.run_pass(settings)

    names = dict(TestJob.select(TestJob.id, TestJob.description).tuples())
    assert {names[i] for i in report.timed_out} == expected
    assert len(report.timed_out) == len(expected) > 1000
    after = {job.description: job for job in TestJob.select()}
    for name, job in after.items():
        if name in expected:
            assert (job.state, job.health) == (JobState.FINISHED, JobHealth.CANCELED)
            assert job.failure_comment == f"queue timeout: not scheduled within {job.queue_timeout} s"
        else:
            assert job.state == before[name], name
    for row in broken:  # still queued, now without a queue timeout (the log says why)
        job = after[row["description"]]
        assert (job.state, job.queue_timeout) == (JobState.SUBMITTED, None)
    assert scheduler.run_pass(settings).timed_out == []  # nothing left to expire
