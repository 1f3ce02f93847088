"""Test jobs: validate, submit, cancel, resubmit, run, finish (what viewers read: job_views.py).

What a definition must satisfy before it is stored is submissions.py's (`check_definition`,
one verdict for every front end); storing, cancelling and finishing are here. The transitions
follow LAVA's state machine (lava-interfaces.md §3.8); how a job's end changes its device's
health is here too (`finish`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import yaml

from dutlab.dispatcher.protocol import ERROR_TYPE_MAX, INFRASTRUCTURE_ERRORS, JobResult

from .. import auth, devicecfg, events
from ..config import Settings
from ..db import execute_prebuilt, for_update, write_txn
from ..errors import ApiError, bad_request, conflict, forbidden, refused_items
from ..logstore import JobFolder
from ..models import (
    Device,
    JobTag,
    JobViewingGroup,
    TestJob,
    User,
    device_by_id,
    job_by_id,
    utcnow,
)
from ..states import DeviceHealth, DeviceState, JobHealth, JobState
from . import group_commit, multinode
from .definitions import compatibility
from .devices import HEALTH_ACTOR, set_health
from .submissions import Submission, check_definition

#: libyaml's emitter where PyYAML has it: the pure-Python one took half of a submission's time
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: job states in which a worker holds the job
ACTIVE = (JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING)

def create(user: User, sub: Submission, *, health_check: bool = False, device: Device | None = None) -> TestJob:
    job = TestJob.create(
        submitter=user,
        description=str(sub.job["job_name"]),
        original_definition=sub.text,
        definition=json.dumps(sub.job),
        requested_device_type=sub.device_type,
        requested_device=device,
        priority=sub.priority,
        visibility=sub.visibility,
        health_check=health_check,
        queue_timeout=sub.queue_timeout,
        pipeline_compatibility=sub.compatibility,
        metadata=json.dumps({str(k): v for k, v in (sub.job.get("metadata") or {}).items()}, default=str),
    )
    for tag in sub.tags:
        JobTag.create(job=job, tag=tag)
    for group in sub.viewing_groups:
        JobViewingGroup.create(job=job, group=group)
    return job


def submit(user: User, text: str, settings: Settings) -> list[TestJob]:
    """Store a job, or the sub-jobs of a MultiNode group (in sub-id order); all or nothing."""
    return submit_many(user, [text], settings, bulk=False)[0]


#: definitions one bulk submission may carry (the body cap, max_body_user, also applies)
BULK_MAX = 1000


def submit_many(user: User, texts: list[str], settings: Settings, bulk: bool = True) -> list[list[TestJob]]:
    """Store several definitions in one transaction, all or none: each item's jobs, in order.

    Every item gets the verdict `check_definition` gives a single submission; with `bulk`, the
    problems of all items are raised together (`errors.refused_items`) and nothing is stored, so a CI
    system fixes and resends its batch without working out which half went in.
    """
    subs, problems = [], []
    for i, text in enumerate(texts):
        try:
            subs.append(check_definition(user, text, settings))
        except ApiError as exc:
            if not bulk:
                raise
            problems.append((i, exc))
    if problems:
        raise refused_items("definitions", problems, len(texts))
    def store() -> list[list[TestJob]]:  # a group's sub-jobs keep the whole submission as their original definition
        return [multinode.create_group(sub.roles, lambda role, sub=sub: create(user, replace(
            sub, job=role.definition, device_type=role.device_type, tags=role.tags, roles=[],
            compatibility=compatibility(role.definition)))) if sub.roles else [create(user, sub)] for sub in subs]

    created = group_commit.run(store)  # answered once committed, in a transaction shared with others
    for sub, made in zip(subs, created, strict=True):
        for job, role in zip(made, sub.roles or [None], strict=True):
            shown = sub.text if role is None else yaml.safe_dump(role.definition, sort_keys=False)  # what it runs
            folder = JobFolder(settings.output_dir, job.id)
            folder.write("job.yaml", shown)
            if role is None and sub.description is not None:  # as built at submission; the worker's replaces it
                folder.write("description.yaml", description_yaml(sub.description, job.id))
    events.schedule_soon(f"job {created[0][0].id} submitted" + (f" (+{len(created) - 1} more)" if bulk else ""))
    return created


_DUMPED: dict[int, tuple[dict, str]] = {}


def description_yaml(description: dict, job_id: int) -> str:
    """The pipeline description as built at submission, with the job's id: its "job" part dumped
    each time, the rest (the pipeline: most of the text) once per description. Descriptions come
    from the pipeline cache (lab/pipelines.py), the same object for the same definition on the
    same configuration, never changed; holding it keeps its id from being reused."""
    head = {"job": {**description["job"], "id": job_id}}
    if next(iter(description)) != "job" or len(description) < 2:
        return yaml.dump({**description, **head}, Dumper=_DUMPER, sort_keys=False)
    seen = _DUMPED.get(id(description))
    if seen is None or seen[0] is not description:
        if len(_DUMPED) >= 256:
            _DUMPED.clear()
        rest = {k: v for k, v in description.items() if k != "job"}
        seen = _DUMPED[id(description)] = (description, yaml.dump(rest, Dumper=_DUMPER, sort_keys=False))
    return yaml.dump(head, Dumper=_DUMPER, sort_keys=False) + seen[1]


def resubmit(user: User, job: TestJob, settings: Settings) -> list[TestJob]:
    if not auth.may_view_job(user, job):
        raise ApiError(404, f"job '{job.id}' does not exist")
    if job.submitter_id != user.id and not auth.has_perm(user, "cancel_resubmit"):
        raise forbidden(f"user '{user.username}' may not resubmit job {job.id}")
    if job.submitter_id != user.id and not auth.is_admin(user) and json.loads(job.definition).get("secrets"):
        # the copy would be theirs, secrets included: those are for the submitter and admins only
        raise forbidden(f"job {job.id} has secrets; only its submitter or an admin may resubmit it")
    if job.health_check:
        raise bad_request(f"job {job.id} is a health check; request a new one by setting the device health")
    return submit(user, job.original_definition, settings)


def cancel(user: User, job: TestJob) -> TestJob:
    """Submitted jobs end at once; scheduled or running ones go Canceling until the worker ends them.
    Cancelling one job of a MultiNode group cancels the whole group (as LAVA)."""
    if not auth.may_cancel_job(user, job):
        raise forbidden(f"user '{user.username}' may not cancel job {job.id}")
    now = utcnow()
    ids = [member.id for member in multinode.members(job)]
    with write_txn():
        # the group's queued members end here (and are told); the others are their workers' to end
        queued = [row.id for row in for_update(TestJob.select(TestJob.id).where(
            TestJob.id.in_(ids), TestJob.state == JobState.SUBMITTED))]
        if queued:
            TestJob.update(state=JobState.FINISHED, health=JobHealth.CANCELED, end_time=now,
                           failure_comment=f"canceled by {user.username} before it started").where(
                TestJob.id.in_(queued), TestJob.state == JobState.SUBMITTED).execute()
        TestJob.update(state=JobState.CANCELING).where(
            TestJob.id.in_(ids), TestJob.state.in_([JobState.SCHEDULING, JobState.SCHEDULED, JobState.RUNNING])
        ).execute()
    for member in list(TestJob.select().where(TestJob.id.in_(ids), TestJob.state == JobState.CANCELING)):
        events.wake_worker(member.worker_id)
    for job_id in queued:
        events.job_changed(job_id, "finished")
    return TestJob.get_by_id(job.id)


# Running ##########################################################################


def work_package(job: TestJob, settings: Settings) -> dict:
    """What a worker needs to run `job`: its definition, the device configuration rendered for
    it (kept as device.yaml: the configuration the job ran with) and the lines logged so far."""
    if job.state not in ACTIVE:
        raise conflict(f"job {job.id} is {JobState(job.state).label}; there is nothing to run")
    definition = yaml.safe_dump(multinode.with_roles(job, json.loads(job.definition)), sort_keys=False,
                                default_flow_style=False)
    device_yaml = devicecfg.render_for_job(job, settings)
    folder = JobFolder(settings.output_dir, job.id)
    folder.write("device.yaml", device_yaml)
    return {"definition": definition, "device": device_yaml, "log_line_count": folder.line_count(),
            "compatibility": job.pipeline_compatibility}


def open_for_reports(job: TestJob, lock: bool = True) -> TestJob:
    """`job` with its state, health and start time read again; a 409 once it is Finished (fencing,
    docs/worker.md: nothing a run sends after that may change it). `lock`, inside a write
    transaction: its row stays locked until the commit.

    `job` is the row the job-token check read: what else a job's row holds is fixed once it is
    scheduled, so only the columns a report or a cancel changes are read again (a narrow read,
    not the 30-column row).
    """
    if lock:
        cursor = execute_prebuilt("job reported locked", lambda i: for_update(_reported_columns(i)), job.id)
    else:
        cursor = execute_prebuilt("job reported", _reported_columns, job.id)
    rows = cursor.fetchall()
    if not rows:
        raise TestJob.DoesNotExist(f"job {job.id} does not exist")
    job.state, job.health, start = rows[0]
    job.start_time = TestJob.start_time.python_value(start)
    if job.state == JobState.FINISHED:
        health = JobHealth(job.health).label
        raise conflict(f"job {job.id} is already Finished ({health}); the server takes no more log lines, "
                       "states or results for it: stop its run", state=JobState.FINISHED.label, health=health)
    return job


def _reported_columns(job_id: int):
    return TestJob.select(TestJob.state, TestJob.health, TestJob.start_time).where(TestJob.id == job_id)


def mark_running(job: TestJob) -> TestJob:
    """The job as it is now: Running from Scheduled (a second report changes nothing)."""
    now = utcnow()
    with write_txn():
        job = open_for_reports(job)
        started = execute_prebuilt("job running", lambda state, start, i, was: TestJob.update(
            state=state, start_time=start).where(TestJob.id == i, TestJob.state == was),
            JobState.RUNNING, now, job.id, JobState.SCHEDULED).rowcount
        if job.actual_device_id:
            execute_prebuilt("device running", lambda state, i, job_id: Device.update(state=state).where(
                Device.id == i, Device.current_job == job_id), DeviceState.RUNNING, job.actual_device_id, job.id)
    if started:  # the locked row was Scheduled: it is now what the update made it
        job.state, job.start_time = JobState.RUNNING, now
        events.job_changed(job.id, "running")
    return job


# Ending ###########################################################################


def finish_reported(job: TestJob, result: JobResult, description: Any, log_line_count: Any,
                    settings: Settings, refuse_finished: bool = True) -> TestJob:
    """A worker's report that `job` ended: refused while the server lacks some of its log lines
    (nothing may be lost after Finished), then `finish`, the pipeline description kept. On a
    Finished job: a 409, or the job unchanged (`refuse_finished` off: protocol 1 clients)."""
    if not refuse_finished:
        current = job_by_id(job.id)
        if current is not None and current.state == JobState.FINISHED:
            return current
    if job.state == JobState.FINISHED:  # this 409 first, not one asking for more lines
        open_for_reports(job, lock=False)
    folder = JobFolder(settings.output_dir, job.id)
    stored = folder.line_count()
    if isinstance(log_line_count, int) and log_line_count > stored:
        raise conflict(f"the server holds {stored} of {log_line_count} log lines; upload the rest first",
                       "log_line_count", line_count=stored)
    job = finish(job, result, strict=True)
    if isinstance(description, str) and description:
        folder.write("description.yaml", description)
    return job


def finish(job: TestJob, result: JobResult, actor: str = HEALTH_ACTOR, recheck: bool = False,
           strict: bool = False) -> TestJob:
    """End a job with the worker's (or the lab's) verdict and apply LAVA's device-health rules;
    `recheck`: the job ended without a verdict on its device (its worker was lost), so the
    device goes Unknown (a health check comes first) even when the job was a health check.

    A job already Finished stays as it is (`strict`: a 409, see `open_for_reports`).
    """
    error_type = result.error_type[:ERROR_TYPE_MAX] if not result.passed else ""
    error_msg = result.error_msg if not result.passed else ""
    now = utcnow()
    with write_txn():
        job = open_for_reports(job) if strict else job_by_id(job.id, lock=True) or TestJob.get_by_id(job.id)
        if job.state == JobState.FINISHED:
            return job
        health = JobHealth.COMPLETE if result.passed else JobHealth.INCOMPLETE
        if job.state == JobState.CANCELING:
            health = JobHealth.CANCELED
        ended_by_group = multinode.group_end(job) if job.state == JobState.CANCELING else None
        if ended_by_group:  # its run was stopped because an essential role of its group failed
            health, (error_type, error_msg) = JobHealth.INCOMPLETE, ended_by_group
        comment = error_msg if health != JobHealth.COMPLETE else ""
        start = job.start_time or now
        execute_prebuilt("finish job", _finish_update, JobState.FINISHED, health, start, now, comment, error_type,
                         error_msg, job.id)
        device = device_by_id(job.actual_device_id)
        if device is not None and device.current_job_id == job.id:
            execute_prebuilt("free device", _free_update, DeviceState.IDLE, None, device.id)
            if not ended_by_group:  # not this device's doing
                _device_health_after(device, job, health, error_type, error_msg, actor, recheck)
        group_workers = multinode.end_group(job, health, error_type, error_msg)
    for worker_id in sorted(group_workers):
        events.wake_worker(worker_id)
    events.schedule_soon(f"job {job.id} finished")
    events.job_changed(job.id, "finished")
    # what the update wrote (end_group changes only the other jobs of a group): no read back
    job.state, job.health, job.start_time, job.end_time = JobState.FINISHED, health, start, now
    job.failure_comment, job.error_type, job.error_msg = comment, error_type, error_msg
    return job


def _finish_update(state, health, start, now, comment, error_type, error_msg, job_id):
    # the parameters in peewee's order: the model's fields, then the WHERE (db.prebuilt checks it)
    return TestJob.update(state=state, health=health, start_time=start, end_time=now, failure_comment=comment,
                          error_type=error_type, error_msg=error_msg).where(TestJob.id == job_id)


def _free_update(state, current_job, device_id):
    return Device.update(state=state, current_job=current_job).where(Device.id == device_id)


def _device_health_after(device: Device, job: TestJob, health: JobHealth, error_type: str, error_msg: str,
                         actor: str, recheck: bool) -> None:
    """A health check decides Good or Bad; an infrastructure error makes a Good device Unknown."""
    if recheck:  # no verdict on the device (see `finish`): a health check before its next job
        if device.health == DeviceHealth.GOOD:
            set_health(device, DeviceHealth.UNKNOWN, f"job {job.id} ended: {error_msg}", actor)
    elif job.health_check:
        Device.update(last_health_report_job=job.id).where(Device.id == device.id).execute()
        if device.health in (DeviceHealth.GOOD, DeviceHealth.UNKNOWN, DeviceHealth.BAD):
            if health == JobHealth.COMPLETE:
                set_health(device, DeviceHealth.GOOD, f"health check job {job.id} passed", actor)
            else:
                set_health(device, DeviceHealth.BAD,
                           f"health check job {job.id} failed: {error_type} {error_msg}".strip(), actor)
    elif health == JobHealth.INCOMPLETE and error_type in INFRASTRUCTURE_ERRORS and device.health == DeviceHealth.GOOD:
        set_health(device, DeviceHealth.UNKNOWN,
                   f"job {job.id} ended with an {error_type} error: {error_msg}", actor)
