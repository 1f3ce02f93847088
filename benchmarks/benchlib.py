"""What every benchmark section shares: figures and sections of the report, statistics, the
section context (`Ctx`, whose labs come from labkit), the jobs they submit, and `FakeWorker`.

The lab itself (server, consumer, workers, devices, HTTP client, PostgreSQL databases) is the
test suite's harness, tests/labkit: every process it starts is stopped by PID (its own process
group and what it started), in a `finally`; nothing here ever kills by name.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labkit import Client, Lab, Procs, free_port, smoke_job

# -- results ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, with its target when it has one."""

    name: str
    value: float | None
    unit: str = ""
    target: str = ""  # e.g. "<= 1.0"
    ok: bool | None = None  # None: no target (context figure)
    note: str = ""

    def status(self) -> str:
        if self.value is None:
            return "NOT MEASURED"
        if self.ok is None:
            return ""
        return "PASS" if self.ok else "MISS"


@dataclass
class Section:
    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # pre-rendered markdown tables
    profiles: list[str] = field(default_factory=list)  # "title\n<top frames>"
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers for report.json
    seconds: float = 0.0
    error: str = ""

    def add(self, name: str, value: float | None, unit: str = "", target: str | None = None,
            note: str = "") -> Figure:
        """Add a figure; `target` like '<= 0.1' or '>= 600' sets PASS/MISS."""
        ok = None
        if target and value is not None:
            op, _, bound = target.partition(" ")
            ok = value <= float(bound) if op == "<=" else value >= float(bound)
        fig = Figure(name, value, unit, target or "", ok, note)
        self.figures.append(fig)
        print(f"  {name}: {fmt(value)} {unit}" + (f"  (target {target} {unit}: {fig.status()})" if target else "")
              + (f"  [{note}]" if note else ""), flush=True)
        return fig

    def not_measured(self, name: str, why: str, target: str = "", unit: str = "") -> None:
        self.figures.append(Figure(name, None, unit, target, None, f"not measured: {why}"))
        print(f"  {name}: not measured: {why}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 1000:
        return f"{value:,.0f}"
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        raise ValueError("no values")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "p50": pct(values, 50), "p90": pct(values, 90),
            "p99": pct(values, 99), "max": max(values), "mean": statistics.fmean(values)}


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(fmt(c) if isinstance(c, float) else str(c) for c in row) + " |")
    return "\n".join(out)


# -- jobs -------------------------------------------------------------------------------------


def standard_job_text() -> tuple[str, str]:
    """(definition, where from): examples/jobs/qemu-smoke.yaml with the local assets."""
    return smoke_job(), "examples/jobs/qemu-smoke.yaml"


def noop_job(name: str = "bench noop", tags: list[str] | None = None, priority: str = "medium",
             device_type: str = "qemu") -> str:
    """A job that runs `true` on the worker (a `command` action; the device needs NOOP_DICTIONARY)."""
    job = {
        "device_type": device_type,
        "job_name": name,
        "priority": priority,
        "visibility": "public",
        "timeouts": {"job": {"minutes": 5}, "action": {"minutes": 1}},
        "actions": [{"command": {"name": "noop"}}],
    }
    if tags:
        job["tags"] = tags
    return yaml.safe_dump(job, sort_keys=False)


NOOP_DICTIONARY = "{% extends 'qemu.jinja2' %}\n{% set user_commands = {'noop': {'do': 'true'}} %}\n"


# -- acting as a worker through the worker API --------------------------------------------------


class FakeWorker:
    """Speaks the worker API (docs/worker-api.md) like dutlab-worker + dutlab-run, without running
    anything: isolates the server's share of pickup and hand-back latency."""

    def __init__(self, url: str, name: str, token: str) -> None:
        self.url = url
        self.name = name
        self.client = Client(url, f"Worker {token}")

    def poll(self, running: list[int] | None = None, wait: float = 0) -> dict:
        return self.client.json("POST", f"/internal/v1/workers/{self.name}/poll",
                                {"protocol": 1, "version": "bench", "running": running or [], "wait": wait})

    def take(self, timeout: float = 30, wait: float = 20) -> list[tuple[int, str]]:
        """Long-poll until the server offers jobs; [(id, token)]."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.poll([], min(wait, max(0.0, deadline - time.monotonic())))
            if answer["start"]:
                return [(s["id"], s["token"]) for s in answer["start"]]
        return []

    def job(self, job_id: int, token: str) -> Client:
        return Client(self.url, f"Job {token}")

    def close(self) -> None:
        self.client.close()


def log_record(msg: str, lvl: str = "target", dt: str | None = None) -> str:
    from datetime import UTC, datetime

    return json.dumps({"dt": dt or datetime.now(UTC).isoformat(), "lvl": lvl, "msg": msg})


def epoch(iso: str | None) -> float | None:
    """Server times ('...Z', naive UTC) and log 'dt' ('...+00:00') as epoch seconds."""
    from datetime import UTC, datetime

    if not iso:
        return None
    value = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def read_log(lab: Lab, job_id: int, start: int = 0) -> list[dict]:
    client = lab.client()
    try:
        _, _, raw = client.request("GET", f"/api/v1/jobs/{job_id}/logs?start={start}")
    finally:
        client.close()
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("- "):
            try:
                out.append(json.loads(line[2:]))
            except ValueError:
                pass
    return out


# -- what every section gets ------------------------------------------------------------------------


@dataclass
class Ctx:
    quick: bool
    procs: Procs  # what a section starts besides labs (load generators); stopped after each section
    work: Path
    shared: dict[str, Any] = field(default_factory=dict)

    def lab(self, name: str, database: str = "", queue: str = "", **settings: Any) -> Lab:
        """A bootstrapped lab (not started) in work/<name>; quiet logs, so logging costs little."""
        root = self.work / name
        shutil.rmtree(root, ignore_errors=True)
        lab = Lab.create(root, database=database, queue=queue, settings=settings, log_level="WARNING",
                         worker_args=("--level", "WARNING"))
        lab.bootstrap(description="bench")
        return lab


def qemu_lab(ctx: Ctx, name: str, *, health_check: bool = False, timeout: float = 180) -> tuple[Lab, dict]:
    """A started lab with one QEMU device `qemu01` on the real worker `w1`, device Good.

    health_check=True: the device starts Unknown and passes the shipped health check first (a
    warm-up: page cache, first QEMU start). Else health checks are disabled.
    """
    lab = ctx.lab(name).start()
    try:
        device = lab.qemu_device_ready("qemu01", "w1", health_check=health_check, timeout=timeout)
    except BaseException:
        lab.stop()
        raise
    return lab, {"device": device, "worker": lab.json("GET", "/api/v1/workers/w1")}


@contextmanager
def redis_server(ctx: Ctx, root: Path):
    """A Redis of this section's own on a free loopback port, no persistence; its URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    ctx.procs.spawn(f"redis-{root.name}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], root / "redis.log")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        ctx.procs.stop(f"redis-{root.name}")
