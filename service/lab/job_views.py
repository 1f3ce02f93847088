"""What viewers read of jobs: the one JSON shape of a job, which jobs a user may see, and what
of a job they may read beyond its summary: the definition, the rendered device configuration
and the pipeline description.

Whoever may see a job sees its state, log and results. Two things are narrower:

- a restricted device's configuration (its dictionary rendered, with power commands and their
  credentials) and what is derived from it go only to those who may read the device's
  dictionary: its owners and admins (the job's submitter also keeps their own definition);
- the job's `secrets:` values are shown only to the submitter and admins; others get the
  definition with every secret value replaced by [MASKED], as the job log shows them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from .. import auth
from ..config import Settings
from ..errors import ApiError, bad_request, forbidden
from ..logstore import JobFolder
from ..models import Device, DeviceType, JobTag, Tag, TestJob, User, Worker
from ..states import JobHealth, JobState
from . import multinode
from .checks import iso

# The job's shape, who sees it ##########################################################################


def _name(model: Any, pk: int | None, attr: str) -> str | None:
    row = model.get_or_none(model.id == pk) if pk is not None else None
    return getattr(row, attr) if row else None


def job_json(job: TestJob, time: Callable[[Any], Any] = iso) -> dict:
    """The one shape of a job. `time` writes the times: ISO text for JSON, or `checks.as_datetime`
    for XML-RPC, which sends datetimes."""
    tags = Tag.select(Tag.name).join(JobTag).where(JobTag.job == job).order_by(JobTag.id)  # as submitted
    return {
        "id": job.id,
        "description": job.description,
        "submitter": job.submitter.username,
        "device_type": job.requested_device_type.name,
        "requested_device": _name(Device, job.requested_device_id, "hostname"),
        "actual_device": _name(Device, job.actual_device_id, "hostname"),
        "worker": _name(Worker, job.worker_id, "hostname"),
        "state": JobState(job.state).label,
        "health": JobHealth(job.health).label,
        "priority": job.priority,
        "visibility": job.visibility,
        "viewing_groups": [vg.group.name for vg in job.viewing_groups],
        "tags": [t.name for t in tags],
        "health_check": job.health_check,
        "submit_time": time(job.submit_time),
        "scheduled_time": time(job.scheduled_time),
        "start_time": time(job.start_time),
        "end_time": time(job.end_time),
        "failure_comment": job.failure_comment,
        "error_type": job.error_type,
        "error_msg": job.error_msg,
        "metadata": json.loads(job.metadata or "{}"),
        **multinode.group_json(job),
    }


def visible_job(job_id: int | str, user: User | None) -> TestJob:
    """The job (by number, or a MultiNode sub-id such as "12.1"), if `user` may see it; otherwise
    a 404 that does not tell whether it exists."""
    job = multinode.find(job_id)
    if job is None or not auth.may_view_job(user, job):
        raise ApiError(404, f"job '{job_id}' does not exist (or is not visible to you)")
    return job


def list_jobs(user: User | None, state: Any = None, health: Any = None, device_type: str | None = None,
              submitter: str | None = None, group: str | None = None) -> list[TestJob]:
    """The jobs `user` may see, newest first, filtered by state, health, device type, submitter and
    MultiNode group (its number, as in the sub-ids "12.0", "12.1", or its UUID)."""
    query = TestJob.select().order_by(TestJob.id.desc())
    for key, value, enum, column in (("state", state, JobState, TestJob.state),
                                     ("health", health, JobHealth, TestJob.health)):
        if value:
            try:
                query = query.where(column == enum.parse(value))
            except ValueError as exc:
                raise bad_request(str(exc), key) from None
    if device_type:
        query = query.join(DeviceType, on=(TestJob.requested_device_type == DeviceType.id)).where(
            DeviceType.name == device_type)
    if submitter:
        query = query.switch(TestJob).join(User, on=(TestJob.submitter == User.id)).where(
            User.username == submitter)
    if group:
        query = query.where(multinode.group_filter(group))
    return [j for j in query if auth.may_view_job(user, j)]


# Beyond the summary ###########################################################

MASK = "[MASKED]"


def job_device(job: TestJob) -> Device | None:
    """The device the job ran on, or the one it asked for (None while only a type is known)."""
    device_id = job.actual_device_id or job.requested_device_id
    return Device.get_or_none(Device.id == device_id) if device_id is not None else None


def check_device_view(user: User | None, job: TestJob, what: str) -> None:
    """401/403 unless `user` may read what was rendered from the job's device dictionary."""
    device = job_device(job)
    if device is None or not auth.is_restricted(device) or auth.may_read_device(user, device):
        return
    if user is None:
        raise ApiError(401, f"authentication required: the {what} of job {job.id} is shown only to the owners of "
                            f"device '{device.hostname}' and to admins")
    raise forbidden(f"user '{user.username}' may not read the {what} of job {job.id}: device "
                    f"'{device.hostname}' is restricted to its owners (and admins)")


def _is_submitter_or_admin(user: User | None, job: TestJob) -> bool:
    return user is not None and (job.submitter_id == user.id or auth.is_admin(user))


def definition(user: User | None, job: TestJob) -> str:
    """The definition as submitted for its submitter and admins; for others (who may see the
    job and its device) with the secrets masked."""
    if _is_submitter_or_admin(user, job):
        return job.original_definition
    check_device_view(user, job, "definition")
    return masked_definition(job)


def masked_definition(job: TestJob) -> str:
    """The definition without its secret values: the original text when it has no secrets,
    else the parsed job again as YAML with every secret value replaced by [MASKED]."""
    parsed = json.loads(job.definition or "{}")
    values = sorted({str(v) for v in (parsed.get("secrets") or {}).values() if str(v)}, key=len, reverse=True)
    if not values:
        return job.original_definition
    # re-written rather than edited: a value may be quoted or escaped in the original text; a
    # MultiNode sub-job's original definition is the whole group's submission
    masked = _mask(yaml.safe_load(job.original_definition) if job.target_group else parsed, values)
    return (f"# the values of secrets are shown to the submitter ({job.submitter.username}) and admins only\n"
            + yaml.safe_dump(masked, sort_keys=False, default_flow_style=False))


def _mask(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {_mask(k, secrets) if isinstance(k, str) else k: _mask(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secrets) for v in value]
    return value


def device_config(user: User | None, job: TestJob, settings: Settings) -> str | None:
    """The device configuration the job ran with (None before it started)."""
    check_device_view(user, job, "device configuration")
    return JobFolder(settings.output_dir, job.id).read("device.yaml")


def description(user: User | None, job: TestJob, settings: Settings) -> str | None:
    """The pipeline description dutlab-run wrote (None until the worker reported it)."""
    check_device_view(user, job, "pipeline description")
    return JobFolder(settings.output_dir, job.id).read("description.yaml")
