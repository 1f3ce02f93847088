"""8. A lab-scale simulation: 1,000 simulated devices on 100 simulated workers.

The real server and queue consumer (a lab from tests/labkit); the devices, workers and the
admin's setup over the REST admin API. Two load-generator processes (simload.py): REST
submitters at a steady rate above the target, and the 100 workers speaking the worker protocol
(long-poll listing their runs, fetch, Running, two log batches, finish), each job "running" for
a seeded random 1–30 s without QEMU. After a ramp-up (the longest job), a window is measured:
Finished per second (the server's end times), pickup, API latency, the CPU of serve, consumer
and the generators from /proc, and the server's peak RSS — for SQLite and PostgreSQL + Redis.
Beside them, from the same run: the offered rate and the lab's capacity (devices ÷ mean job
duration).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchlib import NOOP_DICTIONARY, Ctx, Section, epoch, md_table, noop_job, pct, redis_server, summary
from benchprof import rss_kb
from overhead import cpu_seconds

from dutlab.service.states import JobHealth, JobState
from labkit import Lab, LabError, free_port

KEY = "simulation"
TITLE = "Lab-scale simulation"
HERE = Path(__file__).resolve().parent
DEVICES, WORKERS = 1000, 100
#: server threads: 100 held long-polls (a poll may hold all but 8) and room for the API
THREADS = 128
#: PostgreSQL for this lab: each server thread keeps its own connection (service/plugins.py), so
#: 128 threads pass the shared cluster's max_connections (100); an admin sizes it for the lab
PG_MAX_CONNECTIONS = 300
PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: open loop: enough connections that the offered rate holds while each answer takes ~0.4 s
SUBMITTERS = 16


def _plan(quick: bool) -> dict:
    if quick:  # shorter jobs so that the short window sees a steady state
        return {"rate": 36.0, "min_s": 1.0, "max_s": 6.0, "ramp": 8.0, "window": 12.0}
    return {"rate": 36.0, "min_s": 1.0, "max_s": 30.0, "ramp": 32.0, "window": 75.0}


def _admin(call, *args, **fields):
    """One admin call, again after a 503: the PostgreSQL cluster is shared, its slots may run out."""
    for attempt in range(40):
        try:
            return call(*args, **fields)
        except LabError as exc:
            if "HTTP 503" not in str(exc) or attempt == 39:
                raise
            time.sleep(0.5)
    return None


def _setup(lab: Lab) -> list[dict]:
    """The admin's setup: a device type, 100 workers and the first device over the REST admin API
    (its dictionary validated there), then the other 999 as copies of it in one transaction, as the
    lab harness builds big labs (one REST call per device costs ~60 ms here, a minute per lab)."""
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database
    from dutlab.service.models import Device, Worker

    _admin(lab.add_device_type, "sim", template="qemu", disable_health_checks=True)
    workers = [{"name": f"simw{w:03d}", "token": _admin(lab.add_worker, f"simw{w:03d}")} for w in range(WORKERS)]
    _admin(lab.add_device, "sim0000", "sim", workers[0]["name"], NOOP_DICTIONARY, health="Good")
    per = DEVICES // WORKERS
    db = open_database(load(str(lab.config)).database)
    try:
        ids = dict(Worker.select(Worker.hostname, Worker.id).tuples())
        first = Device.select().where(Device.hostname == "sim0000").dicts().get()
        first.pop("id")
        rows = [{**first, "hostname": f"sim{i:04d}", "worker": ids[workers[i // per]["name"]]}
                for i in range(1, DEVICES)]
        with database.atomic():
            for k in range(0, len(rows), 200):
                Device.insert_many(rows[k:k + 200]).execute()
    finally:
        db.close()
        database.initialize(None)
    return workers


@contextmanager
def _postgres(ctx: Ctx) -> Iterator[str]:
    """A PostgreSQL 15 of this section's own (max_connections sized for the lab), on a free
    loopback port, in a temporary folder; stopped by PID and removed after. Its URL."""
    root = Path(tempfile.mkdtemp(prefix="dutlab-sim-pg-"))
    data, port = root / "data", free_port()
    try:
        shutil.chown(root, "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
        ctx.procs.spawn("sim-postgres", [
            "runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k",
            str(root), "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={PG_MAX_CONNECTIONS}"],
            root / "postgres.log")
        for _ in range(200):
            if subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "dutlab_sim"], check=True, capture_output=True, timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/dutlab_sim"
    finally:
        if "sim-postgres" in ctx.procs:
            ctx.procs.stop("sim-postgres", timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _spy(ctx: Ctx, name: str, pid: int, seconds: float, out: Path) -> bool:
    """Sample `pid` with py-spy over the window (the thread holding the GIL: what the CPU does)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return False
    ctx.procs.spawn(name, [spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "50", "--gil",
                           "--nonblocking", "-f", "raw", "-o", str(out)], out.with_suffix(".log"))
    return True


