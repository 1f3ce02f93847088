"""4. Scheduler scale: one `scheduler.run_pass` on synthetic labs, built in bulk (insert_many).

Labs of 100 / 1,000 devices (10 device types, half with health checks, 0–3 tags each, 20% owned
by a group, on 5–50 Online workers) with 1,000 / 10,000 / 100,000 queued jobs (50 submitters, priorities
0–100, 30% with tags taken from devices of their type). Three passes per lab:
  full pass      every device Idle: the pass assigns a job to each device it can;
  nothing free   right after: every device Reserved, the queue still full;
  one freed      one device back to Idle (a job just finished): the common event.
Baseline: the bare SQL that any pass must run (all queued jobs, in order) on the same connection.
The 1,000 × 10,000 lab's full pass is then profiled with cProfile, and every pass counts its SQL
statements. Growth: full pass at 1,000 devices with 10× more queued jobs (≤ ~10× = linear).
"""

from __future__ import annotations

import cProfile
import random
import time
from datetime import timedelta
from pathlib import Path

from benchlib import Ctx, Section, md_table
from benchprof import top_frames

from labkit import pg_available, pg_database

KEY = "scheduler"
TITLE = "Scheduler scale"
SIZES = [(100, 1_000), (1_000, 1_000), (100, 10_000), (1_000, 10_000), (1_000, 100_000)]
BIG = (1_000, 10_000)  # the lab the targets are for


def _open(url: str, root: Path):
    from dutlab.service import migrations, queue, tasks  # noqa: F401  (tasks: the pass subscriber)
    from dutlab.service.config import from_dict
    from dutlab.service.db import open_database

    root.mkdir(parents=True, exist_ok=True)
    settings = from_dict({
        "data_dir": str(root / "data"), "database": url, "queue": "memory:",
        "template_dirs": [str(root / "etc" / "device-types")], "health_checks_dir": str(root / "etc" / "health-checks"),
        "secret_key_file": str(root / "etc" / "secret_key"),
    })
    db = open_database(settings.database)
    queue.configure(settings)
    migrations.migrate()
    return db, settings


