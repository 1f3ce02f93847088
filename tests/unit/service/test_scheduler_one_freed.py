"""A pass with one free device reads only the queue rows that could take it (scheduler_queue,
`only`): it must still give that device the job the rules give it.

The randomized labs of test_scheduler_equivalence (owners, tags, pinned jobs, inactive and super
users, job limits) are filled by a first pass; then, many times, exactly one busy device ends its
job (the devices no job took are set aside) and the pass is compared with the reference written
from the rules.
"""

from __future__ import annotations

import random

import pytest
from test_scheduler_equivalence import build_lab, reference_pass

import factories as f
from dutlab.service import scheduler, scheduler_queue
from dutlab.service.models import Device, TestJob
from dutlab.service.states import DeviceHealth, DeviceState, JobState


def set_aside_idle() -> None:
    """Devices no job took go to Maintenance, so that the next pass has only the freed one."""
    Device.update(health=DeviceHealth.MAINTENANCE).where(Device.state == DeviceState.IDLE).execute()


def free_one(rng: random.Random) -> bool:
    busy = list(Device.select().where(Device.state == DeviceState.RESERVED))
    if not busy:
        return False
    d = rng.choice(busy)
    TestJob.update(state=JobState.FINISHED).where(TestJob.id == d.current_job_id).execute()
    Device.update(state=DeviceState.IDLE, current_job=None).where(Device.id == d.id).execute()
    return True


@pytest.mark.parametrize("seed", range(4))
def test_one_freed_device_gets_the_job_the_rules_give_it(db, settings, seed, monkeypatch):
    rng = random.Random(seed)
    build_lab(rng)
    scheduler.run_pass(settings)
    set_aside_idle()
    pages, filtered = scheduler_queue.pages, []

    def spy(*args, **kwargs):
        filtered.append(kwargs.get("only") is not None)
        return pages(*args, **kwargs)

    monkeypatch.setattr(scheduler_queue, "pages", spy)
    assigned = 0
    for round_no in range(25):
        if not free_one(rng):
            break
        random.seed(round_no)  # the reference and the pass draw the same shuffle
        expected = reference_pass()
        random.seed(round_no)
        scheduled = scheduler.run_pass(settings).scheduled
        assert {job.id: job.actual_device_id for job in TestJob.select().where(TestJob.id.in_(scheduled or [0]))} \
            == expected
        assigned += len(expected)
        set_aside_idle()
    # the comparison saw assignments, made by passes that read the queue filtered for one device
    assert assigned > 0 and sum(filtered) >= 5, (assigned, filtered)


def test_a_lost_race_for_the_one_free_device_assigns_nothing(db, settings, monkeypatch):
    """The one free device taken by another writer after the pass read it Idle: its single
    conditional assignment (no batch, no savepoint) changes nothing and the job waits."""
    alice = f.user()
    device = f.device("q0", f.device_type(), f.worker())
    job = TestJob.create(submitter=alice, description="job", original_definition="{}", definition="{}",
                         requested_device_type=device.device_type_id)
    schedule = scheduler.schedule_jobs

    def lose_the_device_first(available, capacity, report):
        Device.update(state=DeviceState.RUNNING).where(Device.id == device.id).execute()  # another process
        schedule(available, capacity, report)

    monkeypatch.setattr(scheduler, "schedule_jobs", lose_the_device_first)
    assert scheduler.run_pass(settings).scheduled == []
    assert TestJob.get_by_id(job.id).state == JobState.SUBMITTED
    assert Device.get_by_id(device.id).current_job_id is None
    monkeypatch.undo()
    Device.update(state=DeviceState.IDLE).where(Device.id == device.id).execute()
    assert scheduler.run_pass(settings).scheduled == [job.id]
    assert Device.get_by_id(device.id).current_job_id == job.id
