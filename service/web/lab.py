"""Device-type and worker pages, and the admins' worker health change (Maintenance, Active...)."""

from __future__ import annotations

from bottle import HTTPResponse

from ..lab import device_types, devices, job_views, workers
from ..models import Device, TestJob
from ..states import WorkerHealth
from .plugin import WebRoutes, health_changes, need_admin, redirect, render, settings, web_user

routes = WebRoutes()
RECENT_JOBS = 20


@routes.get("/device-types")
def device_type_list() -> HTTPResponse:
    """Device types with their health-check frequency and devices."""
    rows = device_types.device_types_json(device_types.list_device_types(), full=False)
    return render("device_types.html", title="Device types", rows=rows)


@routes.get("/device-types/<name>")
def device_type_page(name: str) -> HTTPResponse:
    """One device type: its health-check definition and frequency, its devices."""
    dtype = device_types.get_device_type(name)
    check, source = device_types.health_check_text(name, settings())
    rows = devices.devices_json(devices.list_devices(device_type=name))
    return render("device_type.html", title=name, dtype=device_types.device_type_json(dtype, full=False),
                  health_check=check, source=source, devices=rows)


@routes.get("/workers")
def worker_list() -> HTTPResponse:
    """Workers with their state, health and last ping."""
    rows = workers.workers_json(workers.list_workers(), devices=False)
    return render("workers.html", title="Workers", rows=rows)


@routes.get("/workers/<name>")
def worker_page(name: str) -> HTTPResponse:
    """One worker: its devices and recent jobs."""
    worker = workers.get_worker(name)
    rows = devices.devices_json(list(Device.select().where(Device.worker == worker).order_by(Device.hostname)))
    recent = job_views.list_jobs(web_user()).where(TestJob.worker == worker.id).limit(RECENT_JOBS)
    return render("worker.html", title=name, worker=workers.worker_json(worker, devices=False), devices=rows,
                  jobs=job_views.jobs_json(list(recent)), healths=WorkerHealth.labels())


@routes.post("/workers/<name>/health")
def set_worker_health(name: str) -> HTTPResponse:
    """An admin puts the worker in Maintenance (or back to Active, or Retired) with a reason."""
    user = need_admin()
    workers.update_worker(name, health_changes(), user.username)
    return redirect(f"/workers/{name}")