def _chunks(rows: list[dict], size: int = 400):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def build(n_devices: int, n_jobs: int, seed: int = 1) -> dict:
    """Fill the (empty, migrated) database; returns counts."""
    from dutlab.service.db import database
    from dutlab.service.models import (
        Device,
        DeviceTag,
        DeviceType,
        Group,
        GroupMember,
        JobTag,
        Tag,
        TestJob,
        User,
        Worker,
        utcnow,
    )
    from dutlab.service.states import DeviceHealth, DeviceState, JobHealth, JobState, WorkerHealth, WorkerState

    rng = random.Random(seed)
    now = utcnow()
    n_workers = max(5, n_devices // 20)
    dictionary = "{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n"
    with database.atomic():
        User.insert_many([{"id": i + 1, "username": f"user{i}"} for i in range(50)]).execute()
        Group.insert_many([{"id": i + 1, "name": f"group{i}"} for i in range(5)]).execute()
        GroupMember.insert_many([{"group": i % 5 + 1, "user": i + 1} for i in range(50)]).execute()
        DeviceType.insert_many([{"id": i + 1, "name": f"type{i}", "template": "qemu", "health_frequency": 24,
                                 "disable_health_checks": i % 2 == 0} for i in range(10)]).execute()
        Tag.insert_many([{"id": i + 1, "name": f"tag{i}"} for i in range(20)]).execute()
        Worker.insert_many([{"id": i + 1, "hostname": f"worker{i}", "state": WorkerState.ONLINE,
                             "health": WorkerHealth.ACTIVE, "last_ping": now} for i in range(n_workers)]).execute()
        devices, device_tags, type_tags = [], [], {t: set() for t in range(1, 11)}
        for i in range(n_devices):
            dtype = i % 10 + 1
            devices.append({"id": i + 1, "hostname": f"dev{i:05d}", "device_type": dtype,
                            "worker": i % n_workers + 1, "dictionary": dictionary, "state": DeviceState.IDLE,
                            "health": DeviceHealth.GOOD, "owner_group": (i % 5 + 1) if i % 5 == 0 else None})
            for tag in rng.sample(range(1, 21), rng.choice([0, 1, 2, 3])):
                device_tags.append({"device": i + 1, "tag": tag})
                type_tags[dtype].add(tag)
        for chunk in _chunks(devices):
            Device.insert_many(chunk).execute()
        for chunk in _chunks(device_tags):
            DeviceTag.insert_many(chunk).execute()
        # a recent passed health check for every device whose type has health checks on
        checks = [{"id": i + 1, "submitter": 1, "description": "health check", "original_definition": "{}",
                   "definition": "{}", "requested_device_type": i % 10 + 1, "actual_device": i + 1,
                   "health_check": True, "state": JobState.FINISHED, "health": JobHealth.COMPLETE,
                   "submit_time": now - timedelta(minutes=5), "start_time": now - timedelta(minutes=5),
                   "end_time": now - timedelta(minutes=4)}
                  for i in range(n_devices) if (i % 10) % 2 == 1]
        for chunk in _chunks(checks):
            TestJob.insert_many(chunk).execute()
        for check in checks:
            Device.update(last_health_report_job=check["id"]).where(Device.id == check["actual_device"]).execute()
        first = n_devices + 1
        jobs, job_tags = [], []
        for k in range(n_jobs):
            job_id = first + k
            dtype = rng.randint(1, 10)
            jobs.append({"id": job_id, "submitter": rng.randint(1, 50), "description": f"job {k}",
                         "original_definition": "{}", "definition": "{}", "requested_device_type": dtype,
                         "priority": rng.choice([25, 50, 50, 50, 75, rng.randint(0, 100)]),
                         "state": JobState.SUBMITTED, "submit_time": now - timedelta(milliseconds=n_jobs - k)})
            r = rng.random()
            if r < 0.3 and type_tags[dtype]:
                for tag in rng.sample(sorted(type_tags[dtype]), 1 if r < 0.2 else min(2, len(type_tags[dtype]))):
                    job_tags.append({"job": job_id, "tag": tag})
        for chunk in _chunks(jobs, 200):
            TestJob.insert_many(chunk).execute()
        for chunk in _chunks(job_tags):
            JobTag.insert_many(chunk).execute()
        # a large lab takes longer to build than the heartbeat timeout: the workers just pinged
        Worker.update(last_ping=utcnow()).execute()
    return {"devices": n_devices, "jobs": n_jobs, "workers": n_workers, "job_tags": len(job_tags),
            "device_tags": len(device_tags)}


def bare_select() -> float:
    """The least any pass must do: read every queued job, best first (driver only, no ORM)."""
    from dutlab.service.db import database

    t0 = time.perf_counter()
    cur = database.execute_sql("SELECT id, requested_device_type_id, submitter_id, requested_device_id FROM test_job "
                               "WHERE state = 0 ORDER BY priority DESC, submit_time, id")
    rows = cur.fetchall()
    elapsed = time.perf_counter() - t0
    assert rows is not None
    return elapsed


def reset(scheduled: list[int]) -> None:
    from dutlab.service.db import database
    from dutlab.service.models import Device, TestJob
    from dutlab.service.states import DeviceState, JobState

    with database.atomic():
        Device.update(state=DeviceState.IDLE, current_job=None).execute()
        TestJob.update(state=JobState.SUBMITTED, actual_device=None, worker=None, scheduled_time=None).where(
            TestJob.id.in_(scheduled)).execute()


def free_one() -> None:
    from dutlab.service.models import Device, TestJob
    from dutlab.service.states import DeviceState, JobState

    device = Device.select().where(Device.state == DeviceState.RESERVED).order_by(Device.id).first()
    if device is not None:
        TestJob.update(state=JobState.FINISHED).where(TestJob.id == device.current_job_id).execute()
        Device.update(state=DeviceState.IDLE, current_job=None).where(Device.id == device.id).execute()


class _Counted:
    """Counts the SQL statements run on the database (every peewee query goes through execute_sql)."""

    def __init__(self, db) -> None:
        self.db, self.n, self.orig = db, 0, db.execute_sql

    def __enter__(self) -> _Counted:
        def counted(*args, **kwargs):
            self.n += 1
            return self.orig(*args, **kwargs)
        self.db.execute_sql = counted
        return self

    def __exit__(self, *exc) -> None:
        del self.db.execute_sql


def _timed_pass(db, settings) -> tuple[float, int, object]:
    from dutlab.service import scheduler

    with _Counted(db) as counted:
        t0, c0 = time.perf_counter(), time.process_time()
        report = scheduler.run_pass(settings)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    report.cpu_s = cpu  # this process only (not the PostgreSQL server's)
    return elapsed, counted.n, report


def measure(url: str, root: Path, n_devices: int, n_jobs: int, profile: bool) -> dict:
    from dutlab.service import scheduler
    from dutlab.service.db import database

    db, settings = _open(url, root)
    try:
        t0 = time.perf_counter()
        counts = build(n_devices, n_jobs)
        build_s = time.perf_counter() - t0
        bare = min(bare_select() for _ in range(3))
        full, full_q, report = _timed_pass(db, settings)
        assigned = len(report.scheduled)
        busy, busy_q, busy_report = _timed_pass(db, settings)
        free_one()
        one, one_q, one_report = _timed_pass(db, settings)
        top = ""
        if profile:
            reset(report.scheduled + one_report.scheduled)
            prof = cProfile.Profile()
            prof.runcall(scheduler.run_pass, settings)
            top = top_frames(prof, 25) + "\n\nby own time:\n" + top_frames(prof, 12, "tottime")
        return {**counts, "build_s": build_s, "bare_select_s": bare, "full_pass_s": full, "assigned": assigned,
                "busy_pass_s": busy, "busy_assigned": len(busy_report.scheduled), "one_freed_pass_s": one,
                "one_freed_assigned": len(one_report.scheduled), "profile": top,
                "full_cpu_s": report.cpu_s, "one_freed_cpu_s": one_report.cpu_s, "full_queries": full_q,
                "busy_queries": busy_q, "one_freed_queries": one_q}
    finally:
        if not db.is_closed():
            db.close()
        database.initialize(None)


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    sizes = [SIZES[0], BIG] if ctx.quick else SIZES
    results = []
    for d, j in sizes:
        root = ctx.work / f"sched-{d}-{j}"
        url = f"sqlite:///{root / 'sched.sqlite3'}"
        r = measure(url, root, d, j, profile=((d, j) == BIG))
        r["backend"] = "sqlite"
        results.append(r)
        _print(r)
    ok, why = pg_available()
    if ok and not ctx.quick:
        for d, j in [(1_000, 1_000), BIG, (1_000, 100_000)]:
            with pg_database() as url:
                r = measure(url, ctx.work / f"sched-pg-{d}-{j}", d, j, profile=False)
            r["backend"] = "postgresql"
            results.append(r)
            _print(r)
    elif not ok:
        sec.note(f"PostgreSQL not measured: {why}")
    smallest = results[0]
    rows = []
    for r in results:
        rows.append([r["backend"], r["devices"], r["jobs"], r["full_pass_s"] * 1000, r["full_cpu_s"] * 1000,
                     r["full_queries"], r["assigned"],
                     r["assigned"] / r["full_pass_s"], r["full_pass_s"] / smallest["full_pass_s"],
                     r["busy_pass_s"] * 1000, r["busy_queries"], r["one_freed_pass_s"] * 1000,
                     r["one_freed_cpu_s"] * 1000, r["one_freed_queries"], r["bare_select_s"] * 1000,
                     r["full_pass_s"] / r["bare_select_s"]])
    sec.tables.append("Passes (wall ms; CPU ms of the benchmark process, without the PostgreSQL server's; SQL "
                      "statements) and growth (× the smallest lab's full pass):\n\n" + md_table(
        ["backend", "devices", "queued", "full pass ms", "its CPU ms", "queries", "assigned", "assigned/s",
         "growth ×", "nothing-free ms", "queries", "one-freed ms", "its CPU ms", "queries", "bare select ms",
         "full ÷ bare"], rows))
    targets = {"sqlite": "<= 100", "postgresql": "<= 150"}
    for backend in ("sqlite", "postgresql"):
        by_size = {(r["devices"], r["jobs"]): r for r in results if r["backend"] == backend}
        big = by_size.get(BIG)
        if not big:
            continue
        sec.add(f"full pass, 1,000 devices × 10,000 queued ({backend})", big["full_pass_s"] * 1000, "ms",
                targets[backend], note=f"bare ordered SELECT of the queue {big['bare_select_s'] * 1000:.1f} ms; "
                f"{big['full_queries']} SQL statements; {big['full_cpu_s'] * 1000:.0f} ms CPU in this process")
        sec.add(f"pass after one device freed, same lab ({backend})", big["one_freed_pass_s"] * 1000, "ms", "<= 5",
                note=f"{big['one_freed_queries']} SQL statements; "
                f"{big['one_freed_cpu_s'] * 1000:.1f} ms CPU in this process")
        sec.add(f"pass with nothing free, same lab ({backend})", big["busy_pass_s"] * 1000, "ms",
                note=f"{big['busy_queries']} SQL statements")
        sec.add(f"bare ordered SELECT of the queue, same lab ({backend}; baseline)", big["bare_select_s"] * 1000, "ms")
        sec.add(f"full pass ÷ bare SELECT ({backend})", big["full_pass_s"] / big["bare_select_s"], "×")
        for small, large in (((1_000, 1_000), BIG), (BIG, (1_000, 100_000))):
            if small in by_size and large in by_size:
                sec.add(f"growth: full pass at {large[1]:,} ÷ at {small[1]:,} queued, 1,000 devices ({backend})",
                        by_size[large]["full_pass_s"] / by_size[small]["full_pass_s"], "×", "<= 10")
        if big["profile"]:
            sec.profiles.append(f"full run_pass, 1,000 devices × 10,000 queued, {backend} (cProfile inflates times)\n"
                                + big["profile"])
    sec.data["runs"] = [{k: v for k, v in r.items() if k != "profile"} for r in results]
    return sec


def _print(r: dict) -> None:
    print(f"    {r['backend']} {r['devices']:5} devices {r['jobs']:6} jobs: "
          f"full pass {r['full_pass_s'] * 1000:7.1f} ms "
          f"({r['assigned']} assigned, {r['full_queries']} queries), nothing free {r['busy_pass_s'] * 1000:6.1f} ms, "
          f"one freed {r['one_freed_pass_s'] * 1000:6.1f} ms ({r['one_freed_queries']} queries), "
          f"bare select {r['bare_select_s'] * 1000:5.1f} ms; cpu full {r['full_cpu_s'] * 1000:.1f} "
          f"one freed {r['one_freed_cpu_s'] * 1000:.1f} ms", flush=True)
