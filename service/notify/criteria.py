"""LAVA's notify criteria: which events a block wants, and whether a job meets them.

`status: running` wants the Running event, `all` Running and Finished, the others Finished;
`complete`, `incomplete` and `canceled` need that health. `type: regression` (or `progression`)
also needs the previous finished job with the same name and device type to have ended Complete
(or Incomplete) and this one the opposite (lava-interfaces.md §12).
"""

from __future__ import annotations

from typing import Any

from ..models import TestJob
from ..states import JobHealth, JobState

RUNNING, FINISHED = "running", "finished"
HEALTHS = {"complete": JobHealth.COMPLETE, "incomplete": JobHealth.INCOMPLETE, "canceled": JobHealth.CANCELED}


def events_wanted(criteria: dict[str, Any]) -> tuple[str, ...]:
    status = criteria.get("status")
    if status == "all":
        return (RUNNING, FINISHED)
    if status == "running":
        return (RUNNING,)
    return (FINISHED,)


def happened(job: TestJob, event: str) -> bool:
    """The job has reached the event (a plan for an event still to come makes nothing)."""
    if event == FINISHED:
        return job.state == JobState.FINISHED
    # Finished counts: the Running event's task may run after the job ended (the repair sweep
    # plans Running only for jobs still running: a job canceled before it started never ran)
    return job.state in (JobState.RUNNING, JobState.CANCELING, JobState.FINISHED)


def previous_job(job: TestJob) -> TestJob | None:
    """The last job before this one with its name and device type that ended Complete or Incomplete."""
    return (TestJob.select()
            .where(TestJob.description == job.description,
                   TestJob.requested_device_type == job.requested_device_type_id,
                   TestJob.id < job.id, TestJob.state == JobState.FINISHED,
                   TestJob.health.in_([JobHealth.COMPLETE, JobHealth.INCOMPLETE]))
            .order_by(TestJob.id.desc()).first())


def verdict(criteria: dict[str, Any], job: TestJob, event: str) -> str:
    """'' when the job at `event` meets the criteria, else why not (kept on skipped rows)."""
    status = criteria.get("status")
    if event not in events_wanted(criteria):
        return f"criteria status {status} does not ask for the {event} event"
    wanted = HEALTHS.get(status)
    health = JobHealth(job.health)
    if wanted is not None and health != wanted:
        return f"criteria status {status}: job {job.id} ended {health.label}"
    kind = criteria.get("type")
    if kind is None:
        return ""
    before = previous_job(job)
    if before is None:
        return f"criteria type {kind}: no earlier finished job named '{job.description}' on this device type"
    change = (JobHealth.COMPLETE, JobHealth.INCOMPLETE) if kind == "regression" else (
        JobHealth.INCOMPLETE, JobHealth.COMPLETE)
    if (JobHealth(before.health), health) != change:
        return (f"criteria type {kind}: job {before.id} ended {JobHealth(before.health).label} and job {job.id} "
                f"{health.label}")
    return ""
