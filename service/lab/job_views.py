"""What of a job its viewers may read beyond its summary: the definition, the rendered device
configuration and the pipeline description.

Whoever may see a job sees its state, log and results. Two things are narrower:

- a restricted device's configuration (its dictionary rendered, with power commands and their
  credentials) and what is derived from it go only to those who may read the device's
  dictionary: its owners and admins (the job's submitter also keeps their own definition);
- the job's `secrets:` values are shown only to the submitter and admins; others get the
  definition with every secret value replaced by [MASKED], as the job log shows them.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from .. import auth
from ..config import Settings
from ..errors import ApiError, forbidden
from ..logstore import JobFolder
from ..models import Device, TestJob, User

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
