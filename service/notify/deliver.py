"""Sending one row, and the repair sweep.

`send_one` claims the row (one more attempt), sends it by its method and records the outcome: sent,
failed (permanent, or out of attempts), or pending again after a backoff that doubles from
`notification_backoff`. `repair` finds what no task will send: due rows, rows whose sender died,
and events whose plan was lost (the process stopped between its change and its enqueue).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
from typing import Any

from ..config import Settings
from ..models import Device, HealthHistory, Notification, TestJob, Worker, utcnow
from ..states import DeviceHealth, JobState, WorkerState
from . import alerts, callback, criteria, email, irc, message, plan, rows
from .payload import job_data
from .rows import DeliveryError
from .secrets import token_value

log = logging.getLogger("dutlab.notify")
#: how far back the sweep looks for events whose plan was lost
LOOKBACK = dt.timedelta(days=1)


def lease(settings: Settings) -> float:
    """A claim older than this belongs to a sender that died: longer than any attempt can take."""
    return 2 * max(settings.email.timeout, settings.callback_timeout, irc.TIMEOUT) + 30


def send_one(row_id: int, settings: Settings) -> float | None:
    """Try row `row_id` once if it is due; return the seconds until its retry, or None."""
    row = rows.claim(row_id)
    if row is None:
        return None
    try:
        _send(row, settings)
    except DeliveryError as exc:
        if exc.permanent or row.attempts >= settings.notification_attempts:
            tail = "" if exc.permanent else f" (gave up after {row.attempts} attempts)"
            rows.mark_failed(row, f"{exc}{tail}")
            log.warning("notification %s (%s %s) failed: %s%s", row.id, row.method, row.recipient, exc, tail)
            return None
        delay = settings.notification_backoff * 2 ** (row.attempts - 1)
        rows.mark_retry(row, str(exc), delay)
        log.info("notification %s (%s %s): %s; again in %s s", row.id, row.method, row.recipient, exc, delay)
        return float(delay)
    except Exception as exc:  # a bug must not leave the row claimed until the lease runs out
        rows.mark_failed(row, f"internal error: {exc!r}")
        raise
    rows.mark_sent(row)
    log.info("notification %s sent: %s %s (%s)", row.id, row.method, row.recipient, row.subject)
    return None


def _send(row: Notification, settings: Settings) -> None:
    detail: dict[str, Any] = json.loads(row.detail or "{}")
    if row.method == "callback":
        _callback(row, detail, settings)
        return
    job = TestJob.get_by_id(row.job_id) if row.job_id else None
    if row.method == "irc":
        irc.send(detail["server"], detail["handle"], message.irc_line(job, settings))
        return
    if job is not None:
        subject, body = message.job_subject(job), message.job_body(job, detail.get("verbosity", "quiet"), settings)
        headers = {"X-Dutlab-Job": str(job.id)}
    else:
        subject, body, headers = detail["subject"], detail["body"], {}
    if not email.configured(settings.email):
        raise DeliveryError("email is not configured on this server (set email.host or email.sendmail)",
                            permanent=True)
    domain = settings.email.sender.rpartition("@")[2] or socket.getfqdn()
    msg = email.build(settings.email, row.recipient, subject, body,
                      f"<dutlab.notification.{row.id}.{row.created:%Y%m%d%H%M%S}@{domain}>", headers)
    email.send(settings.email, msg)


def _callback(row: Notification, detail: dict[str, Any], settings: Settings) -> None:
    refused = callback.refusal(row.recipient, settings.callback_allowed_hosts)
    if refused:  # the allow-list changed since the plan
        raise DeliveryError(refused, permanent=True)
    job = TestJob.get_by_id(row.job_id)
    headers = {}
    if detail.get("token"):
        headers[detail.get("header") or "Authorization"] = token_value(job.submitter, detail["token"], settings)
    payload = job_data(job, detail.get("dataset", "minimal"), settings) if detail.get("method") == "POST" else None
    callback.call(row.recipient, detail.get("method", "GET"), payload, detail.get("content_type", "urlencoded"),
                  headers, settings.callback_timeout)


def repair(settings: Settings) -> list[int]:
    """Plan the events whose plan was lost; return every row that is due now."""
    now = utcnow()
    since = now - LOOKBACK
    for job in list(TestJob.select(TestJob.id, TestJob.state).where(
            TestJob.definition.contains('"notify"'),
            ((TestJob.state == JobState.FINISHED) & (TestJob.end_time >= since))
            | TestJob.state.in_([JobState.RUNNING, JobState.CANCELING]))):
        # a lost Running event is planned only while the job runs: after its end it would be news
        event = criteria.FINISHED if job.state == JobState.FINISHED else criteria.RUNNING
        if not rows.exists(f"job:{job.id}", event) and plan.plan_job(job.id, event, settings):
            log.info("job %s: planned its lost %s notifications", job.id, event)
    for entry_id, hostname in list(HealthHistory.select(HealthHistory.id, Device.hostname).join(Device).where(
            HealthHistory.new_health == DeviceHealth.BAD, HealthHistory.time >= since).tuples()):
        if not rows.exists(f"device:{hostname}", f"health:{entry_id}"):
            alerts.plan_health(entry_id, settings)
    for worker in list(Worker.select(Worker.id).where(Worker.state == WorkerState.OFFLINE,
                                                      Worker.offline_since >= since)):
        alerts.plan_offline(worker.id, settings)
    return rows.due(now, lease(settings))
