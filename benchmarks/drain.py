"""6. Queue drain and device utilisation: 10 QEMU jobs queued at once on one device.

One lab, one QEMU device, the real worker. A warm-up job, then single jobs one after the other
(the baseline: submit → Finished seen), then 10 jobs submitted together. Total = first submit →
last Finished; utilisation = the share of that time some job was Running on the device (and,
looser, Reserved or Running). Gaps between consecutive jobs are split at the server's timestamps.
"""

from __future__ import annotations

import statistics
import time

from benchlib import Ctx, Section, epoch, md_table, qemu_lab, standard_job_text, summary

from labkit import qemu_available, worker_available

KEY = "drain"
TITLE = "Queue drain and device utilisation"


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    n_queue = 3 if ctx.quick else 10
    n_single = 1  # before and (full run) after the queue: the load on this machine drifts
    for ok, why in (qemu_available(), worker_available()):
        if not ok:
            sec.not_measured("10 queued ÷ 10 × single job", why, "<= 1.1", "×")
            return sec
    text, origin = standard_job_text()
    sec.note(f"job: {origin}")
    lab, _ = qemu_lab(ctx, "drain")
    try:
        if "single_job_s" not in ctx.shared:  # warm-up (page cache, first QEMU) unless section 1 ran
            lab.wait_job(lab.submit(text), timeout=300, interval=0.2)
        singles: list[float] = []
        single_running: list[float] = []

        def single_jobs(n: int) -> None:
            for _ in range(n):
                t0 = time.time()
                job = lab.wait_job(lab.submit(text), timeout=300, interval=0.2)
                singles.append(epoch(job["end_time"]) - t0)
                single_running.append(epoch(job["end_time"]) - epoch(job["start_time"]))
                if job["health"] != "Complete":
                    raise RuntimeError(f"single job {job['id']} ended {job['health']}: {job['error_msg']}")

        single_jobs(n_single)
        t0 = time.time()
        ids = [lab.submit(text) for _ in range(n_queue)]
        done = [lab.wait_job(i, timeout=600, interval=0.2) for i in ids]
        total = max(epoch(j["end_time"]) for j in done) - t0
        if not ctx.quick:
            single_jobs(n_single)
    finally:
        lab.stop()
    bad = [j for j in done if j["health"] != "Complete"]
    if bad:
        sec.note(f"{len(bad)} of {n_queue} queued jobs did not complete: "
                 f"{[(j['id'], j['health'], j['error_msg']) for j in bad[:3]]}")
    single = statistics.median(singles)
    jobs = sorted(done, key=lambda j: epoch(j["start_time"]))
    running = sum(epoch(j["end_time"]) - epoch(j["start_time"]) for j in jobs)
    reserved = sum(epoch(j["end_time"]) - epoch(j["scheduled_time"]) for j in jobs)
    ratio = total / (n_queue * single)
    sec.add("single job, submit → Finished, median", single, "s",
            note=f"{len(singles)} runs (half before, half after the queue)")
    sec.add(f"{n_queue} queued at once, first submit → last Finished", total, "s")
    sec.add(f"{n_queue} queued ÷ {n_queue} × single job", ratio, "×", "<= 1.1")
    # the machine's load drifts over minutes: how much longer did each job run while queued?
    queued_running = statistics.median(epoch(j["end_time"]) - epoch(j["start_time"]) for j in jobs)
    drift = queued_running / statistics.median(single_running)
    sec.add("queued jobs' Running time ÷ single jobs' Running time (machine drift)", drift, "×")
    sec.add(f"{n_queue} queued ÷ {n_queue} × single job, corrected for that drift", ratio / drift, "×", "<= 1.1")
    sec.add("device utilisation (a job Running)", running / total * 100, "%", ">= 90")
    sec.add("device utilisation (Reserved or Running)", reserved / total * 100, "%")
    gaps = {"end → next Scheduled": [], "Scheduled → Running": [], "end → next Running (device idle)": []}
    for prev, nxt in zip(jobs, jobs[1:], strict=False):
        end, sched, start = epoch(prev["end_time"]), epoch(nxt["scheduled_time"]), epoch(nxt["start_time"])
        gaps["end → next Scheduled"].append(sched - end)
        gaps["Scheduled → Running"].append(start - sched)
        gaps["end → next Running (device idle)"].append(start - end)
    rows = []
    for name, values in gaps.items():
        if values:
            s = summary(values)
            rows.append([name, s["n"], s["p50"], s["max"], sum(values)])
    durations = [epoch(j["end_time"]) - epoch(j["start_time"]) for j in jobs]
    rows.append(["job Running → end (each job)", len(durations), statistics.median(durations), max(durations),
                 sum(durations)])
    sec.tables.append("Between consecutive jobs (seconds, server timestamps):\n\n"
                      + md_table(["interval", "n", "p50", "max", "sum"], rows))
    sec.data = {"singles": singles, "total": total, "jobs": [{k: j[k] for k in (
        "id", "submit_time", "scheduled_time", "start_time", "end_time", "health")} for j in jobs]}
    return sec
