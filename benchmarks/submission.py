"""3. Submission rate: jobs/s accepted over REST and XML-RPC by 1, 4 and 16 concurrent clients,
beside the durable-commit ceiling and the HTTP ceiling at the same concurrency (issue 17, scope 1).

The job is the standard QEMU job (full validation: schema, device type, tags, owners). Its device
exists but its worker is offline, so jobs stay queued while the queue consumer runs the scheduling
pass each submission triggers (as in production). Clients are separate processes (loadgen.py,
keep-alive connections) on the same 2 cores as the server. Baseline: GET /api/v1/system/version
through the same server, harness and concurrency — the local ceiling of the WSGI stack.
Then one submission path is profiled in-process (cProfile, the app called through WSGI).
"""

from __future__ import annotations

import base64
import cProfile
import json
import statistics
import sys
import time
import xmlrpc.client
from pathlib import Path

from benchlib import Ctx, Section, md_table, pct, standard_job_text
from benchprof import RssSampler, in_process_server, top_frames
from ceiling import commit_ceiling

from labkit import BIN, QEMU_DICTIONARY, Lab, pg_available, pg_database
from labkit.backends import sqlite_urls

KEY = "submission"
TITLE = "Submission rate"
HERE = Path(__file__).resolve().parent


def rpc_available(lab: Lab) -> tuple[bool, str]:
    client = lab.client()
    body = xmlrpc.client.dumps((), "system.listMethods")
    try:
        status, _, raw = client.request("POST", "/RPC2", body, ctype="text/xml", auth=_basic(lab), expect=())
    finally:
        client.close()
    if status == 404:
        return False, "/RPC2 is not served yet (api/rpc2.py is being written)"
    if status != 200:
        return False, f"/RPC2 answered HTTP {status}"
    try:
        methods = xmlrpc.client.loads(raw)[0][0]
    except (xmlrpc.client.Fault, xmlrpc.client.ResponseError, IndexError) as exc:
        return False, f"/RPC2 system.listMethods failed: {exc}"
    if "scheduler.jobs.submit" not in methods:
        return False, "/RPC2 has no scheduler.jobs.submit yet"
    return True, ""


def _basic(lab: Lab) -> str:
    return "Basic " + base64.b64encode(f"admin:{lab.admin_token}".encode()).decode()


def measure(ctx: Ctx, lab: Lab, mode: str, clients: int, duration: float, body: Path | None) -> dict:
    nproc = min(clients, 4)
    per = clients // nproc
    start_at = time.time() + 1.5
    names = []
    for i in range(nproc):
        name = f"loadgen-{mode}-{clients}-{i}-{lab.root.name}"
        argv = [sys.executable, str(HERE / "loadgen.py"), "--url", lab.url, "--mode", mode, "--threads", str(per),
                "--start-at", str(start_at), "--duration", str(duration),
                "--auth", _basic(lab) if mode == "rpc" else f"Token {lab.admin_token}"]
        if body:
            argv += ["--body-file", str(body)]
        ctx.procs.spawn(name, argv, lab.root / f"{name}.out")
        names.append(name)
    count = errors = 0
    lat: list[float] = []
    sample = []
    for name in names:
        proc = ctx.procs.popen(name)
        proc.wait(duration + 90)
        ctx.procs.stop(name)
        text = (lab.root / f"{name}.out").read_text().strip().splitlines()
        out = json.loads(text[-1]) if text else {"count": 0, "errors": 0, "latencies": [], "error_sample": []}
        count += out["count"]
        errors += out["errors"]
        lat += out["latencies"]
        sample += out["error_sample"]
    return {"mode": mode, "clients": clients, "rate": count / duration, "count": count, "errors": errors,
            "p50_ms": pct(lat, 50) * 1000 if lat else None, "p99_ms": pct(lat, 99) * 1000 if lat else None,
            "error_sample": sample[:1]}


def commit_counts(lab: Lab) -> tuple[float, float] | None:
    """(transactions that stored submissions, submissions stored) so far, from the server's /metrics
    (lab/group_commit.py counts them); None when the server does not count them."""
    import re

    r = lab.api("GET", "/metrics")
    found = [re.search(rf"^{name}_total (\S+)$", r.text, re.M) for name in
             ("dutlab_submission_commits", "dutlab_submission_writes")]
    if r.status != 200 or not all(found):
        return None
    return float(found[0].group(1)), float(found[1].group(1))