#: where serve's samples went, by the API module a stack passes through
SHARES = {"submissions (api/jobs.py)": "(service/api/jobs.py:",
          "worker API (api/internal.py)": "(service/api/internal.py:"}


def _spy_table(raw: Path, limit: int = 16) -> tuple[str, dict[str, float]]:
    """py-spy's raw stacks as the frames with the most samples under them (inclusive), and the
    share of samples in submissions and in the worker API."""
    counts: dict[str, int] = {}
    shares = dict.fromkeys(SHARES, 0)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        for frame in set(stack.split(";")):
            counts[frame] = counts.get(frame, 0) + int(n)
        for key, marker in SHARES.items():
            shares[key] += int(n) if marker in stack else 0
    rows = [(c, f) for f, c in counts.items() if c < total * 0.9 and "threading.py" not in f]
    rows.sort(reverse=True)
    table = "\n".join(f"{c / total * 100:5.1f}%  {f}" for c, f in rows[:limit]) if total else "(no samples)"
    return table, {k: v / total for k, v in shares.items()} if total else {}


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)[0]
        except OSError:
            out[name] = float("nan")
    return out


def _server_jobs(lab: Lab) -> dict[int, dict]:
    """Every job's server times, read from the database after the run (no load on the server)."""
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database
    from dutlab.service.models import TestJob

    db = open_database(load(str(lab.config)).database)
    try:
        rows = TestJob.select(TestJob.id, TestJob.state, TestJob.health, TestJob.submit_time, TestJob.start_time,
                              TestJob.end_time).tuples()
        return {r[0]: {"state": r[1], "health": r[2], "submit": epoch(_iso(r[3])), "start": epoch(_iso(r[4])),
                       "end": epoch(_iso(r[5]))} for r in rows}
    finally:
        db.close()
        database.initialize(None)


