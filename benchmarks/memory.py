"""7. Memory: VmRSS (from /proc/<pid>/status) of the server, queue consumer, worker and dutlab-run.

Idle: a fresh lab with one QEMU device, the worker polling, nothing queued, after 2 s.
Loaded: the peak (VmHWM, plus 0.1 s samples for short-lived processes) while a QEMU job runs,
500 jobs are submitted by 4 clients and 100,000 log lines are ingested.
Baselines: a bare interpreter, and the same interpreter after importing each side's modules
(the import breakdown is what to look at when a process misses its target).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from benchlib import NOOP_DICTIONARY, Ctx, FakeWorker, Section, md_table, noop_job, qemu_lab, standard_job_text
from benchprof import RssSampler, rss_kb

from labkit import Client, cmdline, descendants, qemu_available, worker_available

KEY = "memory"
TITLE = "Memory (RSS)"

IMPORT_PROBE = r"""
import importlib, json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
out = [['(bare interpreter)', rss()]]
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        out.append([name + ' (failed: ' + type(exc).__name__ + ')', rss()])
        continue
    out.append([name, rss()])
print(json.dumps(out))
"""

SERVER_MODULES = ["yaml", "jinja2", "peewee", "huey", "bottle", "cheroot.wsgi", "dutlab.service.models",
                  "dutlab.service.scheduler", "dutlab.dispatcher.schema.loader", "dutlab.service.app",
                  "dutlab.service.rpc", "dutlab.service.api.dashboard", "dutlab.service.cli"]
WORKER_MODULES = ["yaml", "dutlab.dispatcher.protocol", "dutlab.dispatcher.upload", "dutlab.dispatcher.jobsdb",
                  "dutlab.dispatcher.worker"]
RUN_MODULES = ["yaml", "pexpect", "dutlab.dispatcher.schema.loader", "dutlab.dispatcher.pipeline",
               "dutlab.dispatcher.actions.registry", "dutlab.dispatcher.run"]


def import_costs(modules: list[str]) -> list[tuple[str, int, int]]:
    """(module, RSS after importing it and all before, delta) in kB, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *modules], capture_output=True, text=True, timeout=60)
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    out, prev = [], rows[0][1]
    for name, kb in rows:
        out.append((name, kb, kb - prev))
        prev = kb
    return out


def mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    have_worker, why_w = worker_available()
    have_qemu, why_q = qemu_available()
    server_imports = import_costs(SERVER_MODULES)
    worker_imports = import_costs(WORKER_MODULES)
    run_imports = import_costs(RUN_MODULES)
    bare = server_imports[0][1]
    sec.add("baseline: bare interpreter", mb(bare), "MB")

    if have_worker and have_qemu:
        lab, _ = qemu_lab(ctx, "memory")
    else:
        lab = ctx.lab("memory").start()
        lab.add_device_type("qemu", disable_health_checks=True)
    rows = []
    try:
        time.sleep(2)
        pids = {"server": lab.pid("serve"), "consumer": lab.pid("consumer")}
        if have_worker and have_qemu:
            pids["worker"] = lab.pid("worker-w1")
        idle = {name: rss_kb(pid) for name, pid in pids.items()}

        def find() -> dict[str, int]:
            out = dict(pids)
            if "worker" in pids:
                for child in descendants(pids["worker"]):
                    argv = cmdline(child)
                    if "dutlab-run" in " ".join(argv[:2]):
                        out["dutlab-run"] = child
                    elif argv and "qemu-system" in argv[0]:
                        out["qemu"] = child
            return out

        with RssSampler(find, 0.05) as sampler:
            if have_worker and have_qemu:
                text, _ = standard_job_text()
                job = lab.wait_job(lab.submit(text), timeout=300)
                if job["health"] != "Complete":
                    sec.note(f"the QEMU job ended {job['health']}: {job['error_msg']}")
            # load: 500 queued submissions by 4 clients, 100,000 log lines through one fake job
            lab.add_device_type("parked", template="qemu", disable_health_checks=True)
            lab.add_worker("parked-w")
            lab.add_device("parked01", "parked", "parked-w", NOOP_DICTIONARY, health="Good")
            lab.add_device_type("fake", template="qemu", disable_health_checks=True)
            lab.add_worker("fake")
            lab.add_device("fake01", "fake", "fake", NOOP_DICTIONARY, health="Good")
            body = noop_job(name="memory", device_type="parked")

            def submit(n: int) -> None:
                client = lab.client()
                try:
                    for _ in range(n):
                        client.request("POST", "/api/v1/jobs", body, ctype="application/yaml")
                finally:
                    client.close()

            n_sub = 100 if ctx.quick else 500
            threads = [threading.Thread(target=submit, args=(n_sub // 4,)) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            lab.submit(noop_job(name="memory-logs", device_type="fake"))
            fake = FakeWorker(lab.url, "fake", lab.worker_tokens["fake"])
            (job_id, token), = fake.take(timeout=30)
            jc = Client(lab.url, f"Job {token}")
            jc.json("GET", f"/internal/v1/jobs/{job_id}")
            jc.json("POST", f"/internal/v1/jobs/{job_id}/state", {"state": "Running"})
            from logs import bodies, records
            n_lines = 20_000 if ctx.quick else 100_000
            for payload in bodies(records(n_lines), 1000, 0):
                jc.request("POST", f"/internal/v1/jobs/{job_id}/logs", payload)
            jc.json("POST", f"/internal/v1/jobs/{job_id}/finish", {"result": "pass", "log_line_count": n_lines})
            jc.close()
            fake.close()
            time.sleep(1)  # let the consumer run the passes the submissions queued
        hwm = {name: rss_kb(pid, "VmHWM") for name, pid in pids.items()}
        after = {name: rss_kb(pid) for name, pid in pids.items()}
    finally:
        lab.stop()
    peak = dict(sampler.peak)
    for name in pids:
        peak[name] = max(peak.get(name, 0), hwm.get(name) or 0)
    targets = {"server": 80, "worker": 40}
    for name in ("server", "consumer", "worker"):
        if name in idle:
            sec.add(f"{name}, idle", mb(idle[name]), "MB", f"<= {targets[name]}" if name in targets else None)
    if not (have_worker and have_qemu):
        sec.not_measured("worker, idle", why_w or why_q, "<= 40", "MB")
    for name in ("server", "consumer", "worker", "dutlab-run"):
        if peak.get(name):
            sec.add(f"{name}, peak under load", mb(peak[name]), "MB")
    if "dutlab-run" not in peak:
        sec.not_measured("dutlab-run, peak", why_w or why_q or "no dutlab-run process was seen")
    if idle.get("server"):
        sec.add("server idle ÷ bare interpreter", idle["server"] / bare, "×")
    for name in pids:
        rows.append([name, mb(idle.get(name)), mb(after.get(name)), mb(peak.get(name))])
    if peak.get("dutlab-run"):
        rows.append(["dutlab-run", "—", "—", mb(peak["dutlab-run"])])
    if peak.get("qemu"):
        rows.append(["(QEMU, for scale)", "—", "—", mb(peak["qemu"])])
    for label, kbs in (ctx.shared.get("server_peak_kb") or {}).items():
        for name, kb in kbs.items():
            rows.append([f"{name}, during {label}", "—", "—", mb(kb)])
    sec.tables.append("RSS (MB):\n\n" + md_table(["process", "idle", "after load", "peak"], rows))
    for title, costs in (("server (dutlab-server serve)", server_imports), ("worker (dutlab-worker)", worker_imports),
                         ("dutlab-run", run_imports)):
        sec.tables.append(f"Import cost, {title}: RSS after each import, cumulative (MB) and its own share:\n\n"
                          + md_table(["module", "RSS MB", "+ MB"], [[n, kb / 1024, d / 1024] for n, kb, d in costs]))
    sec.data = {"idle_kb": idle, "after_kb": after, "peak_kb": peak, "imports": {
        "server": server_imports, "worker": worker_imports, "run": run_imports}}
    return sec
