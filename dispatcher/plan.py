"""The pipeline of one job on one device, built before anything runs: by dutlab-run, and by the
server when it accepts the job, so that "valid" means what the worker will find (one verdict).

Building reads only the job and the device configuration. What an action can only learn on the
worker host (a program installed, /dev/kvm, the TFTP root) it raises rather than returns, and the
server leaves those checks to the worker (`Pipeline.problems`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .actions.compatibility import job_compatibility
from .actions.finalize import Finalize
from .actions.multinode import group_actions
from .actions.registry import build_actions
from .context import JobContext
from .log import JobLogger
from .pipeline import Pipeline

#: the folders of a pipeline that is only checked: building one never touches them
_NOWHERE = Path("/nonexistent/dutlab-plan")


def build(ctx: JobContext) -> Pipeline:
    """The job's pipeline: one action per job block (actions/registry.py), then finalize; a
    MultiNode sub-job joins its group first.

    :raises InvalidJob: a block no method accepts on this device, with its path.
    """
    return Pipeline(ctx, group_actions(ctx, build_actions(ctx)), Finalize())


def description(ctx: JobContext, pipeline: Pipeline) -> dict[str, Any]:
    """What ``description.yaml`` holds: the job, the device, the compatibility, the pipeline."""
    return {
        "job": {"id": ctx.job_id, "name": ctx.job.get("job_name", ""), "timeout": pipeline.job_timeout},
        "device": {"hostname": ctx.device.get("hostname", ""), "devicetype": ctx.device.get("devicetype", "")},
        "compatibility": job_compatibility(ctx.job)[0],
        "pipeline": pipeline.describe(),
    }


def check(job: dict[str, Any], device: dict[str, Any], job_id: int = 0) -> dict[str, Any]:
    """Build and check `job`'s pipeline on `device` as dutlab-run does, minus the worker host's
    own checks; return its description.

    :param job: a definition the schema accepted (``schema.loader.parse_job``).
    :param device: the device configuration rendered for this job.
    :raises InvalidJob: dutlab-run's own message, and the path of the first problem.
    :raises ConfigurationError: the device configuration itself is unusable (a bad timeout).
    """
    logger = JobLogger(Path(os.devnull))
    try:
        ctx = JobContext(job_id=job_id, job=job, device=device, logger=logger, output_dir=_NOWHERE,
                         work_dir=_NOWHERE, tmp_dir=_NOWHERE)
        pipeline = build(ctx)
        pipeline.validate(host_checks=False)
        return description(ctx, pipeline)
    finally:
        logger.close()
