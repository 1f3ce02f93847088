"""MultiNode groups in process on the configured backend: submission, all-or-nothing scheduling,
the fairness rule, cancel and essential roles (docs/multinode.md)."""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from peewee import JOIN

import factories as f
from dutlab.dispatcher.protocol import JobResult
from dutlab.service import scheduler, scheduler_groups
from dutlab.service.db import connection, write_txn
from dutlab.service.errors import ApiError
from dutlab.service.lab import job_views, jobs, multinode
from dutlab.service.models import Device, TestJob
from dutlab.service.states import DeviceHealth, DeviceState, JobHealth, JobState

PASS = JobResult("pass")
GROUP = """\
job_name: {name}
visibility: public
priority: {priority}
timeouts:
  job: {{minutes: 5}}
protocols:
  lava-multinode:
    timeout: {{minutes: 2}}
    roles:
      server: {{device_type: qemu, count: 1, essential: true, context: {{arch: amd64}}{server_tags}}}
      client: {{device_type: qemu, count: {clients}, context: {{arch: amd64}}}}
actions:
- deploy:
    role: [server, client]
    to: tmpfs
    images: {{kernel: {{url: 'file:///var/cache/dutlab/assets/amd64/vmlinuz', image_arg: '-kernel {{kernel}}'}}}}
- boot: {{role: [server, client], method: qemu, media: tmpfs, prompts: ['# ']}}
- test:
    role: [client]
    definitions:
    - from: inline
      name: wait
      path: inline/wait.yaml
      repository:
        metadata: {{format: Lava-Test Test Definition 1.0, name: wait}}
        run: {{steps: [lava-wait ready]}}
"""


def group_text(name: str = "group", clients: int = 1, priority: str = "medium", server_tags: str = "") -> str:
    tags = f", tags: [{server_tags}]" if server_tags else ""
    return GROUP.format(name=name, clients=clients, priority=priority, server_tags=tags)


def submit_group(user, settings, **kw) -> list[TestJob]:
    return jobs.submit(user, group_text(**kw), settings)


def fresh(job: TestJob) -> TestJob:
    return TestJob.get_by_id(job.id)


def lab(devices: int = 3, **worker):
    dt, w = f.device_type(), f.worker(**worker)
    return [f.device(f"q{i}", dt, w) for i in range(1, devices + 1)]


def occupy(device: Device, user, settings) -> TestJob:
    """A single job Running on `device` (the other devices made unfit for it for a moment)."""
    others = list(Device.select().where(Device.id != device.id, Device.state == DeviceState.IDLE))
    Device.update(health=DeviceHealth.MAINTENANCE).where(Device.id.in_([d.id for d in others] or [0])).execute()
    job = jobs.submit(user, f.job_text(name="busy"), settings)[0]
    assert scheduler.run_pass(settings).scheduled == [job.id]
    for d in others:
        Device.update(health=d.health).where(Device.id == d.id).execute()
    return jobs.mark_running(fresh(job))


def partial_groups() -> list[str]:
    """Groups none of whose sub-jobs finished yet with some, but not all, of them on a device.

    One SELECT, so one snapshot on either backend (separate queries could mix two states).
    """
    rows = (TestJob.select(TestJob.target_group, TestJob.state, TestJob.actual_device, Device.id)
            .join(Device, JOIN.LEFT_OUTER, on=(Device.current_job == TestJob.id))
            .where(TestJob.target_group != "").tuples())
    by_group: dict[str, list[tuple]] = {}
    for name, job_state, assigned, holding in rows:
        by_group.setdefault(name, []).append((job_state, assigned, holding))
    found = []
    for name, members in by_group.items():
        if any(job_state == JobState.FINISHED for job_state, _, _ in members):
            continue
        for column in (1, 2):  # the job's device, the device's job
            held = [member[column] is not None for member in members]
            if any(held) and not all(held):
                found.append(name)
    return found


# Submission #######################################################################


