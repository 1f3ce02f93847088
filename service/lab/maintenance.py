"""The whole lab into Maintenance: before work on the lab, and after a restore (backup/restore.py).

Devices in Maintenance get no jobs and no health checks; an admin brings each back (to
Unknown: a health check runs first) once its hardware has been looked at.
"""

from __future__ import annotations

from .. import events
from ..db import write_txn
from ..models import Device, TestJob, User
from ..states import DeviceHealth, JobState
from .devices import HEALTH_ACTOR, set_health
from .jobs import cancel


def maintenance(force: bool = False, dry_run: bool = False, actor: str = HEALTH_ACTOR,
                reason: str = "lab maintenance") -> list[str]:
    """Put every device that is not Retired into Maintenance; `force` also cancels their jobs.

    Returns one line per change (what would change, with `dry_run`).
    """
    done = []
    devices = Device.select().where(Device.health.not_in([DeviceHealth.RETIRED, DeviceHealth.MAINTENANCE]))
    for device in devices.order_by(Device.hostname):
        done.append(f"{device.hostname}: {DeviceHealth(device.health).label} → Maintenance")
        if not dry_run:
            with write_txn():
                set_health(device, DeviceHealth.MAINTENANCE, reason, actor)
    if force:
        done += _cancel_running(dry_run, actor)
    if done and not dry_run:
        events.schedule_soon("lab maintenance")
    return done


def _cancel_running(dry_run: bool, actor: str) -> list[str]:
    # the CLI acts as the lab's administrator: a superuser that need not exist as a row
    admin = User(username=actor, is_superuser=True)
    active = (JobState.SCHEDULING, JobState.SCHEDULED, JobState.RUNNING)
    query = TestJob.select().where(TestJob.state.in_(active), TestJob.actual_device.is_null(False))
    done = []
    for job in query.order_by(TestJob.id):
        done.append(f"job {job.id}: {JobState(job.state).label} → Canceling")
        if not dry_run:
            cancel(admin, job)
    return done
