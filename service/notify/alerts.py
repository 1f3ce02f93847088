"""Lab alerts: a device that became Bad, a worker that went Offline (with it, its devices), told by
email to the owners of the devices (a user, or a group's members) and the `admins:` setting.

At most one alert per device (or worker) within `alert_interval`: a flapping device sends one
mail, and the rows of the alerts held back are kept as skipped, saying so. The text is made when
the alert is planned: it describes that moment, however late a retry sends it.
"""

from __future__ import annotations

import datetime as dt

from ..config import Settings
from ..models import Device, GroupMember, HealthHistory, Notification, User, Worker, utcnow
from ..states import DeviceHealth, WorkerState
from . import rows
from .message import alert_text
from .rows import Planned


def recipients(devices: list[Device], settings: Settings) -> list[Planned]:
    """One email row per address: each device's owner (or its group's members), then the admins."""
    out: dict[str, Planned] = {}
    problems: list[Planned] = []

    def add(key: str, address: str) -> None:
        if address and address not in out:
            out[address] = Planned(key, "email", address)

    for device in devices:
        if device.owner_user_id:
            owner = User.get_by_id(device.owner_user_id)
            add(f"owner:{owner.username}", owner.email)
        elif device.owner_group_id:
            for m in GroupMember.select().where(GroupMember.group == device.owner_group_id):
                add(f"owner:{m.user.username}", m.user.email)
    for entry in settings.admins:
        if "@" in entry:
            add(f"admin:{entry}", entry)
            continue
        user = User.get_or_none(User.username == entry)
        if user is None or not user.email:
            why = "does not exist" if user is None else "has no email address"
            problems.append(Planned(f"admin:{entry}", "email", "", state="failed",
                                    reason=f"admins: user '{entry}' {why}"))
        else:
            add(f"admin:{entry}", user.email)
    planned = list(out.values()) + problems
    if not planned:
        planned.append(Planned("nobody", "email", "", state="skipped",
                               reason="nobody to tell: the device has no owner with an email address and the "
                                      "admins setting is empty"))
    return planned


def _held_back(subject: str, settings: Settings) -> str:
    since = utcnow() - dt.timedelta(seconds=settings.alert_interval)
    last = (Notification.select().where(Notification.subject == subject, Notification.created >= since,
                                        Notification.state.in_(["pending", "sending", "sent"]))
            .order_by(Notification.created.desc()).first())
    if last is None:
        return ""
    return (f"an alert about {subject.split(':', 1)[1]} went out at {last.created:%Y-%m-%d %H:%M:%S} UTC; "
            f"at most one per {settings.alert_interval} s (alert_interval)")


def _make(subject: str, event: str, planned: list[Planned], text: tuple[str, str], settings: Settings,
          device_id: int | None = None) -> list[int]:
    held = _held_back(subject, settings)
    for p in planned:
        p.detail = {"subject": text[0], "body": text[1]}
        if held and p.state == "pending":
            p.state, p.reason = "skipped", held
    return rows.create(subject, event, planned, device_id=device_id)


def plan_health(history_id: int, settings: Settings) -> list[int] | None:
    """The alert for health-history entry `history_id` when it made a device Bad; None when the
    entry is not there (yet: the change that made it may not be committed)."""
    entry = HealthHistory.get_or_none(HealthHistory.id == history_id)
    if entry is None:
        return None
    if entry.new_health != DeviceHealth.BAD:
        return []
    device = Device.get_by_id(entry.device_id)
    subject, event = f"device:{device.hostname}", f"health:{entry.id}"
    if rows.exists(subject, event):
        return rows.pending(subject, event)
    worker = Worker.get_or_none(Worker.id == device.worker_id) if device.worker_id else None
    text = alert_text(f"device {device.hostname} is Bad", [
        f"Reason:      {entry.reason}",
        f"Was:         {DeviceHealth(entry.old_health).label}",
        f"Device type: {device.device_type.name}",
        f"Worker:      {worker.hostname if worker else '-'}",
        f"Changed by:  {entry.actor} at {entry.time:%Y-%m-%d %H:%M:%S} UTC",
    ], settings, f"/api/v1/devices/{device.hostname}")
    return _make(subject, event, recipients([device], settings), text, settings, device.id)


def plan_offline(worker_id: int, settings: Settings) -> list[int]:
    """The alert for a worker that is Offline: to the admins and the owners of its devices."""
    worker = Worker.get_or_none(Worker.id == worker_id)
    if worker is None or worker.state != WorkerState.OFFLINE or worker.offline_since is None:
        return []
    subject, event = f"worker:{worker.hostname}", f"offline:{worker.offline_since.isoformat()}"
    if rows.exists(subject, event):
        return rows.pending(subject, event)
    devices = list(Device.select().where(Device.worker == worker, Device.health != DeviceHealth.RETIRED)
                   .order_by(Device.hostname))
    text = alert_text(f"worker {worker.hostname} is Offline", [
        f"Last heartbeat: {worker.last_ping:%Y-%m-%d %H:%M:%S} UTC" if worker.last_ping else "Last heartbeat: never",
        "Its devices get no jobs until it is back: " + (", ".join(d.hostname for d in devices) or "(none)"),
    ], settings, f"/api/v1/workers/{worker.hostname}")
    return _make(subject, event, recipients(devices, settings), text, settings)