def test_submission_splits_the_group_with_lava_sub_ids(db, settings):
    alice = f.user()
    lab()
    created = submit_group(alice, settings, clients=2)
    first = created[0].id
    assert [j.sub_id for j in created] == [f"{first}.0", f"{first}.1", f"{first}.2"]
    assert [j.role for j in created] == ["server", "client", "client"]
    assert len({j.target_group for j in created}) == 1 and created[0].target_group
    server, client = (json.loads(j.definition) for j in created[:2])
    assert server["device_type"] == "qemu" and [next(iter(a)) for a in server["actions"]] == ["deploy", "boot"]
    assert [next(iter(a)) for a in client["actions"]] == ["deploy", "boot", "test"]
    proto = client["protocols"]["lava-multinode"]
    assert proto == {"target_group": created[0].target_group, "role": "client", "group_size": 3, "sub_id": 1,
                     "timeout": {"minutes": 2}}
    assert server["protocols"]["lava-multinode"]["essential"] is True
    assert all(j.original_definition == group_text(clients=2) for j in created)  # the whole submission
    # what a worker gets: the sub-job with the group's table (lava-group)
    assert sorted(scheduler.run_pass(settings).scheduled) == [j.id for j in created]
    package = yaml.safe_load(jobs.work_package(fresh(created[1]), settings)["definition"])
    assert package["protocols"]["lava-multinode"]["roles"] == {str(first): "server", str(first + 1): "client",
                                                                str(first + 2): "client"}
    shape = job_views.job_json(created[2])
    assert (shape["sub_id"], shape["role"], shape["group"]) == (f"{first}.2", "client", first)
    assert shape["target_group"] == created[0].target_group
    assert [j.id for j in job_views.list_jobs(alice, group=str(first))] == [j.id for j in reversed(created)]
    assert len(job_views.list_jobs(alice, group=created[0].target_group)) == 3
    assert job_views.visible_job(f"{first}.1", alice).id == created[1].id
    with pytest.raises(ApiError):
        job_views.visible_job(f"{first}.7", alice)


def test_group_the_lab_can_never_run_is_refused_naming_the_role(db, settings):
    alice = f.user()
    lab(devices=2)
    with pytest.raises(ApiError) as err:
        submit_group(alice, settings, clients=2)  # 3 devices needed, 2 exist
    assert err.value.status == 400 and err.value.path == "protocols.lava-multinode.roles.client.count"
    assert "role 'client'" in err.value.message and "whole group" in err.value.message
    with pytest.raises(ApiError) as err:
        submit_group(alice, settings, clients=3)
    assert err.value.path == "protocols.lava-multinode.roles.client.count" and "the lab has 2" in err.value.message
    with pytest.raises(ApiError) as err:
        jobs.submit(alice, group_text().replace("client: {device_type: qemu", "client: {device_type: bbb"), settings)
    assert err.value.path == "protocols.lava-multinode.roles.client.device_type"
    f.device("tagged", Device.get_by_id(1).device_type, Device.get_by_id(1).worker, tags=("usb",))
    with pytest.raises(ApiError) as err:
        submit_group(alice, settings, server_tags="nope")
    assert err.value.path == "protocols.lava-multinode.roles.server.tags[0]"
    assert submit_group(alice, settings, server_tags="usb")  # the tagged device serves the server role
    assert TestJob.select().count() == 2


# Scheduling #######################################################################


def test_group_is_assigned_in_one_pass_or_not_at_all(db, settings):
    alice = f.user()
    q1, q2, q3 = lab()
    busy = occupy(q1, alice, settings)
    occupy(q2, alice, settings)
    group = submit_group(alice, settings)
    report = scheduler.run_pass(settings)
    # a group of two, one free device: it waits without holding it
    assert report.scheduled == [] and partial_groups() == []
    assert Device.get_by_id(q3.id).state == DeviceState.IDLE and Device.get_by_id(q3.id).current_job_id is None
    assert {fresh(j).state for j in group} == {JobState.SUBMITTED}
    jobs.finish(fresh(busy), PASS)
    report = scheduler.run_pass(settings)
    assert sorted(report.scheduled) == sorted(j.id for j in group)
    devices = {fresh(j).actual_device_id for j in group}
    assert devices == {q1.id, q3.id}
    assert {Device.get_by_id(d).state for d in devices} == {DeviceState.RESERVED}


