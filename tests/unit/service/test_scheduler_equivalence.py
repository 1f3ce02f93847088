"""The pass's indexed matching (bitsets, paged queue, batched UPDATEs) decides as the rules say.

A randomized lab (device types, workers with job limits, tags, device owners, inactive and super
users, pinned jobs) is scheduled by `scheduler.run_pass` and by a small reference written from
the rules alone: queued jobs by priority, then submit time, then id; each takes the first device,
in the pass's shuffled order, of its device type that is Idle, whose worker has a free slot,
that it is pinned to (if pinned), that carries all its tags and that its submitter may use.
Both draw the same shuffle (the pass's only random draw without MultiNode groups), so they must
agree on every job's device, in several passes as devices free up.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

import factories as f
from dutlab.service import scheduler
from dutlab.service.models import (
    Device,
    DeviceTag,
    DeviceType,
    GroupMember,
    JobTag,
    Tag,
    TestJob,
    User,
    Worker,
    utcnow,
)
from dutlab.service.states import DeviceHealth, DeviceState, JobState, WorkerHealth, WorkerState


def build_lab(rng: random.Random) -> None:
    users = [f.user(f"u{i}", superuser=(i == 0)) for i in range(8)]
    User.update(is_active=False).where(User.id == users[1].id).execute()
    groups = [f.group(f"g{i}", *rng.sample(users, 3)) for i in range(3)]
    types = [f.device_type(f"type{i}") for i in range(3)]
    workers = [f.worker(f"w{i}", job_limit=rng.choice([0, 0, 1, 2, 3])) for i in range(4)]
    f.worker("w-maint", health=WorkerHealth.MAINTENANCE)
    tags = [f"t{i}" for i in range(4)]
    for i in range(30):
        owner = rng.random()
        kw = {"owner_user": rng.choice(users)} if owner < 0.15 else {"owner_group": rng.choice(groups)} \
            if owner < 0.35 else {}
        health = rng.choice([DeviceHealth.GOOD] * 6 + [DeviceHealth.UNKNOWN, DeviceHealth.BAD,
                                                        DeviceHealth.MAINTENANCE])
        f.device(f"d{i:02d}", rng.choice(types), rng.choice(workers), health=health,
                 tags=tuple(rng.sample(tags, rng.choice([0, 0, 1, 2]))), **kw)
    devices = list(Device.select())
    tag_rows = {t.name: t for t in Tag.select()} | {n: Tag.get_or_create(name=n)[0] for n in tags}
    now = utcnow()
    for k in range(120):
        dtype = rng.choice(types)
        pinned = rng.choice([d for d in devices if d.device_type_id == dtype.id] or [None]) \
            if rng.random() < 0.1 else None
        job = TestJob.create(submitter=rng.choice(users), description=f"job {k}", original_definition="{}",
                             definition="{}", requested_device_type=dtype, requested_device=pinned,
                             priority=rng.choice([0, 50, 50, 100]),
                             submit_time=now - timedelta(seconds=rng.randint(0, 50)))  # ties: id decides
        for name in rng.sample(tags, rng.choice([0, 0, 0, 1, 2])):
            JobTag.create(job=job, tag=tag_rows[name])


def reference_pass() -> dict[int, int]:
    """job id -> device id, from the rules (draws the same one shuffle as the pass)."""
    usable = {w.id: (w.job_limit or 1_000_000) for w in Worker.select().where(
        Worker.health == WorkerHealth.ACTIVE, Worker.state == WorkerState.ONLINE)}
    for d in Device.select().where(Device.state != DeviceState.IDLE):
        if d.worker_id in usable:
            usable[d.worker_id] -= 1
    free = [d for d in Device.select().join(DeviceType).order_by(DeviceType.name, Device.hostname)
            if d.state == DeviceState.IDLE and d.current_job_id is None and d.worker_id in usable
            and d.health in (DeviceHealth.GOOD, DeviceHealth.UNKNOWN) and usable[d.worker_id] > 0]
    random.shuffle(free)
    device_tags = {d.id: {dt.tag_id for dt in DeviceTag.select().where(DeviceTag.device == d)} for d in free}
    groups: dict[int, set[int]] = {}
    for m in GroupMember.select():
        groups.setdefault(m.user_id, set()).add(m.group_id)

    def may_use(user: User, d: Device) -> bool:
        if not user.is_active:
            return False
        if d.owner_user_id is None and d.owner_group_id is None:
            return True
        return user.is_superuser or d.owner_user_id == user.id or d.owner_group_id in groups.get(user.id, set())

    out: dict[int, int] = {}
    queue = TestJob.select().where(TestJob.state == JobState.SUBMITTED).order_by(
        TestJob.priority.desc(), TestJob.submit_time, TestJob.id)
    for job in queue:
        job_tags = {jt.tag_id for jt in JobTag.select().where(JobTag.job == job)}
        for d in free:
            if (d.device_type_id == job.requested_device_type_id and usable[d.worker_id] > 0
                    and job.requested_device_id in (None, d.id) and job_tags <= device_tags[d.id]
                    and may_use(job.submitter, d)):
                out[job.id] = d.id
                free.remove(d)
                usable[d.worker_id] -= 1
                break
    return out


def finish_some(rng: random.Random) -> None:
    """A few running jobs end: their devices are Idle again."""
    busy = list(Device.select().where(Device.state == DeviceState.RESERVED))
    for d in rng.sample(busy, min(len(busy), rng.randint(1, 6))):
        TestJob.update(state=JobState.FINISHED).where(TestJob.id == d.current_job_id).execute()
        Device.update(state=DeviceState.IDLE, current_job=None).where(Device.id == d.id).execute()


@pytest.mark.parametrize("seed", range(6))
def test_same_assignments_as_the_rules(db, settings, seed):
    rng = random.Random(seed)
    build_lab(rng)
    for _ in range(4):
        state = random.getstate()
        expected = reference_pass()
        random.setstate(state)
        report = scheduler.run_pass(settings)
        got = {j.id: j.actual_device_id for j in TestJob.select().where(TestJob.id.in_(report.scheduled or [0]))}
        assert got == expected
        assert len(report.scheduled) == len(set(report.scheduled))
        for job_id, device_id in got.items():
            assert Device.get_by_id(device_id).current_job_id == job_id
        finish_some(rng)


def test_a_lost_race_replays_the_pass_one_assignment_at_a_time(db, settings, monkeypatch):
    """A device taken by another writer between the pass's read and its batch of UPDATEs: the
    batch is rolled back and the pass made again one conditional assignment at a time, so the
    taken device gets no second job. As before the batch, a job whose device was lost waits; the
    next pass reads that device busy and fills the other devices."""
    alice = f.user()
    dt, w = f.device_type(), f.worker()
    devices = [f.device(f"q{i}", dt, w) for i in range(3)]
    for k in range(5):
        TestJob.create(submitter=alice, description=f"job {k}", original_definition="{}", definition="{}",
                       requested_device_type=dt)
    stolen = devices[1]
    read = scheduler.schedule_health_checks

    def read_then_lose_a_device(*args):
        available = read(*args)
        # as another server process would, after this pass read the device Idle
        Device.update(state=DeviceState.RUNNING).where(Device.id == stolen.id).execute()
        return available

    monkeypatch.setattr(scheduler, "schedule_health_checks", read_then_lose_a_device)
    report = scheduler.run_pass(settings)
    assert Device.get_by_id(stolen.id).current_job_id is None
    got = {j.id: j.actual_device_id for j in TestJob.select().where(TestJob.state == JobState.SCHEDULED)}
    assert sorted(got) == sorted(report.scheduled)
    assert len(set(got.values())) == len(got) and stolen.id not in got.values()
    for job_id, device_id in got.items():
        assert Device.get_by_id(device_id).current_job_id == job_id
    monkeypatch.setattr(scheduler, "schedule_health_checks", read)
    scheduler.run_pass(settings)
    got = {j.id: j.actual_device_id for j in TestJob.select().where(TestJob.state == JobState.SCHEDULED)}
    assert sorted(got.values()) == sorted(d.id for d in devices if d.id != stolen.id)
