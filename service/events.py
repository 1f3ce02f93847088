"""What happened, told to whoever subscribed: a small publish/subscribe, like huey's signals.

The domain says "something changed" (`schedule_soon`, `wake_worker`) without knowing who
reacts; the task module subscribes its `request_pass` to SCHEDULE_SOON when it is imported.
So this module imports only the models, and the queue and the tasks sit above the domain,
never below it (no import cycle).

The rule that follows: every process that changes lab state and needs scheduling passes
imports `dutlab.service.tasks` at its entry point (`dutlab-server serve`, `consumer`,
`manage`, `restore`: the CLI does it when it opens the database; test fixtures do it too).
A process that never did gets a warning in its log for each event nobody heard, so a lost
pass is never silent; the consumer's periodic sweep repairs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .models import Worker

log = logging.getLogger("dutlab.events")

#: a job, device, device type or worker changed: a scheduling pass should run soon
#: (design principle 2: event-driven, the sweep only repairs); subscribers get `reason`
SCHEDULE_SOON = "schedule-soon"
#: what notifications hear (service/notify/tasks.py subscribes): a job reached Running or Finished
#: (job id, "running" | "finished"); a device's health changed (device id, health-history id, new
#: health); a worker went Offline (worker id); a token was made with a secret its user chose
#: (token id, Secret)
JOB_CHANGED = "job-changed"
DEVICE_HEALTH = "device-health"
WORKER_OFFLINE = "worker-offline"
TOKEN_SECRET = "token-secret"
#: a worker has news (a job assigned or to cancel, a device changed): its held long-poll should
#: re-read now (worker id; service/wakeups.py subscribes and tells the other processes)
WORKER_WAKE = "worker-wake"

Subscriber = Callable[..., Any]
_subscribers: dict[str, list[Subscriber]] = {}


def subscribe(event: str, fn: Subscriber | None = None) -> Any:
    """Call `fn(*args)` on every `publish(event, *args)`; usable as a decorator."""

    def add(fn: Subscriber) -> Subscriber:
        listeners = _subscribers.setdefault(event, [])
        if fn not in listeners:  # a re-imported module must not subscribe twice
            listeners.append(fn)
        return fn

    return add(fn) if fn is not None else add


def subscribers(event: str) -> list[Subscriber]:
    return list(_subscribers.get(event, ()))


def publish(event: str, *args: Any) -> int:
    """Tell every subscriber of `event`; return how many heard it.

    Events are published after the change is committed: a failing subscriber (a queue
    outage) is logged and must not fail the request that made the change.
    """
    listeners = _subscribers.get(event, ())
    if not listeners:
        log.warning("event %s %s: no subscriber in this process (was dutlab.service.tasks imported at "
                    "its entry point?); the periodic sweep will catch up", event, args)
    for fn in listeners:
        try:
            fn(*args)
        except Exception as exc:
            log.warning("event %s %s: %s failed: %s", event, args, getattr(fn, "__name__", fn), exc)
    return len(listeners)


def schedule_soon(reason: str) -> None:
    """Ask for a scheduling pass now; `reason` names the change (it shows in the log)."""
    publish(SCHEDULE_SOON, reason)


def job_changed(job_id: int, what: str) -> None:
    """Job `job_id` is now Running ("running") or Finished ("finished")."""
    publish(JOB_CHANGED, job_id, what)


class Secret(str):
    """A secret passed to subscribers that never shows in a log line (publish logs its args)."""

    def __repr__(self) -> str:
        return "Secret('***')"


def wake_worker(worker_id: int | None) -> None:
    """Make a waiting long-poll of this worker answer now.

    The counter in the database is the truth a long-poll compares against; the event makes it
    look now instead of at its next safety re-read.
    """
    if worker_id is not None:
        count_wakes([worker_id])
        publish(WORKER_WAKE, worker_id)


def count_wakes(worker_ids: Iterable[int]) -> None:
    """One more `wake_seq` for each of these workers, in the caller's transaction: a scheduling
    pass counts all it woke in one statement, committed with its assignments (a poll that reads
    the new value finds its jobs), and publishes WORKER_WAKE for each after its commit."""
    ids = sorted(set(worker_ids))
    for start in range(0, len(ids), 500):  # well below any SQLite variable limit
        Worker.update(wake_seq=Worker.wake_seq + 1).where(Worker.id.in_(ids[start:start + 500])).execute()
