"""2. Pickup and hand-back latency on an idle device.

(A) server only: this process acts as the worker through the worker API (long-poll, fetch, state,
    logs, finish), so the figures are the server's (queue consumer + scheduler + long-poll).
(B) the real dutlab-worker + dutlab-run with a job that runs `true` on the worker (a `command`
    action): what a user sees, worker and dutlab-run start-up included.
Each job is submitted alone, after a random pause of 50–150 ms (the device idle, the worker
waiting in its long-poll, and no lock-step with the 50 ms poll loops). Baseline: the round trip of
GET /api/v1/system/version on the same server.
"""

from __future__ import annotations

import random
import statistics
import threading
import time

from benchlib import (
    NOOP_DICTIONARY,
    Ctx,
    FakeWorker,
    Section,
    epoch,
    log_record,
    md_table,
    noop_job,
    read_log,
    redis_server,
    summary,
)

from labkit import Client, pg_available, pg_database, worker_available

KEY = "pickup"
TITLE = "Pickup and hand-back latency"


def _baseline(url: str, n: int) -> list[float]:
    client = Client(url)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            client.request("GET", "/api/v1/system/version")
            out.append(time.perf_counter() - t0)
    finally:
        client.close()
    return out


class ActingWorker(threading.Thread):
    """Long-polls, then for each offered job: fetch, Running, 3 log lines, finish; records times."""

    def __init__(self, url: str, name: str, token: str) -> None:
        super().__init__(daemon=True)
        self.worker = FakeWorker(url, name, token)
        self.times: dict[int, dict[str, float]] = {}
        self.done = threading.Condition()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                answer = self.worker.poll([], wait=2)
                for offer in answer["start"]:
                    self._run_job(offer["id"], offer["token"])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            with self.done:
                self.done.notify_all()
        finally:
            self.worker.close()

    def _run_job(self, job_id: int, token: str) -> None:
        t = {"offered": time.time()}
        job = self.worker.job(job_id, token)
        try:
            job.json("GET", f"/internal/v1/jobs/{job_id}")
            job.json("POST", f"/internal/v1/jobs/{job_id}/state", {"state": "Running"})
            t["running"] = time.time()
            job.json("POST", f"/internal/v1/jobs/{job_id}/logs",
                     {"index": 0, "lines": [log_record("dutlab-run bench", "info"), log_record("hello")]})
            t["last_line"] = time.time()  # the last line is made now, sent, then the job finished
            job.json("POST", f"/internal/v1/jobs/{job_id}/logs",
                     {"index": 2, "lines": [log_record("job done", "info", None)]})
            job.json("POST", f"/internal/v1/jobs/{job_id}/finish", {"result": "pass", "log_line_count": 3})
            t["finished"] = time.time()
        finally:
            job.close()
        with self.done:
            self.times[job_id] = t
            self.done.notify_all()

    def wait_for(self, job_id: int, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self.done:
            while job_id not in self.times:
                if self.error:
                    raise RuntimeError(f"acting worker failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} was not offered within {timeout:.0f} s")
                self.done.wait(left)
            return self.times[job_id]


def _acting(sec: Section, lab, n: int, rng: random.Random, label: str) -> list:
    """(A): submit `n` jobs one at a time to `acting01`, this process acting as its worker."""
    lab.add_device_type("bench-acting", template="qemu", disable_health_checks=True)
    lab.add_worker("acting")
    lab.add_device("acting01", "bench-acting", "acting", NOOP_DICTIONARY, health="Good")
    base = _baseline(lab.url, 200)
    actor = ActingWorker(lab.url, "acting", lab.worker_tokens["acting"])
    actor.start()
    client = lab.client()
    text = noop_job(name="pickup", device_type="bench-acting")
    sub_run, off, sched_run, line_fin, ids, t_sub, t_ack = [], [], [], [], [], [], []
    phases: dict[str, list[float]] = {k: [] for k in (
        "POST /api/v1/jobs round trip", "submit answered → Scheduled (queue pickup + pass)",
        "Scheduled → offered in the long-poll", "offered → Running (fetch + state call)")}
    try:
        time.sleep(0.5)  # the worker is Online and waiting
        for _ in range(n):
            time.sleep(rng.uniform(0.05, 0.15))
            t0 = time.time()
            job_id = client.json("POST", "/api/v1/jobs", {"definition": text})["job_ids"][0]
            t_ack.append(time.time())
            t_sub.append(t0)
            t = actor.wait_for(job_id, 30)
            sub_run.append(t["running"] - t0)
            off.append(t["offered"] - t0)
            line_fin.append(t["finished"] - t["last_line"])
            ids.append(job_id)
    finally:
        actor.stop.set()
        client.close()
    for i, job_id in enumerate(ids):
        job = lab.job(job_id)
        sched, t = epoch(job["scheduled_time"]), actor.times[job_id]
        sched_run.append(epoch(job["start_time"]) - sched)
        for key, value in zip(phases, (t_ack[i] - t_sub[i], sched - t_ack[i], t["offered"] - sched,
                                       t["running"] - t["offered"]), strict=True):
            phases[key].append(value)
    sec.add(f"{label}: submit → Running, p50", statistics.median(sub_run), "s", "<= 0.1")
    sec.add(f"{label}: submit → Running, p99", summary(sub_run)["p99"], "s", "<= 0.5")
    sec.add(f"{label}: last log line → Finished, p50", statistics.median(line_fin), "s", "<= 0.2")
    sec.add(f"{label}: submit → Running p50 / baseline round trip p50",
            statistics.median(sub_run) / statistics.median(base), "×")
    rows = [_dist_rows(f"{label}: submit → offered to the worker", off),
            _dist_rows(f"{label}: submit → Running", sub_run),
            _dist_rows(f"{label}: Scheduled → Running", sched_run),
            _dist_rows(f"{label}: last log line → Finished", line_fin)]
    rows += [_dist_rows(f"{label}, phase: {k}", v) for k, v in phases.items()]
    sec.data[label] = {"submit_running": sub_run, "submit_offered": off, "scheduled_running": sched_run,
                       "line_finished": line_fin}
    rows.append(_dist_rows(f"{label}: baseline GET version round trip", base))
    return rows


def _dist_rows(label: str, values: list[float]) -> list:
    s = summary(values)
    return [label, s["n"], s["p50"], s["p90"], s["p99"], s["max"]]


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    n = 12 if ctx.quick else 50
    rng = random.Random(7)
    lab = ctx.lab("pickup").start()
    rows = []
    try:
        lab.add_device_type("bench-real", template="qemu", disable_health_checks=True)
        base = _baseline(lab.url, 200)
        sec.add("baseline: GET /api/v1/system/version round trip, p50", statistics.median(base) * 1000, "ms")

        # (A) this process is the worker
        rows += _acting(sec, lab, n, rng, "server only")

        # (B) the real worker
        have, why = worker_available()
        if not have:
            sec.not_measured("real worker: submit → Running, p50", why, "<= 0.1", "s")
            sec.not_measured("real worker: last log line → Finished, p50", why, "<= 0.2", "s")
        else:
            lab.add_worker("real")
            lab.add_device("real01", "bench-real", "real", NOOP_DICTIONARY, health="Good")
            lab.start_worker("real")
            lab.wait_worker_online("real")
            time.sleep(0.5)
            text = noop_job(name="pickup-real", device_type="bench-real")
            r_sub_run, r_sched_run, r_line_fin, r_total, failed = [], [], [], [], []
            for _ in range(n):
                time.sleep(rng.uniform(0.05, 0.15))
                t0 = time.time()
                job_id = lab.submit(text)
                job = lab.wait_job(job_id, timeout=60, interval=0.02)
                r_total.append(time.time() - t0)
                if job["health"] != "Complete":
                    failed.append(f"{job_id}: {job['health']} {job['error_type']} {job['error_msg']}")
                    continue
                records = read_log(lab, job_id)
                start, sched, end = epoch(job["start_time"]), epoch(job["scheduled_time"]), epoch(job["end_time"])
                r_sub_run.append(start - t0)
                r_sched_run.append(start - sched)
                r_line_fin.append(end - epoch(records[-1]["dt"]))
            if failed:
                sec.note(f"{len(failed)} of {n} real-worker jobs did not complete: {failed[:3]}")
            if r_sub_run:
                sec.add("real worker: submit → Running, p50", statistics.median(r_sub_run), "s", "<= 0.1")
                sec.add("real worker: submit → Running, p99", summary(r_sub_run)["p99"], "s", "<= 0.5")
                sec.add("real worker: last log line → Finished, p50", statistics.median(r_line_fin), "s", "<= 0.2")
                rows += [_dist_rows("real worker: submit → Running", r_sub_run),
                         _dist_rows("real worker: Scheduled → Running", r_sched_run),
                         _dist_rows("real worker: last log line → Finished", r_line_fin),
                         _dist_rows("real worker: submit → Finished seen (job runs `true`)", r_total)]
            sec.data["real"] = {"submit_running": r_sub_run, "scheduled_running": r_sched_run,
                                "line_finished": r_line_fin, "total": r_total, "failed": failed}
    finally:
        lab.stop()
    # (A) again on the production pair: the pass wakes the long-poll through Redis pub/sub
    label = "PostgreSQL + Redis, server only"
    ok, why = pg_available()
    if not ok:
        sec.not_measured(f"{label}: submit → Running, p50", why, "<= 0.1", "s")
    else:
        with pg_database() as url, redis_server(ctx, ctx.work / "pickup-redis") as redis:
            pg = ctx.lab("pickup-pg", database=url, queue=redis).start()
            try:
                rows += _acting(sec, pg, n, rng, label)
            finally:
                pg.stop()
    sec.tables.append("Distributions (seconds):\n\n" + md_table(["latency", "n", "p50", "p90", "p99", "max"], rows))
    sec.note("Server times (scheduled/start/end) and client times share this machine's clock. The server path: "
             "submit enqueues a pass (Huey; the consumer polls its queue every ≤ 50 ms), the pass bumps the "
             "worker's wake counter, the long-poll re-reads it every longpoll_interval (50 ms).")
    return sec