def queue_backlog(lab: Lab) -> int | None:
    """Tasks waiting in the SqliteHuey queue (scheduling passes the consumer has not run yet)."""
    import sqlite3

    path = lab.root / "data" / "queue.sqlite3"
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM task").fetchone()[0]
    except sqlite3.Error:
        return None


def run_backend(ctx: Ctx, sec: Section, backend: str, database: str, clients: list[int],
                duration: float, job_file: Path) -> list[dict]:
    lab = ctx.lab(f"submit-{backend}", database=database).start()
    results = []
    try:
        lab.add_device_type("qemu", disable_health_checks=True)
        lab.add_worker("w1")  # never started: jobs stay queued
        lab.add_device("qemu01", "qemu", "w1", QEMU_DICTIONARY, health="Good")
        # the ceiling first, on the lab's own database while it is idle: what durability allows
        ceiling = commit_ceiling(database or sqlite_urls(lab.root)[0], 0.5 if ctx.quick else 1.5)
        if database == "":  # SQLite: also what an fsync per commit allows
            ceiling["full"] = commit_ceiling(sqlite_urls(lab.root)[0], 0.5 if ctx.quick else 1.5, full=True)["single"]
        ctx.shared.setdefault("commit_ceiling", {})[backend] = ceiling
        print(f"    {backend} durable commits: {ceiling['single']:.0f}/s single-row, {ceiling['batched']:.0f} rows/s "
              f"in one transaction ({ceiling['settings']})", flush=True)
        rpc, why = rpc_available(lab)
        if not rpc:
            sec.note(f"XML-RPC on {backend} not measured: {why}")
        modes = ["version", "rest"] + (["rpc"] if rpc else [])
        with RssSampler(lambda: {"serve": lab.pid("serve"), "consumer": lab.pid("consumer")}) as rss:
            for c in clients:
                for mode in modes:
                    before = commit_counts(lab)
                    r = measure(ctx, lab, mode, c, duration, None if mode == "version" else job_file)
                    after = commit_counts(lab)
                    r["backend"] = backend
                    r["commits"], r["writes"] = (after[0] - before[0], after[1] - before[1]) \
                        if before and after else (None, None)
                    r["backlog_after"] = queue_backlog(lab)
                    results.append(r)
                    shared = f"  {r['writes'] / r['commits']:.2f} jobs/commit" if r["commits"] else ""
                    print(f"    {backend} {mode:7} {c:2} clients: {r['rate']:7.1f}/s  errors {r['errors']}"
                          f"  p50 {r['p50_ms'] or 0:.1f} ms  backlog {r['backlog_after']}{shared}", flush=True)
                    if r["errors"]:
                        sec.note(f"{backend} {mode} × {c}: {r['errors']} errors, e.g. {r['error_sample']}")
        ctx.shared.setdefault("server_peak_kb", {})[f"submission ({backend})"] = rss.peak
    finally:
        lab.stop()
    prof = profile_backend(lab.config, job_file.read_text(), 20 if ctx.quick else 50)
    prof["backend"] = backend
    ctx.shared.setdefault("submission_inprocess", []).append(prof)
    sec.profiles.append(f"POST /api/v1/jobs in-process, {backend} (cProfile inflates pure-Python code such as "
                        f"the YAML parser; see the direct step timings)\n{prof['submit_profile']}")
    sec.tables.append(f"A submission step by step, {backend}, timed directly in-process (median ms):\n\n"
                      + md_table(["step", "ms"], [[k, v] for k, v in prof["breakdown"].items()]))
    if backend != "sqlite":
        sec.profiles.append(f"GET /api/v1/system/version in-process, connection per request, {backend}\n"
                            f"{prof['version_profile']}")
    return results


def profile_backend(config: Path, text: str, n: int) -> dict:
    """The app in this process (no HTTP, no other process): GET version with a connection per request
    (as served: DatabasePlugin opens and closes one) and with one kept connection, then submissions;
    each timed, then profiled once (cumulative and own-time views of the same profile)."""
    from dutlab.service.auth import create_token
    from dutlab.service.db import database
    from dutlab.service.models import User

    out: dict = {}
    with in_process_server(config) as call:
        user = User.get(User.username == "admin")
        _, secret = create_token(user, "bench-profile")
        auth = f"Token {secret}"

        def loop(method: str, path: str, payload: bytes, ok: str) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                status, answer = call(method, path, payload, "application/yaml", auth)
                if not status.startswith(ok):
                    raise RuntimeError(f"in-process {method} {path}: {status} {answer[:200]!r}")
            return time.perf_counter() - t0

        def measured(key: str, method: str, path: str, payload: bytes, ok: str) -> None:
            call(method, path, payload, "application/yaml", auth)  # warm caches
            out[key] = n / loop(method, path, payload, ok)
            prof = cProfile.Profile()
            prof.runcall(loop, method, path, payload, ok)
            out[key + "_profile"] = top_frames(prof, 30) + "\n\nby own time:\n" + top_frames(prof, 12, "tottime")

        database.close()  # the first request opens the connection; the plugin keeps it, as served
        measured("version", "GET", "/api/v1/system/version", b"", "200")
        measured("submit", "POST", "/api/v1/jobs", text.encode(), "201")
        try:
            out["breakdown"] = submit_breakdown(call.app.config["dutlab.settings"], user, secret, text, n)
        except Exception as exc:  # noqa: BLE001 - domain functions may have moved; the rest stands
            out["breakdown"] = {"(breakdown failed)": repr(exc)}
    return out


