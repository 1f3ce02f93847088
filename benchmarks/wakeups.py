"""2b. Long-poll wake-ups: what idle long-polling workers cost the server, and how fast a held
long-poll hears of its job.

Two labs in the same run, alike but for how a held long-poll waits: *notified* (the defaults:
woken by service/wakeups.py, a safety re-read every `longpoll_interval` = 5 s) and the baseline
*polling* (`longpoll_notify: false`, `longpoll_interval: 0.05`: a `wake_seq` read every 50 ms,
as before). In each: N workers long-poll with nothing to do (this process holds their polls)
while the server's CPU time is read from /proc/<pid>/stat over a window; then, with the idle
polls still held, jobs are submitted one at a time to one more worker that this process acts
as (pickup.ActingWorker): Scheduled (the server's time) → offered in its long-poll is the wake-up.
"""

from __future__ import annotations

import random
import shutil
import threading
import time

from benchlib import NOOP_DICTIONARY, Ctx, FakeWorker, Section, epoch, md_table, noop_job, redis_server, summary
from overhead import cpu_seconds
from pickup import ActingWorker

from labkit import pg_available, pg_database

#: idle workers on PostgreSQL: a server thread (and its kept connection) each, under max_connections
PG_IDLE = 60
KEY = "wakeups"
TITLE = "Long-poll wake-ups"
MODES = {"notified": {}, "polling": {"longpoll_notify": False, "longpoll_interval": 0.05},
         "notified, PostgreSQL + Redis": {}}


def _idle(url: str, name: str, token: str, stop: threading.Event) -> None:
    worker = FakeWorker(url, name, token)
    try:
        while not stop.is_set():
            worker.poll([], wait=20)  # dutlab-worker's default; the server caps it (15 s here)
    except Exception:  # noqa: BLE001 - the lab stopped under the poll
        pass
    finally:
        worker.close()


def _measure(ctx: Ctx, mode: str, n: int, window: float, jobs: int, database: str = "", queue: str = "") -> dict:
    lab = ctx.lab(f"wakeups-{mode.split(',')[0]}{'-pg' if database else ''}", database=database, queue=queue,
                  threads=n + 24, **MODES[mode]).start()
    stop = threading.Event()
    try:
        lab.add_device_type("bench-wake", template="qemu", disable_health_checks=True)
        lab.add_worker("acting")
        lab.add_device("acting01", "bench-wake", "acting", NOOP_DICTIONARY, health="Good")
        for i in range(n):
            name = f"idle{i:03d}"
            token = lab.add_worker(name)
            threading.Thread(target=_idle, args=(lab.url, name, token, stop), daemon=True).start()
        time.sleep(2)  # every idle poll is held
        pid = lab.pid("serve")
        cpu0, t0 = cpu_seconds(pid)[0], time.monotonic()
        time.sleep(window)
        cpu = (cpu_seconds(pid)[0] - cpu0) / (time.monotonic() - t0) * 100

        actor = ActingWorker(lab.url, "acting", lab.worker_tokens["acting"])
        actor.start()
        client = lab.client()
        text = noop_job(name="wake-up", device_type="bench-wake")
        rng = random.Random(11)
        wake, offered, ids = [], [], []
        try:
            time.sleep(0.5)
            for _ in range(jobs):
                time.sleep(rng.uniform(0.05, 0.15))
                t_sub = time.time()
                job_id = client.json("POST", "/api/v1/jobs", {"definition": text})["job_ids"][0]
                offered.append(actor.wait_for(job_id, 30)["offered"] - t_sub)
                ids.append(job_id)
        finally:
            actor.stop.set()
            client.close()
        for job_id in ids:
            wake.append(actor.times[job_id]["offered"] - epoch(lab.job(job_id)["scheduled_time"]))
        return {"cpu_percent": cpu, "wake": wake, "submit_offered": offered}
    finally:
        stop.set()
        lab.stop()


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    n, window, jobs = (50, 3.0, 12) if ctx.quick else (200, 6.0, 40)
    got = {mode: _measure(ctx, mode, n, window, jobs) for mode in ("notified", "polling")}
    ok, why = pg_available()
    if ok and not shutil.which("redis-server"):
        ok, why = False, "redis-server is not installed"
    if ok:
        # each server thread keeps its own PostgreSQL connection, held polls included: n + 24 threads
        # would pass PostgreSQL's default max_connections (100), so fewer idle workers here
        n_pg = min(n, PG_IDLE)
        with pg_database() as url, redis_server(ctx, ctx.work / "wakeups-redis") as redis:
            got["notified, PostgreSQL + Redis"] = _measure(ctx, "notified, PostgreSQL + Redis", n_pg, window, jobs,
                                                           url, redis)
        pg = got["notified, PostgreSQL + Redis"]
        sec.add(f"server CPU, {n_pg} idle long-polling workers, notified, PostgreSQL + Redis", pg["cpu_percent"],
                "% of one core")
        sec.add("wake-up, notified, PostgreSQL + Redis, p99", summary(pg["wake"])["p99"], "s", "<= 0.05")
    else:
        sec.not_measured("wake-up, notified, PostgreSQL + Redis, p99", why, "<= 0.05", "s")
    new, old = got["notified"], got["polling"]
    sec.add(f"server CPU, {n} idle long-polling workers, notified", new["cpu_percent"], "% of one core", "<= 5")
    sec.add(f"server CPU, {n} idle long-polling workers, baseline polling every 50 ms", old["cpu_percent"],
            "% of one core")
    sec.add("server CPU notified ÷ polling", new["cpu_percent"] / max(old["cpu_percent"], 1e-9), "×")
    new_wake, old_wake = summary(new["wake"]), summary(old["wake"])
    sec.add("wake-up (Scheduled → offered in the held long-poll), notified, p50", new_wake["p50"], "s")
    sec.add("wake-up, notified, p99", new_wake["p99"], "s", "<= 0.05")
    sec.add("wake-up, baseline polling, p50", old_wake["p50"], "s")
    sec.add("wake-up, baseline polling, p99", old_wake["p99"], "s")
    rows = []
    for mode, data in got.items():
        for label, values in (("Scheduled → offered", data["wake"]), ("submit → offered", data["submit_offered"])):
            s = summary(values)
            rows.append([mode, label, s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
    sec.tables.append(f"With {n} idle long-polls held ({min(n, PG_IDLE)} on PostgreSQL + Redis), seconds:\n\n"
                      + md_table(["mode", "latency", "n", "p50", "p90", "p99", "max"], rows))
    sec.data.update(got)
    sec.note("notified and polling: SQLite + SqliteHuey; the pass runs in the consumer, whose wake-up reaches "
             "`serve` as a datagram on the queue's abstract UNIX socket; on PostgreSQL + Redis as a Redis PUBLISH "
             "(service/wakeups.py). Server times and client times share "
             "this machine's clock. The idle polls are held by this process (one thread each).")
    return sec
