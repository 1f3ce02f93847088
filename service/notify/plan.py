"""A job's event into notification rows: one per recipient and callback of its `notify` block, or
an email to the submitter when the block names neither (LAVA's default).

A plan is idempotent (rows are unique per subject, event and key), so the event's task and the
repair sweep may both make it. Criteria that are not met give skipped rows that say why, and a
recipient that cannot be reached gives a failed or refused row: the job's notifications always
show what became of each one.
"""

from __future__ import annotations

import json
from typing import Any

from ..config import Settings
from ..models import TestJob, User
from . import criteria, rows
from .callback import refusal
from .payload import substitute
from .rows import Planned


def block_of(job: TestJob) -> dict[str, Any] | None:
    block = json.loads(job.definition or "{}").get("notify")
    return block if isinstance(block, dict) else None


def subject(job: TestJob) -> str:
    return f"job:{job.id}"


def plan_job(job_id: int, event: str, settings: Settings) -> list[int]:
    """Make the rows of `event` ("running" | "finished") for job `job_id`; return its pending row ids."""
    job = TestJob.get_or_none(TestJob.id == job_id)
    block = block_of(job) if job is not None else None
    if block is None or event not in criteria.events_wanted(block.get("criteria") or {}):
        return []
    if not criteria.happened(job, event):
        return []
    if rows.exists(subject(job), event):
        return rows.pending(subject(job), event)
    why_not = criteria.verdict(block["criteria"], job, event)
    planned = targets(job, block, settings)
    if why_not:
        for p in planned:
            if p.state == "pending":
                p.state, p.reason = "skipped", why_not
    return rows.create(subject(job), event, planned, job=job)


def targets(job: TestJob, block: dict[str, Any], settings: Settings) -> list[Planned]:
    verbosity = block.get("verbosity", "quiet")
    out = [_recipient(f"recipients[{i}]", r.get("to") or {}, verbosity)
           for i, r in enumerate(block.get("recipients") or [])]
    callbacks = [("callback", block["callback"])] if "callback" in block else [
        (f"callbacks[{i}]", c) for i, c in enumerate(block.get("callbacks") or [])]
    out += [_callback(key, spec, job, settings) for key, spec in callbacks]
    if not out:
        out.append(_email("submitter", job.submitter, verbosity, "the submitter"))
    return out


def _email(key: str, user: User | None, verbosity: str, who: str, address: str = "") -> Planned:
    address = address or (user.email if user else "")
    if not address:
        name = user.username if user else "?"
        return Planned(key, "email", "", state="failed",
                       reason=f"{who} ({name}) has no email address; set one (users update {name} --email ...)")
    return Planned(key, "email", address, {"verbosity": verbosity})


def _recipient(key: str, to: dict[str, Any], verbosity: str) -> Planned:
    user = User.get_or_none(User.username == to["user"]) if to.get("user") else None
    if to.get("user") and user is None:
        return Planned(key, to.get("method", "email"), to["user"], state="failed",
                       reason=f"user '{to['user']}' does not exist (any more)")
    if to.get("method") == "irc":
        handle = to.get("handle") or (user.username if user else "")
        return Planned(key, "irc", f"{handle}@{to.get('server', '')}", {"handle": handle, "server": to.get("server")})
    return _email(key, user, verbosity, f"recipient user '{to.get('user')}'", to.get("email", ""))


def _callback(key: str, spec: dict[str, Any], job: TestJob, settings: Settings) -> Planned:
    url = substitute(spec["url"], job)
    detail = {"method": spec.get("method", "GET"), "token": spec.get("token", ""),
              "header": spec.get("header", "Authorization"), "dataset": spec.get("dataset", "minimal"),
              "content_type": spec.get("content-type", "urlencoded")}
    refused = refusal(url, settings.callback_allowed_hosts)
    if refused:
        return Planned(key, "callback", url, detail, state="refused", reason=refused)
    return Planned(key, "callback", url, detail)