def submit_breakdown(settings, user, secret: str, text: str, n: int) -> dict[str, float]:
    """Median ms of each step of a submission, timed directly (no profiler overhead), one kept connection."""
    from dutlab.dispatcher.schema.loader import parse_job
    from dutlab.service import auth, events, tasks  # noqa: F401  (tasks: the pass subscriber)
    from dutlab.service.db import database
    from dutlab.service.lab import group_commit, jobs, submissions
    from dutlab.service.logstore import JobFolder

    steps: dict[str, list[float]] = {k: [] for k in (
        "auth: token lookup + last_used UPDATE", "parse_job (YAML + schema)", "check_definition (all of it)",
        "create (group commit: one transaction)", "write job.yaml and description.yaml",
        "enqueue the scheduling pass (Huey; skipped while one is pending)")}
    database.connect(reuse_if_open=True)
    try:
        for _ in range(n):
            t = [time.perf_counter()]
            auth.user_for_token(secret)
            t.append(time.perf_counter())
            parse_job(text)
            t.append(time.perf_counter())
            sub = submissions.check_definition(user, text, settings)
            t.append(time.perf_counter())
            job = group_commit.run(lambda sub=sub: jobs.create(user, sub))
            t.append(time.perf_counter())
            JobFolder(settings.output_dir, job.id).write("job.yaml", text)
            if sub.description is not None:
                JobFolder(settings.output_dir, job.id).write("description.yaml",
                                                             jobs.description_yaml(sub.description, job.id))
            t.append(time.perf_counter())
            events.schedule_soon("bench")
            t.append(time.perf_counter())
            for key, a, b in zip(steps, t, t[1:], strict=False):
                steps[key].append((b - a) * 1000)
    finally:
        database.close()
    return {k: statistics.median(v) for k, v in steps.items()}


def yaml_parse_ms(text: str, n: int = 30) -> tuple[float, float | None]:
    """Best-of-n parse time of the job with the pure-Python and the libyaml safe loaders."""
    import yaml

    def best(loader) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            yaml.load(text, Loader=loader)  # noqa: S506 - safe loaders only
            times.append(time.perf_counter() - t0)
        return min(times) * 1000

    return best(yaml.SafeLoader), (best(yaml.CSafeLoader) if hasattr(yaml, "CSafeLoader") else None)


#: issue 17, scope 1: serial submission ÷ min(commit ceiling, HTTP ceiling at 1 client), 4 clients
#: on SQLite in jobs/s, 4 clients ÷ the HTTP ceiling at 4 clients
SERIAL_RATIO, FOUR_SQLITE, FOUR_RATIO = ">= 0.9", ">= 1000", ">= 0.8"
LABELS = {"rest": "REST", "rpc": "XML-RPC"}


