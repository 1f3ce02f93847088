"""Job definitions against the dispatcher's schema and pipeline: the one door the server has to them.

The worker validates the same definition with the same code, and builds the same pipeline,
before it runs anything, so the server refuses exactly what a worker would. Every other module
asks here (submissions in `jobs.py` through `pipelines.py`, health checks in `device_types.py`),
so a change of the dispatcher's layout is a change of the import lines below only.
"""

from __future__ import annotations

from typing import Any

from dutlab.dispatcher import plan
from dutlab.dispatcher.actions.compatibility import job_compatibility
from dutlab.dispatcher.errors import ConfigurationError, InvalidJob
from dutlab.dispatcher.schema import multinode
from dutlab.dispatcher.schema.common import MAX_TIMEOUT_SECONDS, TIMEOUT_UNITS, JobDefinitionError, timeout_seconds
from dutlab.dispatcher.schema.loader import parse_job

from ..errors import ApiError


def parse(text: str) -> dict[str, Any]:
    """`text` (YAML or JSON) parsed and checked; ApiError(400, sentence, path) on the first problem."""
    try:
        return parse_job(text)
    except JobDefinitionError as exc:
        raise ApiError(400, exc.message, exc.path) from None


def seconds(timeout: Any) -> int:
    """A schema-checked timeout mapping (`{minutes: 5}`) in seconds."""
    return timeout_seconds(timeout)


def stored_seconds(timeout: Any) -> int:
    """A stored job's timeout in seconds, at most the schema's longest: rows stored before that
    bound existed may hold any number, and must neither break nor escape the rules that read them.

    :raises ValueError: the mapping names no unit or a count that is not a number.
    """
    if not isinstance(timeout, dict):
        raise ValueError(f"a timeout is a mapping such as {{minutes: 5}}, not {timeout!r}")
    units = [(TIMEOUT_UNITS[unit], count) for unit, count in timeout.items() if unit in TIMEOUT_UNITS]
    if len(units) != 1 or isinstance(units[0][1], bool) or not isinstance(units[0][1], int):
        raise ValueError(f"the timeout {timeout!r} has no single whole number of days, hours, minutes or seconds")
    return min(units[0][0] * max(0, units[0][1]), MAX_TIMEOUT_SECONDS)


def is_group(job: dict[str, Any]) -> bool:
    """A MultiNode group as submitted (``protocols: lava-multinode: roles:``)."""
    return multinode.is_submission(job)


def split(job: dict[str, Any], target_group: str) -> list[dict[str, Any]]:
    """A checked group's sub-jobs, one per device, in sub-id order (the dispatcher's split)."""
    return multinode.split(job, target_group)


def compatibility(job: dict[str, Any]) -> int:
    """The pipeline compatibility a worker needs for `job` (dispatcher/actions/compatibility.py)."""
    return job_compatibility(job)[0]


def pipeline(job: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """The pipeline description of `job` on a device with configuration `device`, built as
    dutlab-run builds it; ApiError(400, dutlab-run's message, path) when it cannot run there.

    :raises ConfigurationError: the device configuration is unusable (the device's fault).
    """
    try:
        return plan.check(job, device)
    except InvalidJob as exc:
        raise ApiError(400, str(exc), exc.path) from None


__all__ = ["ConfigurationError", "compatibility", "is_group", "parse", "pipeline", "seconds", "split",
           "stored_seconds"]
