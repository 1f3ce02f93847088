"""Job definitions against the dispatcher's schema: the one door the server has to it.

The worker validates the same definition with the same code before it runs anything, so the
server refuses exactly what a worker would. Every other module asks here (submissions in
`jobs.py`, health checks in `device_types.py`), so a change of the schema's home is a change
of the import line below only.
"""

from __future__ import annotations

from typing import Any

from dutlab.dispatcher.schema import multinode
from dutlab.dispatcher.schema.common import JobDefinitionError, timeout_seconds
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


def is_group(job: dict[str, Any]) -> bool:
    """A MultiNode group as submitted (``protocols: lava-multinode: roles:``)."""
    return multinode.is_submission(job)


def split(job: dict[str, Any], target_group: str) -> list[dict[str, Any]]:
    """A checked group's sub-jobs, one per device, in sub-id order (the dispatcher's split)."""
    return multinode.split(job, target_group)
