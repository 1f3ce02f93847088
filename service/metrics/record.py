"""What the metrics count, as it happens: job starts and ends (from events.JOB_CHANGED), scheduling
passes (timed by tasks.py), log lines ingested (this process).

`tasks.py` imports this module, as it imports the notifications' subscriptions: every process that
changes lab state imports tasks at its entry point, so every job end is counted once, by the process
that ended it. A subscriber that fails is logged by `events.publish` and costs only a sample.
"""

from __future__ import annotations

from peewee import JOIN
from prometheus_client import Counter

from .. import events
from ..db import execute_prebuilt
from ..models import DeviceType, TestJob
from ..states import JobHealth
from . import store

JOBS_FINISHED = "dutlab_jobs_finished_total"
JOBS_STARTED = "dutlab_jobs_started_total"
QUEUE_WAIT = "dutlab_job_queue_wait_seconds"
JOB_DURATION = "dutlab_job_duration_seconds"
PASS_DURATION = "dutlab_scheduler_pass_seconds"
PASSES = "dutlab_scheduler_passes_total"

#: seconds from submission to the start of a run: sub-second pickup up to a day-long queue
QUEUE_WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600, 14400, 86400)
#: seconds from the start of a run to its end: a QEMU smoke job to a day-long soak
JOB_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
#: seconds one scheduling pass takes
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: log lines this server process stored (a plain in-process counter: one add per batch, no write
#: of its own; it starts again at 0 when the server restarts, as Prometheus counters may)
LOG_LINES = Counter("dutlab_log_lines_ingested", "Job log lines stored by this server process.",
                    registry=None)
#: group commit (lab/group_commit.py) in this server process: write transactions that stored
#: submissions, and the submissions (a bulk request is one) they stored: fewer commits than
#: submissions means concurrent submitters shared commits
SUBMISSION_COMMITS = Counter("dutlab_submission_commits", "Transactions that stored submissions in this process.",
                             registry=None)
SUBMISSION_WRITES = Counter("dutlab_submission_writes", "Submissions stored by this process (a bulk request is one).",
                            registry=None)


@events.subscribe(events.JOB_CHANGED)
def on_job_changed(job_id: int, what: str) -> None:
    # one narrow query: this runs for every job start and end, in the request that made it
    rows = execute_prebuilt("job metrics", _times, job_id).fetchall()
    if not rows:
        return
    submitted, started, ended, health, type_name = rows[0]
    submitted, started, ended = (TestJob.submit_time.python_value(submitted), TestJob.start_time.python_value(started),
                                 TestJob.end_time.python_value(ended))
    device_type = {"device_type": type_name or ""}
    if what == "running":
        waited = [(QUEUE_WAIT, (started - submitted).total_seconds(), QUEUE_WAIT_BUCKETS, device_type)
                  ] if started and submitted else []
        store.record(counts=[(JOBS_STARTED, 1, device_type)], observations=waited)
    elif what == "finished":
        took = [(JOB_DURATION, (ended - started).total_seconds(), JOB_DURATION_BUCKETS, device_type)
                ] if started and ended else []  # a job canceled in the queue never ran: no duration
        store.record(counts=[(JOBS_FINISHED, 1, {**device_type, "health": JobHealth(health).label})],
                     observations=took)


def _times(job_id: int):
    return (TestJob.select(TestJob.submit_time, TestJob.start_time, TestJob.end_time, TestJob.health, DeviceType.name)
            .join(DeviceType, JOIN.LEFT_OUTER, on=(TestJob.requested_device_type == DeviceType.id))
            .where(TestJob.id == job_id))


def scheduler_pass(seconds: float) -> None:
    """One scheduling pass took `seconds`."""
    store.record(counts=[(PASSES, 1, None)], observations=[(PASS_DURATION, seconds, PASS_BUCKETS, None)])
