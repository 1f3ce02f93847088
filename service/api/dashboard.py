"""A small HTML dashboard (devices, workers, recent jobs) and Prometheus /metrics."""

from __future__ import annotations

import html

from bottle import HTTPResponse
from peewee import fn

from ..auth import may_view_job
from ..models import Device, DeviceType, TestJob, Worker
from ..plugins import current_user
from ..states import DeviceHealth, DeviceState, JobHealth, JobState, WorkerHealth, WorkerState
from . import Routes

routes = Routes()

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>dutlab</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.Good,.Complete{{color:#080}}
.Bad,.Incomplete{{color:#b00}}</style></head><body><h1>dutlab lab</h1>
<h2>Devices</h2><table><tr><th>hostname</th><th>type</th><th>worker</th><th>state</th><th>health</th>
<th>job</th></tr>{devices}</table>
<h2>Workers</h2><table><tr><th>hostname</th><th>state</th><th>health</th><th>version</th><th>last ping</th></tr>
{workers}</table>
<h2>Recent jobs</h2><table><tr><th>id</th><th>description</th><th>type</th><th>device</th><th>state</th>
<th>health</th><th>submitter</th></tr>{jobs}</table>
<p><a href="/api/v1/openapi.json">API</a> · <a href="/metrics">metrics</a></p></body></html>"""


def _row(*cells: object, cls: str = "") -> str:
    return "<tr>" + "".join(f'<td class="{html.escape(str(c))}">{html.escape(str(c))}</td>' for c in cells) + "</tr>"


@routes.get("/")
def dashboard() -> HTTPResponse:
    """The lab at a glance."""
    devices = "".join(
        _row(d.hostname, d.device_type.name, d.worker.hostname if d.worker else "-", DeviceState(d.state).label,
             DeviceHealth(d.health).label, d.current_job_id or "")
        for d in Device.select().join(DeviceType).order_by(Device.hostname)
    )
    workers = "".join(
        _row(w.hostname, WorkerState(w.state).label, WorkerHealth(w.health).label, w.version, w.last_ping or "")
        for w in Worker.select().order_by(Worker.hostname)
    )
    user = current_user()
    recent = [j for j in TestJob.select().order_by(TestJob.id.desc()).limit(50) if may_view_job(user, j)]
    jobs = "".join(
        _row(j.sub_id or j.id, j.description + (f" ({j.role})" if j.role else ""), j.requested_device_type.name,
             j.actual_device.hostname if j.actual_device_id else "-", JobState(j.state).label,
             JobHealth(j.health).label, j.submitter.username)
        for j in recent
    )
    body = PAGE.format(devices=devices, workers=workers, jobs=jobs)
    return HTTPResponse(body, headers={"Content-Type": "text/html; charset=utf-8"})


def _gauge(name: str, help_text: str, samples: list[tuple[dict, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
    return lines


@routes.get("/metrics")
def metrics() -> HTTPResponse:
    """Prometheus metrics: jobs by state, devices by state/health, workers by state."""
    jobs = dict(TestJob.select(TestJob.state, fn.COUNT(TestJob.id)).group_by(TestJob.state).tuples())
    health = dict(TestJob.select(TestJob.health, fn.COUNT(TestJob.id))
                  .where(TestJob.state == JobState.FINISHED).group_by(TestJob.health).tuples())
    devices = (Device.select(Device.state, Device.health, fn.COUNT(Device.id))
               .group_by(Device.state, Device.health).tuples())
    workers = dict(Worker.select(Worker.state, fn.COUNT(Worker.id)).group_by(Worker.state).tuples())
    out = []
    out += _gauge("dutlab_jobs", "Test jobs by state.",
                  [({"state": s.label}, jobs.get(s, 0)) for s in JobState])
    out += _gauge("dutlab_jobs_finished", "Finished test jobs by health.",
                  [({"health": h.label}, health.get(h, 0)) for h in JobHealth])
    out += _gauge("dutlab_devices", "Devices by state and health.",
                  [({"state": DeviceState(s).label, "health": DeviceHealth(h).label}, n) for s, h, n in devices])
    out += _gauge("dutlab_workers", "Workers by state.",
                  [({"state": s.label}, workers.get(s, 0)) for s in WorkerState])
    return HTTPResponse("\n".join(out) + "\n", headers={"Content-Type": "text/plain; version=0.0.4"})
