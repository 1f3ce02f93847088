"""Device health changes, always with a history record (who, when, why)."""

from __future__ import annotations

from . import events
from .models import Device, HealthHistory, TestJob
from .states import DeviceHealth, JobState


def set_health(device: Device, health: DeviceHealth, reason: str, actor: str) -> bool:
    """Set `device`'s health; record it; return False when it already had that health."""
    current = Device.get_by_id(device.id)
    if current.health == health:
        return False
    Device.update(health=health).where(Device.id == device.id).execute()
    HealthHistory.create(device=device, old_health=current.health, new_health=health, reason=reason, actor=actor)
    device.health = health
    if health == DeviceHealth.RETIRED and current.current_job_id:
        # a retired device must not keep running a job (LAVA cancels it too)
        TestJob.update(state=JobState.CANCELING).where(
            TestJob.id == current.current_job_id,
            TestJob.state.in_([JobState.SCHEDULED, JobState.RUNNING]),
        ).execute()
        events.wake_worker(current.worker_id)
    if health in (DeviceHealth.GOOD, DeviceHealth.UNKNOWN, DeviceHealth.LOOPING):
        events.schedule_soon(f"device {device.hostname} is {health.label}")
    return True
