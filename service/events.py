"""What happened, told to whoever must react: the scheduler and waiting workers.

Kept apart from the domain modules so that they need not import the queue (and its backend) to
say "something changed".
"""

from __future__ import annotations

import logging

from .models import Worker

log = logging.getLogger("dutlab.events")


def schedule_soon(reason: str) -> None:
    """Enqueue a scheduling pass now (design principle 2: event-driven, the sweep only repairs)."""
    from . import tasks  # the queue backend is configured at start-up; import late

    try:
        tasks.request_pass(reason)
    except Exception as exc:  # a queue outage must not fail the request; the sweep repairs
        log.warning("could not enqueue a scheduling pass (%s): %s", reason, exc)


def wake_worker(worker_id: int | None) -> None:
    """Make a waiting long-poll of this worker answer now."""
    if worker_id is not None:
        Worker.update(wake_seq=Worker.wake_seq + 1).where(Worker.id == worker_id).execute()
