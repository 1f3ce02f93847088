"""The queue side of notifications: event subscriptions, the tasks that plan and send rows, and
the repair sweep. `dutlab.service.tasks` imports this module, so every entry point subscribes
(events.py says why that matters) and the consumer knows these tasks by their names.
"""

from __future__ import annotations

import logging

from huey import crontab

from .. import events
from ..db import connection
from ..queue import huey, settings
from ..states import DeviceHealth
from . import alerts, deliver, plan
from .secrets import seal

log = logging.getLogger("dutlab.notify")
#: a health change's task may run before the change is committed: look again this often
UNSEEN_RETRIES, UNSEEN_DELAY = 10, 0.5


@events.subscribe(events.JOB_CHANGED)
def on_job_changed(job_id: int, what: str) -> None:
    plan_job(job_id, what)


@events.subscribe(events.DEVICE_HEALTH)
def on_device_health(device_id: int, history_id: int, health: int) -> None:  # noqa: ARG001 (the event's args)
    if health == DeviceHealth.BAD:
        alert_health(history_id)


@events.subscribe(events.WORKER_OFFLINE)
def on_worker_offline(worker_id: int) -> None:
    alert_offline(worker_id)


@events.subscribe(events.TOKEN_SECRET)
def on_token_secret(token_id: int, secret: str) -> None:
    # in the process that made the token (the secret exists only there), not in a task
    seal(settings(), token_id, str(secret))


def _send_all(row_ids: list[int]) -> None:
    for row_id in row_ids:
        send(row_id)


@huey.task()
def plan_job(job_id: int, what: str) -> None:
    with connection():
        _send_all(plan.plan_job(job_id, what, settings()))


@huey.task()
def alert_health(history_id: int, tries: int = 0) -> None:
    with connection():
        row_ids = alerts.plan_health(history_id, settings())
    if row_ids is None:
        if tries < UNSEEN_RETRIES:
            alert_health.schedule((history_id, tries + 1), delay=UNSEEN_DELAY)
        return
    _send_all(row_ids)


@huey.task()
def alert_offline(worker_id: int) -> None:
    with connection():
        _send_all(alerts.plan_offline(worker_id, settings()))


@huey.task()
def send(row_id: int) -> None:
    with connection():
        retry_in = deliver.send_one(row_id, settings())
    if retry_in is not None:
        send.schedule((row_id,), delay=retry_in)


@huey.periodic_task(crontab())
def repair() -> None:
    """Every minute (and at consumer start): due rows, dead senders' claims, lost plans."""
    with connection():
        row_ids = deliver.repair(settings())
    if row_ids:
        log.info("notification sweep: %s row(s) due", len(row_ids))
    _send_all(row_ids)
