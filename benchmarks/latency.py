"""3b. Tail latency of GETs at 100 concurrent keep-alive clients, SQLite and PostgreSQL.

A lab with a realistic device list (device types, workers, owners, tags, a Bad device with its
history) is served by the real `dutlab-server serve`; 100 keep-alive clients (4 loadgen.py
processes of 25 threads, connected before the clock starts) each send one GET after another for
a fixed window: the trivial GET /api/v1/system/version (the baseline: the HTTP stack, the plugins,
one token lookup) and GET /api/v1/devices (the list, every device on one page). p50/p99 are of
every answer in the window. The clients are closed-loop (the next request when the last is
answered), so by Little's law the mean latency is 100 / rate: what bounds p99 is the server's
cost per request (measured in process beside it, with its query count and a profile) and the
cores the server and the 100 clients share.
"""

from __future__ import annotations

import cProfile
import json
import sys
import time
from pathlib import Path

from benchlib import Ctx, Section, md_table, pct
from benchprof import in_process_server, top_frames

from dutlab.service.config import Settings
from labkit import Lab, pg_available, pg_database

KEY = "latency"
TITLE = "GET latency at 100 concurrent clients"
CLIENTS = 100
TARGET_MS = 150
HERE = Path(__file__).resolve().parent
DEVICES_PATH = "/api/v1/devices?limit=100"
PATHS = {"version": "/api/v1/system/version", "devices": DEVICES_PATH}


def populate(lab: Lab, devices: int) -> None:
    """`devices` devices of 4 types on 10 workers, with owners, tags and some Bad ones (over REST)."""
    for t in range(4):
        lab.add_device_type(f"bench-type{t}", template="qemu", disable_health_checks=True)
    for w in range(10):
        lab.add_worker(f"bench-w{w}")
    lab.manage("groups", "add", "bench-team")
    for n in range(devices):
        lab.add_device(f"bench{n:03d}", f"bench-type{n % 4}", f"bench-w{n % 10}",
                       "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n",
                       description=f"bench device {n}", tags=[f"rack{n % 5}", "bench"],
                       health="Bad" if n % 17 == 0 else "Good",
                       **({"owner_group": "bench-team"} if n % 3 == 0 else {}))


