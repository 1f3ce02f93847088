"""LAVA's callback payload (what KernelCI-style receivers parse) and `{FIELD}` URL substitution.

The fields and integer codes are LAVA's (lava-interfaces.md §12): `status` is the legacy status
(0 submitted, 1 running, 2 complete, 3 incomplete, 4 canceled, 5 canceling), `state` and `health`
the codes of states.py, times as text ("None" when unset). `dataset` adds the job log (`logs`),
the results as one YAML text per suite (`results`) or both (`all`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from urllib.parse import quote

import yaml

from ..config import Settings
from ..lab.results import cases, export_case
from ..logstore import JobFolder
from ..models import Device, TestJob
from ..states import JobHealth, JobState

LEGACY = {"submitted": 0, "running": 1, "complete": 2, "incomplete": 3, "canceled": 4, "canceling": 5}
FIELD = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")


def legacy_status(job: TestJob) -> str:
    """LAVA's status name before it split state and health."""
    state = JobState(job.state)
    if state == JobState.RUNNING:
        return "running"
    if state == JobState.CANCELING:
        return "canceling"
    if state != JobState.FINISHED:
        return "submitted"
    return {JobHealth.COMPLETE: "complete", JobHealth.CANCELED: "canceled"}.get(JobHealth(job.health), "incomplete")


def _time(value: dt.datetime | None) -> str:
    return "None" if value is None else str(value.replace(tzinfo=dt.UTC))


def job_data(job: TestJob, dataset: str = "minimal", settings: Settings | None = None) -> dict[str, Any]:
    """The callback body: LAVA's job fields, plus the log and/or results the dataset asks for."""
    status = legacy_status(job)
    device = Device.get_or_none(Device.id == job.actual_device_id) if job.actual_device_id else None
    data: dict[str, Any] = {
        "id": job.id,
        "status": LEGACY[status],
        "status_string": status,
        "state": int(job.state),
        "state_string": JobState(job.state).label,
        "health": int(job.health),
        "health_string": JobHealth(job.health).label,
        "submit_time": _time(job.submit_time),
        "start_time": _time(job.start_time),
        "end_time": _time(job.end_time),
        "submitter_username": job.submitter.username,
        "submitter_email": job.submitter.email,
        "failure_comment": job.failure_comment or None,
        "priority": job.priority,
        "description": job.description,
        "actual_device_id": device.hostname if device else None,
        "definition": job.original_definition,
        "metadata": json.loads(job.metadata or "{}"),
        "health_check": job.health_check,
    }
    if dataset in ("logs", "all") and settings is not None:
        data["log"] = JobFolder(settings.output_dir, job.id).read_lines()
    if dataset in ("results", "all"):
        suites: dict[str, list[dict]] = {}
        for tc in cases(job):
            suites.setdefault(tc.suite.name, []).append(export_case(tc, job.id))
        data["results"] = {name: yaml.safe_dump(rows, default_flow_style=False) for name, rows in suites.items()}
    return data


def substitute(url: str, job: TestJob) -> str:
    """`{FIELD}` in a callback URL: an upper-case payload field ({ID}, {STATUS}, {STATUS_STRING},
    {HEALTH_STRING}, {DESCRIPTION}, ...) URL-quoted; other braces stay as written."""
    fields = {k.upper(): v for k, v in job_data(job).items() if not isinstance(v, (dict, list))}

    def one(match: re.Match) -> str:
        name = match.group(1)
        return quote(str(fields[name]), safe="") if name in fields else match.group(0)

    return FIELD.sub(one, url)
