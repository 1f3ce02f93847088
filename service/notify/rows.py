"""Notification rows: their states, the claim a sender takes, outcomes, and the one JSON shape.

    pending   to send (again) once `next_attempt` has come (none: at once)
    sending   a sender claimed it at `claimed`; a sender that died leaves it to the repair sweep
    sent      delivered (the SMTP server, the IRC server or the callback receiver took it)
    failed    given up: a permanent error, or `notification_attempts` tries used up
    refused   the server may not send there (callback_allowed_hosts); the message says what to ask
    skipped   the criteria were not met, or an alert came within alert_interval; `last_error` says why

Every change of a claimed row is conditional on its claim, so a row is sent by one sender at a time.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from ..db import write_txn
from ..errors import ApiError, forbidden
from ..lab.checks import iso
from ..models import Notification, TestJob, User, utcnow

STATES = ("pending", "sending", "sent", "failed", "refused", "skipped")
#: states a row never leaves
FINAL = ("sent", "failed", "refused", "skipped")


class DeliveryError(Exception):
    """A send that failed: `permanent` ones are not tried again (a refused address, an HTTP 404)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class Planned:
    """A row to create: its key in the block and what to send, or why it will not be sent."""

    key: str
    method: str
    recipient: str
    detail: dict = field(default_factory=dict)
    state: str = "pending"
    reason: str = ""


def create(subject: str, event: str, planned: list[Planned], job: TestJob | None = None,
           device_id: int | None = None) -> list[int]:
    """Insert the rows that do not exist yet (a plan made twice changes nothing); return the
    ids of this event's rows that are pending."""
    now = utcnow()
    with write_txn():  # a plan's rows appear together
        for p in planned:
            Notification.insert(
                subject=subject, job=job, device=device_id, event=event, key=p.key[:300], method=p.method,
                recipient=p.recipient, detail=json.dumps(p.detail), state=p.state, last_error=p.reason,
                created=now,
            ).on_conflict_ignore().execute()
    return pending(subject, event)


def exists(subject: str, event: str) -> bool:
    return Notification.select().where(Notification.subject == subject, Notification.event == event).exists()


def pending(subject: str, event: str) -> list[int]:
    query = Notification.select(Notification.id).where(
        Notification.subject == subject, Notification.event == event, Notification.state == "pending")
    return [r.id for r in query.order_by(Notification.id)]


def claim(row_id: int) -> Notification | None:
    """Take a pending row that is due (one more attempt); None when it is not (any more)."""
    now = utcnow()
    taken = Notification.update(state="sending", claimed=now, attempts=Notification.attempts + 1).where(
        Notification.id == row_id, Notification.state == "pending",
        Notification.next_attempt.is_null() | (Notification.next_attempt <= now),
    ).execute()
    return Notification.get_by_id(row_id) if taken else None


def _finish(row: Notification, **fields: Any) -> bool:
    return bool(Notification.update(claimed=None, **fields).where(
        Notification.id == row.id, Notification.state == "sending", Notification.claimed == row.claimed).execute())


def mark_sent(row: Notification) -> bool:
    return _finish(row, state="sent", sent=utcnow(), last_error="", next_attempt=None)


def mark_failed(row: Notification, error: str, state: str = "failed") -> bool:
    return _finish(row, state=state, last_error=error[:2000], next_attempt=None)


def mark_retry(row: Notification, error: str, delay: float) -> bool:
    return _finish(row, state="pending", last_error=error[:2000],
                   next_attempt=utcnow() + dt.timedelta(seconds=delay))


def due(now: dt.datetime, lease: float) -> list[int]:
    """Pending rows whose time has come, and claims older than `lease` seconds made pending again
    (their sender died; it may have sent already, which a new send cannot know)."""
    stale = now - dt.timedelta(seconds=lease)
    Notification.update(state="pending", claimed=None, next_attempt=None,
                        last_error="the sender stopped during its attempt; trying again").where(
        Notification.state == "sending", Notification.claimed < stale).execute()
    query = Notification.select(Notification.id).where(
        Notification.state == "pending", Notification.next_attempt.is_null() | (Notification.next_attempt <= now))
    return [r.id for r in query.order_by(Notification.id)]


def notification_json(row: Notification) -> dict:
    """The one JSON shape of a notification row."""
    return {
        "id": row.id,
        "job": row.job_id,
        "subject": row.subject,
        "event": row.event,
        "key": row.key,
        "method": row.method,
        "recipient": row.recipient,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created": iso(row.created),
        "next_attempt": iso(row.next_attempt),
        "sent": iso(row.sent),
    }


def for_job(job: TestJob, user: User | None, admin: bool) -> list[Notification]:
    """The rows of a job, for its submitter and admins: they name addresses and callback URLs."""
    if user is None and not admin:
        raise ApiError(401, f"authentication required: the notifications of job {job.id} name their recipients, "
                            "so only its submitter and admins see them")
    if not admin and user.id != job.submitter_id:
        raise forbidden(f"user '{user.username}' may not see the notifications of job {job.id}: they name their "
                        "recipients, so only its submitter and admins see them")
    return list(Notification.select().where(Notification.job == job).order_by(Notification.id))