def test_waiting_group_keeps_its_devices_from_jobs_behind_it(db, settings):
    """The fairness rule: entries behind a waiting group do not get the devices it could use;
    entries before it (higher priority, older) and other device types do."""
    alice = f.user()
    q1, q2, q3 = lab()
    other = f.device("b1", f.device_type("bbb"), Device.get_by_id(q1.id).worker)
    first = occupy(q1, alice, settings)
    occupy(q2, alice, settings)
    group = submit_group(alice, settings)
    later = jobs.submit(alice, f.job_text(name="later"), settings)[0]
    elsewhere = jobs.submit(alice, f.job_text(name="bbb job", device_type="bbb"), settings)[0]
    assert scheduler.run_pass(settings).scheduled == [elsewhere.id]
    assert fresh(later).state == JobState.SUBMITTED and Device.get_by_id(q3.id).state == DeviceState.IDLE
    urgent = jobs.submit(alice, f.job_text(name="urgent", priority="high"), settings)[0]
    assert scheduler.run_pass(settings).scheduled == [urgent.id]  # ahead of the group in the queue
    jobs.finish(jobs.mark_running(fresh(urgent)), PASS)
    jobs.finish(fresh(first), PASS)
    assert sorted(scheduler.run_pass(settings).scheduled) == sorted(j.id for j in group)
    assert fresh(later).state == JobState.SUBMITTED
    del other


def test_group_that_the_usable_devices_cannot_run_holds_nothing(db, settings):
    alice = f.user()
    q1, q2, q3 = lab()
    group = submit_group(alice, settings, clients=2)
    Device.update(health=DeviceHealth.BAD).where(Device.id.in_([q1.id, q2.id])).execute()
    single = jobs.submit(alice, f.job_text(name="single"), settings)[0]
    assert scheduler.run_pass(settings).scheduled == [single.id]  # waiting for Bad devices would block it
    assert {fresh(j).state for j in group} == {JobState.SUBMITTED}
    del q3


def test_worker_job_limit_counts_for_the_whole_group(db, settings):
    alice = f.user()
    lab(devices=2, job_limit=1)
    group = submit_group(alice, settings)
    assert scheduler.run_pass(settings).scheduled == []
    assert partial_groups() == [] and {fresh(j).state for j in group} == {JobState.SUBMITTED}


def test_a_lost_race_undoes_the_whole_group(db, settings):
    """The queue is read before the pass's transaction; a sub-job canceled in between makes its
    conditional UPDATE fail, and the savepoint undoes the sub-jobs assigned before it."""
    alice = f.user()
    lab()
    group = submit_group(alice, settings, clients=2)
    [entry] = scheduler.queued_jobs({Device.get_by_id(1).device_type_id})
    free = {Device.get_by_id(1).device_type_id: list(Device.select())}
    fits = lambda q, d: True  # noqa: E731
    plan = scheduler_groups.plan(entry, free, scheduler.worker_capacity(), set(), fits)
    assert plan is not None and len(plan) == 3
    TestJob.update(state=JobState.FINISHED).where(TestJob.id == group[2].id).execute()  # the last one
    with write_txn():
        assert scheduler_groups.reserve(plan, scheduler._reserve) is False
    assert Device.select().where(Device.state != DeviceState.IDLE).count() == 0
    assert Device.select().where(Device.current_job.is_null(False)).count() == 0
    assert {fresh(j).state for j in group[:2]} == {JobState.SUBMITTED}
    assert all(fresh(j).actual_device_id is None for j in group[:2])