def _iso(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else value.isoformat()


def _simulate(ctx: Ctx, label: str, plan: dict, database: str = "", queue: str = "") -> dict:
    name = "sim-pg" if database else "sim-sqlite"
    lab = ctx.lab(name, database=database, queue=queue, threads=THREADS).start()
    gens = {"submitters": f"{name}-submit", "workers": f"{name}-workers"}
    try:
        t0 = time.monotonic()
        workers = _setup(lab)
        setup_s = time.monotonic() - t0
        print(f"  {label}: setup {setup_s:.1f} s; simulating for {plan['ramp'] + plan['window']:.0f} s", flush=True)
        (lab.root / "workers.json").write_text(json.dumps(workers))
        (lab.root / "job.yaml").write_text(noop_job(name="simulated", device_type="sim"))
        start_at = time.time() + 3  # both generators connected and waiting
        run_s = plan["ramp"] + plan["window"]
        common = [sys.executable, str(HERE / "simload.py"), "--url", lab.url, "--start-at", str(start_at)]
        ctx.procs.spawn(gens["workers"], [*common, "--role", "workers", "--duration", str(run_s + 1),
                                          "--workers-file", str(lab.root / "workers.json"),
                                          "--min-s", str(plan["min_s"]), "--max-s", str(plan["max_s"]),
                                          "--out", str(lab.root / "workers.out.json")], lab.root / "workers.log")
        # the submitters start 1 s after the workers: every worker Online first
        ctx.procs.spawn(gens["submitters"], [*common[:-1], str(start_at + 1), "--role", "submit",
                                             "--duration", str(run_s - 1), "--rate", str(plan["rate"]),
                                             "--connections", str(SUBMITTERS), "--auth", f"Token {lab.admin_token}",
                                             "--body-file", str(lab.root / "job.yaml"),
                                             "--out", str(lab.root / "submit.out.json")], lab.root / "submit.log")
        pids = {"serve": lab.pid("serve"), "consumer": lab.pid("consumer"),
                "submitters": ctx.procs.pid(gens["submitters"]), "workers": ctx.procs.pid(gens["workers"])}
        w0 = start_at + plan["ramp"]
        w1 = w0 + plan["window"]
        time.sleep(max(0.0, w0 - time.time()))
        spied = _spy(ctx, f"{name}-spy", pids["serve"], plan["window"], lab.root / "serve.spy.txt")
        cpu0, busy0, m0 = _cpu(pids), _machine_busy(), time.time()
        time.sleep(max(0.0, w1 - time.time()))
        cpu1, busy1, m1 = _cpu(pids), _machine_busy(), time.time()
        rss = {k: (rss_kb(pids[k], "VmHWM") or 0) / 1024 for k in ("serve", "consumer")}
        for key in gens.values():
            ctx.procs.popen(key).wait(60)
        got = {role: json.loads((lab.root / f"{out}.out.json").read_text())
               for role, out in (("submit", "submit"), ("workers", "workers"))}
        server = _server_jobs(lab)
        if spied:
            ctx.procs.popen(f"{name}-spy").wait(30)
        profile, shares = _spy_table(lab.root / "serve.spy.txt") if (lab.root / "serve.spy.txt").exists() else ("", {})
    finally:
        if f"{name}-spy" in ctx.procs:
            ctx.procs.stop(f"{name}-spy")
        for key in gens.values():
            if key in ctx.procs:
                ctx.procs.stop(key)
        lab.stop()
    cpu = {k: (cpu1[k] - cpu0[k]) / (m1 - m0) * 100 for k in pids}
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100 * (os.cpu_count() or 1)
    return {**_figures(label, plan, w0, w1, got, server, cpu, busy, rss, setup_s), "profile": profile, "shares": shares}


def _figures(label: str, plan: dict, w0: float, w1: float, got: dict, server: dict[int, dict], cpu: dict,
             busy: float, rss: dict, setup_s: float) -> dict:
    window = w1 - w0
    subs = got["submit"]["submissions"]  # [sent, answered, id, status, due]
    in_window = [s for s in subs if w0 <= s[0] < w1]
    ok = [s for s in in_window if s[2]]
    sim_jobs = {int(k): v for k, v in got["workers"]["jobs"].items()}
    finished = [j for j in server.values() if j["end"] and w0 <= j["end"] < w1]
    complete = [j for j in finished if j["health"] == JobHealth.COMPLETE]
    offered_lat, never = [], 0
    for sent, _, job_id, _, _ in ok:
        sim = sim_jobs.get(job_id)
        if sim:
            offered_lat.append(sim["offered"] - sent)
        else:
            never += 1
    server_pickup = [server[s[2]]["start"] - server[s[2]]["submit"] for s in ok
                     if s[2] in server and server[s[2]]["start"]]
    not_running = len(ok) - len(server_pickup)
    calls = got["workers"]["calls"]
    worker_calls = [x for k in ("fetch", "state", "logs", "finish") for x in calls[k]]
    durations = [j["duration"] for j in sim_jobs.values()]
    queueing = [j["picked"] - j["offered"] for j in sim_jobs.values() if "picked" in j]
    mean_s = (plan["min_s"] + plan["max_s"]) / 2
    return {
        "label": label, "window": window, "setup_s": setup_s, "planned": plan["rate"],
        "offered": len(in_window) / window, "accepted": len(ok) / window,
        "submit_errors": len(in_window) - len(ok), "submit_error_sample": got["submit"]["errors"][:2],
        "lag_p99": pct([s[0] - s[4] for s in in_window], 99) if in_window else None,
        "lifecycles": len(finished) / window, "complete": len(complete) / window,
        "capacity": DEVICES / mean_s, "mean_drawn": sum(durations) / len(durations) if durations else None,
        "pickup_offered": summary(offered_lat) if offered_lat else None, "never_offered": never,
        "pickup_server": summary(server_pickup) if server_pickup else None, "not_running": not_running,
        "submit_latency": summary([s[1] - s[0] for s in ok]) if ok else None,
        "worker_calls": summary(worker_calls) if worker_calls else None,
        "generator_queueing": summary(queueing) if queueing else None,
        "calls": {k: summary(v) for k, v in calls.items() if v},
        "polls": got["workers"]["polls"], "worker_errors": got["workers"]["errors"][:3],
        "cpu": cpu, "machine_busy": busy, "rss_mb": rss,
        "queued_at_end": sum(1 for j in server.values() if j["state"] in (JobState.SUBMITTED, JobState.SCHEDULING)),
    }


def _report(sec: Section, r: dict) -> None:
    lab = r["label"]
    p = r["pickup_offered"] or {}
    ps = r["pickup_server"] or {}
    sec.add(f"{lab}: full job lifecycles (Finished/s in the window)", r["lifecycles"], "jobs/s", ">= 30",
            note=f"submissions sent {r['offered']:.1f}/s of {r['planned']:g}/s planned, capacity "
                 f"{r['capacity']:.0f}/s")
    sec.add(f"{lab}: pickup, submit → the simulated worker has it, p99", p.get("p99"), "s", "<= 1")
    sec.add(f"{lab}: pickup, submit → Running (server times), p99", ps.get("p99"), "s", "<= 1")
    sec.add(f"{lab}: server CPU (serve + consumer)", r["cpu"]["serve"] + r["cpu"]["consumer"], "% of one core",
            note=f"generators {r['cpu']['submitters'] + r['cpu']['workers']:.0f} %; machine "
                 f"{r['machine_busy']:.0f} % of {(os.cpu_count() or 1) * 100} %")
    per_job = (r["cpu"]["serve"] + r["cpu"]["consumer"]) * 10 / r["lifecycles"] if r["lifecycles"] else None
    sec.add(f"{lab}: server CPU per full job lifecycle", per_job, "ms",
            note="implied ceiling with `serve` alone on one core (its GIL): "
                 f"{100 / (r['cpu']['serve'] / r['lifecycles']):.0f} jobs/s" if r["lifecycles"] and r["cpu"]["serve"]
            else "")
    share = r["shares"].get("submissions (api/jobs.py)")
    if share is not None and r["accepted"]:
        sec.add(f"{lab}: serve CPU per submission (py-spy share of serve's CPU)",
                r["cpu"]["serve"] * 10 * share / r["accepted"], "ms",
                note=f"submissions {share * 100:.0f} %, worker API "
                     f"{r['shares'].get('worker API (api/internal.py)', 0) * 100:.0f} % of serve's samples")
    for what, key in (("submissions", "submit_latency"), ("worker calls", "worker_calls")):
        sec.add(f"{lab}: API latency, {what}, p99", (r[key] or {}).get("p99"), "s")
    c = r["cpu"]
    f = lambda d, k: d.get(k) if d else None  # noqa: E731
    rows = [
        ["offered rate: submissions sent in the window", f"{r['offered']:.1f} jobs/s",
         f"planned {r['planned']:g} jobs/s on {SUBMITTERS} connections (each waits for its answer)"],
        ["submissions accepted (201)", f"{r['accepted']:.1f} jobs/s", f"{r['submit_errors']} refused or failed"],
        ["full lifecycles: Finished in the window", f"{r['lifecycles']:.1f} jobs/s",
         f"{r['lifecycles'] / r['offered'] * 100:.0f} % of offered" if r["offered"] else ""],
        ["… of which Complete", f"{r['complete']:.1f} jobs/s", ""],
        ["lab capacity = devices ÷ mean job duration", f"{r['capacity']:.0f} jobs/s",
         f"offered ÷ capacity = {r['offered'] / r['capacity'] * 100:.0f} % utilisation"],
        ["pickup: submit → worker has it, p50 / p99", f"{f(p, 'p50'):.3f} / {f(p, 'p99'):.3f} s" if p else "—",
         f"{r['never_offered']} submitted in the window never offered"],
        ["pickup: submit → Running (server), p50 / p99", f"{f(ps, 'p50'):.3f} / {f(ps, 'p99'):.3f} s" if ps else "—",
         f"{r['not_running']} never Running; {r['queued_at_end']} queued at the end"],
        ["submission latency p50 / p99",
         f"{f(r['submit_latency'], 'p50'):.3f} / {f(r['submit_latency'], 'p99'):.3f} s" if r["submit_latency"]
         else "—", f"submitter lag p99 {r['lag_p99'] or 0:.3f} s behind plan"],
        ["worker calls (fetch, state, logs, finish) p50 / p99",
         f"{f(r['worker_calls'], 'p50'):.3f} / {f(r['worker_calls'], 'p99'):.3f} s" if r["worker_calls"]
         else "—", f"{r['polls']['count']} polls ({r['polls']['short']} not held: no slot free), "
                   f"{r['polls']['errors']} failed"],
        ["CPU serve / consumer", f"{c['serve']:.0f} / {c['consumer']:.0f} % of one core",
         f"machine {r['machine_busy']:.0f} % of {(os.cpu_count() or 1) * 100} % (other sessions included)"],
        ["generator: offered → its first job call starts, p99",
         f"{r['generator_queueing']['p99']:.3f} s" if r["generator_queueing"] else "—",
         "the simulated workers' own queueing (call pool)"],
        ["CPU generators: submitters / workers", f"{c['submitters']:.0f} / {c['workers']:.0f} % of one core",
         "what the load generator took from the server's cores"],
        ["peak RSS serve / consumer", f"{r['rss_mb']['serve']:.0f} / {r['rss_mb']['consumer']:.0f} MB", "VmHWM"],
        ["setup (not in the figures)", f"{r['setup_s']:.1f} s", f"{WORKERS} workers, {DEVICES} devices"],
    ]
    calls = [[k, v["n"], v["p50"], v["p90"], v["p99"], v["max"]] for k, v in r["calls"].items()]
    sec.tables.append(f"{lab}, a {r['window']:.0f} s window:\n\n" + md_table(["figure", "measured", "beside it"], rows)
                      + "\n\nWorker calls by kind over the whole run (seconds; `poll` includes held long-polls):\n\n"
                      + md_table(["call", "n", "p50", "p90", "p99", "max"], calls))
    if r["profile"]:
        sec.profiles.append(f"{lab}: `serve` over the window, py-spy --gil (the thread holding the GIL), samples "
                            f"under each frame\n{r['profile']}")
    if r["submit_errors"] or r["worker_errors"]:
        sec.note(f"{lab}: errors: submissions {r['submit_error_sample']}, workers {r['worker_errors']}")


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    plan = _plan(ctx.quick)
    results = [_simulate(ctx, "SQLite", plan)]
    _report(sec, results[0])
    ok, why = True, ""
    if not (PG_BIN / "postgres").exists() or not shutil.which("redis-server"):
        ok, why = False, f"needs {PG_BIN / 'postgres'} and redis-server"
    if ok:
        try:
            with _postgres(ctx) as url, redis_server(ctx, ctx.work / "sim-redis") as redis:
                results.append(_simulate(ctx, "PostgreSQL + Redis", plan, url, redis))
            _report(sec, results[-1])
        except Exception as exc:  # noqa: BLE001 - keep SQLite's figures; the shared cluster may be full
            ok, why = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    if not ok:
        sec.not_measured("PostgreSQL + Redis: full job lifecycles (Finished/s in the window)", why, ">= 30",
                         "jobs/s")
    sec.data = {"plan": plan, "results": results}
    sec.note(f"{DEVICES} devices on {WORKERS} workers, jobs of {plan['min_s']:g}–{plan['max_s']:g} s (seeded), "
             f"{SUBMITTERS} REST submitters at {plan['rate']:g} jobs/s, ramp {plan['ramp']:g} s, window "
             f"{plan['window']:g} s; server threads {THREADS}. Client and server times share this machine's clock.")
    return sec
