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
from peewee import fn

from .. import auth
from ..config import Settings
from ..errors import ApiError, bad_request, forbidden
from ..logstore import JobFolder
from ..models import Device, DeviceType, Group, GroupMember, JobTag, JobViewingGroup, Tag, TestJob, User, Worker
from ..states import JobHealth, JobState
from . import multinode
from .checks import iso, names_by_id

# The job's shape, who sees it ##########################################################################


class Related:
    """The names a page of jobs refers to, read in a fixed number of queries whatever the page's
    size: submitters, device types, devices, workers, viewing groups and tags."""

    def __init__(self, jobs: list[TestJob]) -> None:
        ids = [j.id for j in jobs]

        self.users = names_by_id(User, "username", {j.submitter_id for j in jobs})
        self.types = names_by_id(DeviceType, "name", {j.requested_device_type_id for j in jobs})
        self.devices = names_by_id(Device, "hostname", {j.actual_device_id for j in jobs}
                                   | {j.requested_device_id for j in jobs})
        self.workers = names_by_id(Worker, "hostname", {j.worker_id for j in jobs})
        self.groups: dict[int, list[str]] = {}
        self.tags: dict[int, list[str]] = {}
        for job_id, group in (JobViewingGroup.select(JobViewingGroup.job, Group.name).join(Group)
                              .where(JobViewingGroup.job.in_(ids)).order_by(JobViewingGroup.id).tuples()):
            self.groups.setdefault(job_id, []).append(group)
        for job_id, tag in (JobTag.select(JobTag.job, Tag.name).join(Tag).where(JobTag.job.in_(ids))
                            .order_by(JobTag.id).tuples()):  # as submitted
            self.tags.setdefault(job_id, []).append(tag)


def job_json(job: TestJob, time: Callable[[Any], Any] = iso, related: Related | None = None) -> dict:
    """The one shape of a job. `time` writes the times: ISO text for JSON, or `checks.as_datetime`
    for XML-RPC, which sends datetimes; `related`, the names of a page of jobs (`jobs_json`)."""
    names = related or Related([job])
    return {
        "id": job.id,
        "description": job.description,
        "submitter": names.users.get(job.submitter_id),
        "device_type": names.types.get(job.requested_device_type_id),
        "requested_device": names.devices.get(job.requested_device_id),
        "actual_device": names.devices.get(job.actual_device_id),
        "worker": names.workers.get(job.worker_id),
        "state": JobState(job.state).label,
        "health": JobHealth(job.health).label,
        "priority": job.priority,
        "visibility": job.visibility,
        "viewing_groups": names.groups.get(job.id, []),
        "tags": names.tags.get(job.id, []),
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


def jobs_json(jobs: list[TestJob], time: Callable[[Any], Any] = iso) -> list[dict]:
    """`job_json` of each job, in a fixed number of queries."""
    related = Related(jobs)
    return [job_json(j, time, related) for j in jobs]


def visible_job(job_id: int | str, user: User | None) -> TestJob:
    """The job (by number, or a MultiNode sub-id such as "12.1"), if `user` may see it; otherwise
    a 404 that does not tell whether it exists."""
    job = multinode.find(job_id)
    if job is None or not auth.may_view_job(user, job):
        raise ApiError(404, f"job '{job_id}' does not exist (or is not visible to you)")
    return job


def visible_to(user: User | None) -> Any:
    """`auth.may_view_job` as a query condition: public jobs, the user's own, and group jobs whose
    viewing groups all hold the user (None: no condition, a superuser sees every job)."""
    public = TestJob.visibility == "public"
    if user is None:
        return public
    if user.is_superuser:
        return None
    mine = GroupMember.select(GroupMember.group).where(GroupMember.user == user.id)
    has_groups = fn.EXISTS(JobViewingGroup.select(JobViewingGroup.id).where(JobViewingGroup.job == TestJob.id))
    outside = fn.EXISTS(JobViewingGroup.select(JobViewingGroup.id).where(
        JobViewingGroup.job == TestJob.id, JobViewingGroup.group.not_in(mine)))
    return public | (TestJob.submitter == user.id) | ((TestJob.visibility == "group") & has_groups & ~outside)


def list_jobs(user: User | None, state: Any = None, health: Any = None, device_type: str | None = None,
              submitter: str | None = None, group: str | None = None, device: str | None = None,
              text: str | None = None) -> Any:
    """The jobs `user` may see, newest first (a query: count and page it in the database), filtered
    by state, health, device type, submitter, MultiNode group (its number, as in the sub-ids "12.0",
    "12.1", or its UUID), the device it ran on and a text in its description."""
    query = TestJob.select().order_by(TestJob.id.desc())
    for key, value, enum, column in (("state", state, JobState, TestJob.state),
                                     ("health", health, JobHealth, TestJob.health)):
        if value:
            try:
                query = query.where(column == enum.parse(value))
            except ValueError as exc:
                raise bad_request(str(exc), key) from None
    if device_type:
        query = query.where(TestJob.requested_device_type.in_(
            DeviceType.select(DeviceType.id).where(DeviceType.name == device_type)))
    if submitter:
        query = query.where(TestJob.submitter.in_(User.select(User.id).where(User.username == submitter)))
    if device:
        query = query.where(TestJob.actual_device.in_(Device.select(Device.id).where(Device.hostname == device)))
    if text:
        query = query.where(TestJob.description.contains(text))
    if group:
        query = query.where(multinode.group_filter(group))
    condition = visible_to(user)
    return query if condition is None else query.where(condition)


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
