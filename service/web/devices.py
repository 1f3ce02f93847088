"""Device pages: the list (filters), one device (health history, jobs, dictionary for those who
may read it) and the admins' health change with a reason."""

from __future__ import annotations

from bottle import HTTPResponse, request

from .. import auth
from ..lab import devices, job_views
from ..models import DeviceType, HealthHistory, Worker
from ..states import DeviceHealth, DeviceState
from .plugin import WebRoutes, health_changes, need_admin, redirect, render, settings, web_user

routes = WebRoutes("/devices")
FILTERS = ("state", "health", "device_type", "worker")
HISTORY = 50
RECENT_JOBS = 20


@routes.get("")
def device_list() -> HTTPResponse:
    """Devices, filtered by state, health, device type and worker."""
    chosen = {key: (request.query.getunicode(key) or "").strip()[:200] for key in FILTERS}
    rows = devices.devices_json(devices.list_devices(**{k: v for k, v in chosen.items() if v}))
    types = [name for (name,) in DeviceType.select(DeviceType.name).order_by(DeviceType.name).tuples()]
    names = [name for (name,) in Worker.select(Worker.hostname).order_by(Worker.hostname).tuples()]
    return render("devices.html", title="Devices", rows=rows, chosen=chosen, types=types, workers=names,
                  states=DeviceState.labels(), healths=DeviceHealth.labels())


@routes.get("/<hostname>")
def device_page(hostname: str) -> HTTPResponse:
    """One device: its facts, health history with reasons, current and recent jobs, dictionary."""
    user = web_user()
    device = devices.get_device(hostname)
    history = list(HealthHistory.select().where(HealthHistory.device == device)
                   .order_by(HealthHistory.id.desc()).limit(HISTORY))
    recent = job_views.list_jobs(user, device=hostname).limit(RECENT_JOBS)
    may_read = auth.may_read_device(user, device)  # what GET .../dictionary answers
    return render("device.html", title=device.hostname, device=devices.device_json(device),
                  history=[devices.history_json(h) for h in history], jobs=job_views.jobs_json(list(recent)),
                  dictionary=device.dictionary if may_read else None, restricted=auth.is_restricted(device),
                  healths=DeviceHealth.labels())


@routes.post("/<hostname>/health")
def set_health(hostname: str) -> HTTPResponse:
    """An admin sets the device's health (Good, Maintenance, Retired...) with a reason."""
    user = need_admin()
    devices.update_device(hostname, health_changes(), settings(), user.username)
    return redirect(f"/devices/{hostname}#history")
