"""What a notification says: the plain-text mail and the IRC line about a job, and the lab alerts.

Verbosity is LAVA's: `status-only` is the status line and the link, `quiet` (the default) adds the
job's device, times and failure, `verbose` adds the results per suite and the failed cases.
"""

from __future__ import annotations

from collections import Counter

from ..config import Settings
from ..lab.results import cases
from ..models import Device, TestJob, Worker
from ..states import JobHealth, JobState, ResultCode


def job_link(job: TestJob, settings: Settings) -> str:
    base = settings.base_url.rstrip("/")
    return f"{base}/api/v1/jobs/{job.id}" if base else f"job {job.id} (the server's base_url is not set)"


def status_line(job: TestJob) -> str:
    state = JobState(job.state)
    said = JobHealth(job.health).label if state == JobState.FINISHED else state.label
    return f"dutlab job {job.id} {said}: {job.description}"


def job_subject(job: TestJob) -> str:
    return "[dutlab] " + status_line(job).removeprefix("dutlab ")


def _device(job: TestJob) -> str:
    device = Device.get_or_none(Device.id == job.actual_device_id) if job.actual_device_id else None
    if device is None:
        return f"(none yet; device type {job.requested_device_type.name})"
    worker = Worker.get_or_none(Worker.id == device.worker_id) if device.worker_id else None
    return f"{device.hostname} ({job.requested_device_type.name})" + (f" on worker {worker.hostname}" if worker else "")


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def results_summary(job: TestJob) -> list[str]:
    """One line per suite with counts per result, then the failed cases."""
    per_suite: dict[str, Counter] = {}
    failed: list[str] = []
    for tc in cases(job):
        label = ResultCode(tc.result).label
        per_suite.setdefault(tc.suite.name, Counter())[label] += 1
        if tc.result == ResultCode.FAIL:
            failed.append(f"  {tc.suite.name}/{tc.name}")
    if not per_suite:
        return ["Results: none recorded"]
    lines = ["Results:"]
    for suite, counts in per_suite.items():
        lines.append(f"  {suite}: " + ", ".join(f"{n} {label}" for label, n in sorted(counts.items())))
    if failed:
        lines += ["Failed:"] + failed
    return lines


def job_body(job: TestJob, verbosity: str, settings: Settings) -> str:
    lines = [status_line(job), "", f"Link:       {job_link(job, settings)}"]
    if verbosity != "status-only":
        lines += [
            f"Health:     {JobHealth(job.health).label} (state {JobState(job.state).label})",
            f"Device:     {_device(job)}",
            f"Submitter:  {job.submitter.username}",
            f"Submitted:  {_when(job.submit_time)}",
            f"Started:    {_when(job.start_time)}",
            f"Ended:      {_when(job.end_time)}",
        ]
        if job.failure_comment or job.error_type:
            lines.append(f"Failure:    {job.failure_comment or '-'}" +
                         (f" (error type {job.error_type})" if job.error_type else ""))
    if verbosity == "verbose":
        lines += [""] + results_summary(job)
    lines += ["", "-- ", "sent by dutlab because the job definition asks for it (notify)"]
    return "\n".join(lines) + "\n"


def irc_line(job: TestJob, settings: Settings) -> str:
    return f"{status_line(job)} - {job_link(job, settings)}"


def alert_text(what: str, details: list[str], settings: Settings, link: str) -> tuple[str, str]:
    """(subject, body) of a lab alert."""
    base = settings.base_url.rstrip("/")
    lines = [what, ""] + details + ["", f"Link:       {base}{link}" if base else "Link:       (base_url is not set)",
                                    "", "-- ", "sent by dutlab to the owners of the device and the lab's admins"]
    return f"[dutlab] {what}", "\n".join(lines) + "\n"
