"""Every Huey task. Thin wrappers over the domain; the domain is tested without a queue.

Tasks stay in this module: a queued message names `module.function`.
"""

from __future__ import annotations

import logging

from huey import crontab
from huey.signals import SIGNAL_ERROR

from . import playbooks, scheduler
from .db import connection
from .queue import huey, settings

log = logging.getLogger("dutlab.tasks")


@huey.task()
def schedule_pass(reason: str = "") -> None:
    with connection():
        report = scheduler.run_pass(settings())
    if report.scheduled or report.health_checks or report.timed_out or report.workers_offline:
        log.info("pass (%s): scheduled %s, health checks %s, timed out %s, offline %s", reason,
                 report.scheduled, report.health_checks, report.timed_out, report.workers_offline)


@huey.periodic_task(crontab())
def check_playbook_schedules() -> None:
    """Every minute: record and start the scheduled playbooks that are due."""
    with connection():
        due = playbooks.record_due(settings())
    for run in due:
        run_playbook(run.id)


@huey.task()
def run_playbook(run_id: int) -> None:
    with connection():
        rc = playbooks.execute(run_id)
    log.info("playbook run %s finished with status %s", run_id, rc)


@huey.signal(SIGNAL_ERROR)
def task_failed(signal: str, task: object, exc: BaseException | None = None) -> None:
    log.error("task %s failed: %r", task, exc)
