"""Every Huey task. Thin wrappers over the domain; the domain is tested without a queue.

Tasks stay in this module: a queued message names `module.function`. This is huey's "tasks"
module: it imports the queue (huey's "config", `queue.py`), never the other way round, and the
entry points import it (huey's "main": `cli.py`). Importing it also subscribes `request_pass`
to the domain's SCHEDULE_SOON event (`events.py` says why the domain cannot call it directly), and
imports `notify.tasks`, the notifications' tasks and subscriptions, `metrics.record`, the
metrics' subscriptions, and `wakeups`, which carries the domain's worker wake-ups to the
long-polls of the server process.
"""

from __future__ import annotations

import logging
import time

from huey import crontab
from huey.signals import SIGNAL_ERROR

from . import events, playbooks, scheduler
from . import wakeups as _wakeups  # noqa: F401 (subscribes to WORKER_WAKE: long-polls wake across processes)
from .db import connection
from .metrics import record as metrics  # subscribes the job counters to events.JOB_CHANGED
from .notify import tasks as notify_tasks  # noqa: F401 (registers its tasks and subscriptions)
from .queue import huey, settings

log = logging.getLogger("dutlab.tasks")

#: queue key holding when the queued, not yet started pass was asked for
PASS_WANTED = "dutlab.pass-wanted"
#: a flag this old means its pass was lost (a purged queue): ask again
PASS_WANTED_STALE = 30.0


@events.subscribe(events.SCHEDULE_SOON)
def request_pass(reason: str) -> None:
    """Enqueue a scheduling pass unless one is queued and not started yet.

    A burst of submissions then costs one pass, not one each: a pass reads the whole queue, so
    the pending one will see every job committed before it starts. The flag is cleared when the
    pass starts (below), so an event after that start enqueues a new pass.
    """
    now = time.time()
    since = huey.get(PASS_WANTED, peek=True)
    if since is None:
        if not huey.put_if_empty(PASS_WANTED, now):
            return  # another process asked a moment ago
    elif now - since < PASS_WANTED_STALE:
        return
    else:
        huey.put(PASS_WANTED, now)  # stale: take the flag over
    try:
        schedule_pass(reason)
    except Exception:
        huey.delete(PASS_WANTED)  # nothing queued: the next event must be able to ask again
        raise


#: seconds from the end of one pass to the start of the next at least: under a burst of
#: submissions (each asks for a pass once the last one started) passes would run back to back,
#: costing the consumer about as much CPU as the submissions cost the server; waiting this long
#: lets the events of the wait share one pass, and costs a pass after a quiet moment nothing
PASS_SPACING = 0.02
_last_pass_end = 0.0


@huey.task()
def schedule_pass(reason: str = "") -> None:
    global _last_pass_end
    wait = _last_pass_end + PASS_SPACING - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    # Cleared before the pass reads anything: an event committed from now on asks for a new pass.
    huey.delete(PASS_WANTED)
    try:
        with connection():
            started = time.perf_counter()
            report = scheduler.run_pass(settings())
            metrics.scheduler_pass(time.perf_counter() - started)
    finally:
        _last_pass_end = time.monotonic()
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