def ceiling_table(sec: Section, results: list[dict], ceilings: dict[str, dict]) -> str:
    """Serial and 4-client submission (REST, XML-RPC) beside the durable-commit ceiling and the HTTP
    ceiling (GET version) at the same concurrency, from the same run, with the targets."""
    rows = []
    for backend, c in ceilings.items():
        runs = {(r["mode"], r["clients"]): r for r in results if r["backend"] == backend}
        sec.add(f"durable-commit ceiling (single-row commits/s, the server's settings), {backend}", c["single"],
                "commits/s", note=str(c["settings"]))
        sec.add(f"rows/s inside one transaction, {backend}", c["batched"], "rows/s")
        if "full" in c:
            sec.add(f"single-row commits/s with synchronous=FULL (power-loss durable), {backend}", c["full"],
                    "commits/s")
        for clients in (1, 4):
            http = runs.get(("version", clients))
            if http is None:
                continue
            sec.add(f"HTTP ceiling (GET version), {clients} client(s), {backend}", http["rate"], "req/s")
            bound = min(c["single"], http["rate"]) if clients == 1 else http["rate"]
            for mode, label in LABELS.items():
                r = runs.get((mode, clients))
                if r is None:
                    continue
                name = f"{label} submit, {clients} client(s), {backend}"
                if clients == 1:
                    sec.add(name, r["rate"], "jobs/s")
                    sec.add(f"{name} ÷ min(commit ceiling, HTTP ceiling)", r["rate"] / bound, "×", SERIAL_RATIO)
                else:
                    sec.add(name, r["rate"], "jobs/s", FOUR_SQLITE if backend == "sqlite" else None)
                    sec.add(f"{name} ÷ HTTP ceiling at {clients} clients", r["rate"] / bound, "×", FOUR_RATIO)
                if r.get("commits"):
                    sec.add(f"{label} submissions per commit, {clients} client(s), {backend}",
                            r["writes"] / r["commits"], "jobs/commit", note="group commit, from /metrics")
                rows.append([backend, label, clients, r["rate"], c["single"], http["rate"], r["rate"] / bound,
                             SERIAL_RATIO if clients == 1 else FOUR_RATIO,
                             f"{r['writes'] / r['commits']:.2f}" if r.get("commits") else "—"])
    return ("Submission beside its ceilings, same run (per s): single-row durable commits on the lab's database "
            "with the server's settings, GET version through the same stack at the same concurrency; "
            "÷ bound: 1 client ÷ min(commits, GET), 4 clients ÷ GET at 4 clients:\n\n"
            + md_table(["backend", "request", "clients", "jobs/s", "commit ceiling", "HTTP ceiling", "÷ bound",
                        "target", "jobs per commit"], rows))


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    clients = [1, 4] if ctx.quick else [1, 4, 16]
    duration = 1.0 if ctx.quick else 2.0
    text, origin = standard_job_text()
    job_file = ctx.work / "submit-job.yaml"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(text)
    sec.note(f"job: {origin} ({len(text)} bytes); {duration:.1f} s per measurement; "
             f"client processes: min(clients, 4), {BIN.name}/python")
    rows, results = [], []
    results += run_backend(ctx, sec, "sqlite", "", clients, duration, job_file)
    ok, why = pg_available()
    if ok:
        with pg_database() as url:
            results += run_backend(ctx, sec, "postgresql", url, clients, duration, job_file)
    else:
        sec.note(f"PostgreSQL not measured: {why}")
    base = {(r["backend"], r["clients"]): r["rate"] for r in results if r["mode"] == "version"}
    for r in results:
        ceiling = base.get((r["backend"], r["clients"]))
        r["ratio_to_version"] = r["rate"] / ceiling if ceiling and r["mode"] != "version" else None
        rows.append([r["backend"], {"version": "GET version (ceiling)", "rest": "REST submit",
                                    "rpc": "XML-RPC submit"}[r["mode"]], r["clients"], r["rate"],
                     r["ratio_to_version"] if r["ratio_to_version"] is not None else "—",
                     r["p50_ms"] or "—", r["p99_ms"] or "—", r["errors"], r["backlog_after"]])
    for backend in ("sqlite", "postgresql"):
        for mode, label in LABELS.items():
            mine = [r for r in results if r["backend"] == backend and r["mode"] == mode]
            if mine:
                best = max(mine, key=lambda r: r["rate"])
                sec.add(f"{label} submit, best ({best['clients']} clients), {backend}", best["rate"], "jobs/s")
    sec.tables.append(ceiling_table(sec, results, ctx.shared.pop("commit_ceiling", {})))
    sec.tables.append("All runs:\n\n" + md_table(
        ["backend", "request", "clients", "per s", "÷ ceiling", "p50 ms", "p99 ms", "errors",
         "passes queued after"], rows))
    py_ms, c_ms = yaml_parse_ms(text)
    sec.add("parse of the job with yaml.SafeLoader (pure Python), for comparison", py_ms, "ms")
    sec.add("parse of the job with yaml.CSafeLoader (libyaml, as the server does)", c_ms, "ms",
            note=f"{py_ms / c_ms:.1f}× faster" if c_ms else "")
    for prof in ctx.shared.pop("submission_inprocess", []):
        backend = prof["backend"]
        sec.add(f"in-process submit (the app alone: no HTTP, no other process), {backend}", prof["submit"], "jobs/s")
        sec.add(f"in-process GET version, the thread's kept connection (as served), {backend}",
                prof["version"], "req/s")
    sec.data["runs"] = results
    return sec
