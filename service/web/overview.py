"""/: the lab at a glance, in a fixed number of queries whatever the lab's size.

Devices online, offline and Bad; per device type the queue depth, the oldest wait and the running
jobs; workers with their last ping; recent failures with their reason (Bad devices with the
health-history entry that made them Bad, and the latest jobs that ended Incomplete).
"""

from __future__ import annotations

from bottle import HTTPResponse
from peewee import JOIN, fn

from ..lab import job_views, workers
from ..models import Device, DeviceType, HealthHistory, TestJob, Worker, utcnow
from ..states import DeviceHealth, JobState, WorkerState
from .plugin import WebRoutes, render, web_user

routes = WebRoutes()
RECENT_FAILURES = 10
#: jobs that hold a device (or are about to)
RUNNING = (JobState.SCHEDULING, JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING)


def device_counts() -> dict[str, int]:
    """Online (worker Online, usable health), Offline (no worker or worker Offline), Bad, Maintenance,
    Retired: one query."""
    rows = (Device.select(Worker.state, Device.health, fn.COUNT(Device.id))
            .join(Worker, JOIN.LEFT_OUTER, on=(Device.worker == Worker.id))
            .group_by(Worker.state, Device.health).tuples())
    out = {"Online": 0, "Offline": 0, "Bad": 0, "Maintenance": 0, "Retired": 0}
    for worker_state, health, count in rows:
        label = DeviceHealth(health).label
        if label in out:
            out[label] += count
        elif worker_state == WorkerState.ONLINE:
            out["Online"] += count
        else:
            out["Offline"] += count
    return out


def queue_by_type() -> list[dict]:
    """Per device type shown in lists: devices, queue depth, oldest wait, running jobs (four queries)."""
    types = list(DeviceType.select(DeviceType.id, DeviceType.name).where(DeviceType.display)
                 .order_by(DeviceType.name).tuples())
    queued = {t: (n, first) for t, n, first in TestJob.select(
        TestJob.requested_device_type, fn.COUNT(TestJob.id), fn.MIN(TestJob.submit_time))
        .where(TestJob.state == JobState.SUBMITTED).group_by(TestJob.requested_device_type).tuples()}
    running = dict(TestJob.select(TestJob.requested_device_type, fn.COUNT(TestJob.id))
                   .where(TestJob.state.in_(RUNNING)).group_by(TestJob.requested_device_type).tuples())
    devices = dict(Device.select(Device.device_type, fn.COUNT(Device.id))
                   .where(Device.health != DeviceHealth.RETIRED).group_by(Device.device_type).tuples())
    now = utcnow()
    out = []
    for type_id, name in types:
        depth, first = queued.get(type_id, (0, None))
        out.append({"name": name, "devices": devices.get(type_id, 0), "queued": depth,
                    "oldest_wait": (now - first).total_seconds() if first else None,
                    "running": running.get(type_id, 0)})
    return out


def bad_devices() -> list[dict]:
    """Bad devices with the reason of the history entry that made them Bad (two queries)."""
    latest = (HealthHistory.select(HealthHistory.device, fn.MAX(HealthHistory.id).alias("last"))
              .group_by(HealthHistory.device).alias("latest"))
    rows = (Device.select(Device.hostname, HealthHistory.reason, HealthHistory.time, HealthHistory.actor)
            .join(latest, JOIN.LEFT_OUTER, on=(latest.c.device_id == Device.id))
            .join(HealthHistory, JOIN.LEFT_OUTER, on=(HealthHistory.id == latest.c.last))
            .where(Device.health == DeviceHealth.BAD).order_by(Device.hostname).tuples())
    return [{"hostname": h, "reason": reason or "", "time": time, "actor": actor or ""}
            for h, reason, time, actor in rows]


def failed_jobs() -> list[dict]:
    query = job_views.list_jobs(web_user(), state="Finished", health="Incomplete")
    return job_views.jobs_json(list(query.limit(RECENT_FAILURES)))


@routes.get("/")
def overview() -> HTTPResponse:
    """The lab at a glance."""
    return render("overview.html", title="Overview", counts=device_counts(), types=queue_by_type(),
                  workers=workers.workers_json(workers.list_workers(include_retired=False), devices=False),
                  bad=bad_devices(), failures=failed_jobs())