def load(ctx: Ctx, lab: Lab, path: str, duration: float, processes: int = 4) -> dict:
    """`CLIENTS` keep-alive clients GETting `path` for `duration` s: rate, p50/p99 ms, errors."""
    start_at = time.time() + 2.0  # every process is up and connected by then
    names = [f"latency-{lab.root.name}-{path.split('?')[0].rsplit('/', 1)[-1]}-{i}" for i in range(processes)]
    for name in names:
        ctx.procs.spawn(name, [sys.executable, str(HERE / "loadgen.py"), "--url", lab.url, "--mode", "get",
                               "--path", path, "--threads", str(CLIENTS // processes), "--start-at", str(start_at),
                               "--duration", str(duration), "--auth", f"Token {lab.admin_token}"],
                        lab.root / f"{name}.out")
    answers: list[dict] = []
    for name in names:
        ctx.procs.popen(name).wait(duration + 90)
        ctx.procs.stop(name)
        lines = (lab.root / f"{name}.out").read_text().strip().splitlines()
        answers.append(json.loads(lines[-1]) if lines else {"count": 0, "errors": 1, "latencies": [],
                                                            "error_sample": [f"{name} printed nothing"]})
    latencies = [x for a in answers for x in a["latencies"]]
    return {"rate": sum(a["count"] for a in answers) / duration, "errors": sum(a["errors"] for a in answers),
            "error_sample": [e for a in answers for e in a["error_sample"]][:1],
            "p50_ms": pct(latencies, 50) * 1000 if latencies else None,
            "p99_ms": pct(latencies, 99) * 1000 if latencies else None}


def per_request(config: Path, n: int) -> dict:
    """In this process, without HTTP: ms per request (the best of 5 rounds) and queries per request of
    each GET, then a profile of the device list."""
    from dutlab.service.auth import create_token
    from dutlab.service.db import database
    from dutlab.service.models import User

    out: dict = {}
    with in_process_server(config) as call:
        _, secret = create_token(User.get(User.username == "admin"), "bench-latency")
        auth = f"Token {secret}"
        real = database.obj.execute_sql
        queries: list[str] = []

        def counted(sql, params=None, *args, **kwargs):
            queries.append(sql)
            return real(sql, params, *args, **kwargs)

        def loop(path: str, times: int) -> float:
            t0 = time.perf_counter()
            for _ in range(times):
                status, answer = call("GET", path, auth=auth)
                if not status.startswith("200"):
                    raise RuntimeError(f"in-process GET {path}: {status} {answer[:200]!r}")
            return time.perf_counter() - t0

        for key, path in PATHS.items():
            loop(path, 3)  # warm: the connection, the token's last-used write
            # the best of 5 rounds: other work on these cores only ever adds time
            out[f"{key}_ms"] = min(loop(path, n // 5) for _ in range(5)) / (n // 5) * 1000
            database.obj.execute_sql = counted
            try:
                loop(path, 1)
            finally:
                del database.obj.execute_sql
            out[f"{key}_queries"] = len(queries)
            queries.clear()
        prof = cProfile.Profile()
        prof.runcall(loop, DEVICES_PATH, n)
        out["profile"] = top_frames(prof, 25) + "\n\nby own time:\n" + top_frames(prof, 15, "tottime")
    return out


def run_backend(ctx: Ctx, sec: Section, backend: str, database: str, devices: int, duration: float) -> dict:
    lab = ctx.lab(f"latency-{backend.split()[0].lower()}", database=database).start()
    try:
        populate(lab, devices)
        listed = lab.json("GET", DEVICES_PATH)["results"]
        assert len(listed) == devices, f"the list shows {len(listed)} of {devices} devices"
        got = {}
        for key, path in PATHS.items():
            got[key] = load(ctx, lab, path, duration)
            if got[key]["errors"]:
                sec.note(f"{backend}, GET {path}: {got[key]['errors']} errors, e.g. {got[key]['error_sample']}")
        counts = (8, 64) if ctx.quick else (4, 8, 16, 64)
        # PostgreSQL: a connection per server thread, beside other users of max_connections (100)
        sweep = threads_sweep(ctx, lab, tuple(n for n in counts if n <= 32 or not database.startswith("postgres")),
                              duration)
    finally:
        lab.stop()
    inproc = per_request(lab.config, 50 if ctx.quick else 200)
    for key, what in (("version", "GET /api/v1/system/version (baseline)"),
                      ("devices", f"GET /api/v1/devices ({devices} devices)")):
        r = got[key]
        sec.add(f"{what} p99, {CLIENTS} clients, {backend}", r["p99_ms"], "ms", f"<= {TARGET_MS}")
        sec.add(f"{what} p50, {CLIENTS} clients, {backend}", r["p50_ms"], "ms")
        sec.add(f"{what} rate, {CLIENTS} clients, {backend}", r["rate"], "req/s",
                note=f"in process {inproc[key + '_ms']:.2f} ms and {inproc[key + '_queries']} queries a request")
    sec.profiles.append(f"GET {DEVICES_PATH} in process, {backend} ({devices} devices)\n{inproc['profile']}")
    default = Settings().threads
    sweep.setdefault(default, got)
    rows = [[f"{n}" + (" (default)" if n == default else ""),
             *(f"{sweep[n][k]['p50_ms']:.0f} / {sweep[n][k]['p99_ms']:.0f}" for k in PATHS),
             *(f"{sweep[n][k]['rate']:.0f}" for k in PATHS)] for n in sorted(sweep)]
    sec.tables.append(f"{backend}: server `threads` against p50 / p99 ms and req/s, {CLIENTS} clients\n\n"
                      + md_table(["threads", *(f"{p} p50/p99" for p in PATHS.values()),
                                  *(f"{p} req/s" for p in PATHS.values())], rows))
    return {"load": got, "in_process": {k: v for k, v in inproc.items() if k != "profile"},
            "threads": {str(n): v for n, v in sweep.items()}}


def threads_sweep(ctx: Ctx, lab: Lab, counts: tuple[int, ...], duration: float) -> dict[int, dict]:
    """The same GETs with `serve` restarted on other `threads` settings (the lab's data kept)."""
    import yaml

    original = lab.config.read_text()
    out: dict[int, dict] = {}
    try:
        for n in counts:
            lab.config.write_text(yaml.safe_dump({**yaml.safe_load(original), "threads": n}))
            lab.restart("serve")
            out[n] = {key: load(ctx, lab, path, duration) for key, path in PATHS.items()}
    finally:
        lab.config.write_text(original)
    return out


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    devices, duration = (50, 3.0) if ctx.quick else (75, 8.0)
    rows = []
    backends = [("SQLite", "")]
    ok, why = pg_available()
    for backend, database in backends + ([("PostgreSQL", None)] if ok else []):
        if database is None:
            with pg_database() as url:
                sec.data[backend] = run_backend(ctx, sec, backend, url, devices, duration)
        else:
            sec.data[backend] = run_backend(ctx, sec, backend, database, devices, duration)
        for key in PATHS:
            r, inproc = sec.data[backend]["load"][key], sec.data[backend]["in_process"]
            rows.append([backend, PATHS[key], r["rate"], r["p50_ms"], r["p99_ms"], inproc[key + "_ms"],
                         inproc[key + "_queries"]])
    if not ok:
        sec.not_measured(f"GET p99, {CLIENTS} clients, PostgreSQL", why, f"<= {TARGET_MS}", "ms")
    sec.tables.append(md_table(["database", "GET", "req/s", "p50 ms", "p99 ms", "in process ms", "queries"], rows))
    sec.note(f"{CLIENTS} closed-loop keep-alive clients in 4 processes on the same cores as the server, "
             f"{duration:.0f} s a figure; mean latency = {CLIENTS} / rate (Little's law)")
    return sec


if __name__ == "__main__":
    sys.exit("run through benchmarks/run.py --only latency")
