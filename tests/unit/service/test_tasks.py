"""Scheduling passes are coalesced: a burst of events queues one pass, not one per event."""

from __future__ import annotations

import time

from dutlab.service import events, tasks
from dutlab.service.queue import huey


def pending_passes() -> int:
    return sum(1 for task in huey.pending() if task.name == "schedule_pass")


def test_a_burst_of_events_queues_one_pass(db, settings):
    huey.flush()
    for i in range(20):
        events.schedule_soon(f"job {i} submitted")
    assert pending_passes() == 1
    # The pass starts (and clears the request) before it reads anything: an event from now on
    # may have been missed by it, so it queues another pass.
    huey.execute(huey.dequeue())
    assert pending_passes() == 0
    events.schedule_soon("job 21 submitted")
    events.schedule_soon("job 22 submitted")
    assert pending_passes() == 1


def test_a_stale_request_does_not_block_passes(db, settings):
    huey.flush()
    # a request whose pass was lost (the queue was purged): later events must still get a pass
    huey.put(tasks.PASS_WANTED, time.time() - tasks.PASS_WANTED_STALE - 1)
    events.schedule_soon("device qemu01 is Good")
    assert pending_passes() == 1
    events.schedule_soon("device qemu02 is Good")
    assert pending_passes() == 1


def test_the_sweep_passes_are_not_coalesced_away(db, settings):
    huey.flush()
    events.schedule_soon("job 1 submitted")
    tasks.schedule_pass("sweep")  # the consumer's sweep enqueues directly
    assert pending_passes() == 2