def test_concurrent_passes_never_reserve_a_partial_group(db, settings):
    """Passes in parallel with submissions, cancels and job ends; a reader that looks at every
    committed state the whole time never sees a group with only some of its sub-jobs on devices."""
    alice = f.user()
    lab(devices=5)
    errors: list[BaseException] = []
    seen_partial: list[list[str]] = []
    stop = threading.Event()

    def guarded(fn):
        def run():
            try:
                with connection():
                    fn()
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)
        return run

    def submitter():
        for n in range(12):
            submit_group(alice, settings, clients=1 + n % 3, name=f"g{n}")
            jobs.submit(alice, f.job_text(name=f"s{n}"), settings)

    def ended_elsewhere(report) -> None:
        try:
            report()
        except ApiError as exc:  # another passer (or the group's end) finished it first: it takes no more
            if exc.status != 409:
                raise

    def passer():
        while not stop.is_set():
            scheduler.run_pass(settings)
            for job in list(TestJob.select().where(TestJob.state.in_([JobState.SCHEDULED, JobState.RUNNING]))):
                if job.id % 4 == 0:
                    jobs.cancel(alice, job)
                ended_elsewhere(lambda job=job: jobs.finish(jobs.mark_running(job), PASS))
            for job in list(TestJob.select().where(TestJob.state == JobState.CANCELING)):
                ended_elsewhere(lambda job=job: jobs.finish(job, JobResult.failed("Canceled", "")))

    def watcher():
        while not stop.is_set():
            found = partial_groups()
            if found:
                seen_partial.append(found)

    threads = [threading.Thread(target=guarded(fn)) for fn in (passer, passer, watcher)]
    for t in threads:
        t.start()
    guarded(submitter)()
    for _ in range(400):  # until every job ended (a pass and its job ends take a few ms)
        if errors or not TestJob.select().where(TestJob.state != JobState.FINISHED).exists():
            break
        threading.Event().wait(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not seen_partial, seen_partial[:3]
    assert TestJob.select().where(TestJob.state != JobState.FINISHED).count() == 0
    completed = list(TestJob.select().where(TestJob.target_group != "", TestJob.health == JobHealth.COMPLETE))
    assert len({job.target_group for job in completed}) >= 3  # groups did run, not only get canceled
    assert all(job.actual_device_id is not None for job in completed)


# Cancel and essential roles #########################################################


def test_cancel_of_one_sub_job_cancels_the_group(db, settings):
    alice = f.user()
    lab()
    queued = submit_group(alice, settings)
    jobs.cancel(alice, fresh(queued[1]))
    assert {(fresh(j).state, fresh(j).health) for j in queued} == {(JobState.FINISHED, JobHealth.CANCELED)}
    running = submit_group(alice, settings)
    scheduler.run_pass(settings)
    for j in running:
        jobs.mark_running(fresh(j))
    jobs.cancel(alice, fresh(running[0]))
    assert {fresh(j).state for j in running} == {JobState.CANCELING}
    for j in running:
        jobs.finish(fresh(j), JobResult.failed("Canceled", "the job was canceled (SIGTERM received)"))
    assert {fresh(j).health for j in running} == {JobHealth.CANCELED}  # a canceled group stays Canceled


def test_failed_essential_role_ends_the_group_incomplete_with_the_reason(db, settings):
    alice = f.user()
    devices = lab()
    group = submit_group(alice, settings)
    scheduler.run_pass(settings)
    server, client = (jobs.mark_running(fresh(j)) for j in group)
    jobs.finish(server, JobResult.failed("Infrastructure", "QEMU exited (exit code 1)"))
    client = fresh(client)
    assert client.state == JobState.CANCELING  # its worker is told to stop it
    jobs.finish(client, JobResult.failed("Canceled", "the job was canceled (SIGTERM received)"))
    client = fresh(client)
    assert (client.state, client.health) == (JobState.FINISHED, JobHealth.INCOMPLETE)
    assert client.error_type == "Infrastructure"
    assert client.error_msg == (f"the group ended: essential role 'server' (job {server.sub_id}) ended Incomplete: "
                                "Infrastructure error: QEMU exited (exit code 1)")
    device = Device.get_by_id(client.actual_device_id)
    assert device.health == DeviceHealth.GOOD and device.state == DeviceState.IDLE  # not its device's fault
    assert Device.get_by_id(server.actual_device_id).health == DeviceHealth.UNKNOWN
    # a non-essential role that fails leaves the others alone
    group = submit_group(alice, settings)
    Device.update(health=DeviceHealth.GOOD).execute()
    scheduler.run_pass(settings)
    server, client = (jobs.mark_running(fresh(j)) for j in group)
    jobs.finish(client, JobResult.failed("Test", "lava-test-raise"))
    assert fresh(server).state == JobState.RUNNING
    del devices


# The assignment rule ##############################################################


def test_match_finds_an_assignment_greedy_picks_miss():
    # slot 0 can use a or b, slot 1 only a: taking a for slot 0 first would fail
    assert multinode.match([[1, 2], [1]]) == [2, 1]
    assert multinode.match([[1], [1]]) is None
    assert multinode.match([]) == []
    # two devices on worker 7 with one free slot, one on worker 8
    worker_of = {1: 7, 2: 7, 3: 8}
    assert multinode.match([[1, 2], [1, 2]], worker_of, {7: 1, 8: 1}) is None
    got = multinode.match([[1, 2], [1, 2, 3]], worker_of, {7: 1, 8: 1})
    assert got is not None and got[1] == 3 and got[0] in (1, 2)
