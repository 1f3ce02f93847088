"""5. Log ingestion: lines/s through the worker API, and console → logs API lag.

Throughput: this process posts pre-encoded batches of realistic console records (≈110 bytes)
to POST /internal/v1/jobs/<id>/logs with the job's token: one stream at 100 / 1,000 / 10,000
lines a batch, then 4 jobs at once. Baselines in the same run: the same records appended to a
file with one fsync a batch (the floor any durable store pays), and the server's own JobFolder
append called in-process (its storage without HTTP, JSON, auth).
Lag: (a) dutlab-run's own JobLogger + LogUploader in this process write and upload a line every
2 ms while a reader polls GET /api/v1/jobs/<id>/logs every 20 ms; (b) where the real worker and
QEMU exist, the same reader follows a real QEMU job; lag = first seen by the reader − the
record's `dt` (when dutlab-run read it from the console).
"""

from __future__ import annotations

import cProfile
import json
import os
import threading
import time
from pathlib import Path

from benchlib import NOOP_DICTIONARY, Ctx, FakeWorker, Section, epoch, log_record, md_table, standard_job_text, summary
from benchprof import in_process_server, top_frames

from labkit import Client, Lab, LabError, qemu_available, worker_available

KEY = "logs"
TITLE = "Log ingestion"


def records(n: int, start: int = 0) -> list[str]:
    return [log_record(f"[ {i / 1000:10.6f}] virtio_blk virtio1: [vda] {i * 512} 512-byte logical blocks (bench "
                       f"line {i})") for i in range(start, start + n)]


def bodies(lines: list[str], batch: int, first_index: int) -> list[bytes]:
    return [json.dumps({"index": first_index + i, "lines": lines[i:i + batch]}).encode()
            for i in range(0, len(lines), batch)]


def post_all(url: str, job_id: int, token: str, payloads: list[bytes]) -> float:
    client = Client(url, f"Job {token}")
    try:
        t0 = time.perf_counter()
        for body in payloads:
            client.request("POST", f"/internal/v1/jobs/{job_id}/logs", body)
        return time.perf_counter() - t0
    finally:
        client.close()


def raw_append(folder: Path, lines: list[str], batch: int) -> float:
    """The floor: the same lines + an 8-byte index each, one write and one fsync a batch."""
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    idx = struct.Struct("<Q")
    t0 = time.perf_counter()
    with open(folder / "raw.yaml", "ab") as log, open(folder / "raw.idx", "ab") as index:
        offset = log.tell()
        for i in range(0, len(lines), batch):
            chunk = [("- " + rec + "\n").encode() for rec in lines[i:i + batch]]
            offsets = bytearray()
            for c in chunk:
                offsets += idx.pack(offset)
                offset += len(c)
            log.write(b"".join(chunk))
            log.flush()
            os.fsync(log.fileno())
            index.write(offsets)
            index.flush()
    return time.perf_counter() - t0


def jobfolder_append(folder: Path, lines: list[str], batch: int) -> float:
    from dutlab.service.logstore import JobFolder

    store = JobFolder(folder, 999_999)
    t0 = time.perf_counter()
    for i in range(0, len(lines), batch):
        store.append(i, lines[i:i + batch])
    return time.perf_counter() - t0


def start_jobs(lab: Lab, worker: FakeWorker, n: int, device_type: str) -> list[tuple[int, str]]:
    """Submit n jobs, take them as the worker, mark them Running; [(id, token)]."""
    from benchlib import noop_job

    for i in range(n):
        lab.submit(noop_job(name=f"logs-{i}", device_type=device_type))
    taken: list[tuple[int, str]] = []
    deadline = time.monotonic() + 30
    while len(taken) < n and time.monotonic() < deadline:
        taken += worker.take(timeout=5, wait=2)
    if len(taken) < n:
        raise RuntimeError(f"only {len(taken)} of {n} jobs were offered")
    for job_id, token in taken:
        client = worker.job(job_id, token)
        client.json("GET", f"/internal/v1/jobs/{job_id}")
        client.json("POST", f"/internal/v1/jobs/{job_id}/state", {"state": "Running"})
        client.close()
    return taken


class Follower(threading.Thread):
    """Polls GET /api/v1/jobs/<id>/logs?start=N every `interval` s; records when each line appeared."""

    def __init__(self, lab: Lab, job_id: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.lab, self.job_id, self.interval = lab, job_id, interval
        self.seen: list[tuple[float, dict]] = []
        self.stop = threading.Event()
        self.finished = False

    def run(self) -> None:
        client = self.lab.client()
        try:
            while not self.stop.is_set():
                _, headers, raw = client.request("GET", f"/api/v1/jobs/{self.job_id}/logs?start={len(self.seen)}")
                now = time.time()
                for line in raw.decode().splitlines():
                    if line.startswith("- "):
                        self.seen.append((now, json.loads(line[2:])))
                if headers.get("X-Dutlab-Job-Finished") == "true" and not raw:
                    self.finished = True
                    return
                self.stop.wait(self.interval)
        finally:
            client.close()

    def lags(self, lvl: str | None = None) -> list[float]:
        return [seen - epoch(rec["dt"]) for seen, rec in self.seen if lvl is None or rec.get("lvl") == lvl]


def uploader_lag(lab: Lab, job_id: int, token: str, folder: Path, seconds: float) -> tuple[list[float], str]:
    """dutlab-run's JobLogger + LogUploader in this process, one line every 2 ms."""
    try:
        from dutlab.dispatcher.log import JobLogger
        from dutlab.dispatcher.protocol import JobResult
        from dutlab.dispatcher.upload import LogUploader
    except ImportError as exc:
        return [], f"dutlab.dispatcher is not importable: {exc}"
    folder.mkdir(parents=True, exist_ok=True)
    logger = JobLogger(folder / "output.yaml")
    uploader = LogUploader(lab.url, job_id, token, folder)
    uploader.start()
    follower = Follower(lab, job_id)
    follower.start()
    try:
        n = int(seconds / 0.002)
        t0 = time.monotonic()
        for i in range(n):
            logger.target(f"console line {i}")
            delay = t0 + (i + 1) * 0.002 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        logger.close()
        if not uploader.close(JobResult("pass"), 30):
            return [], "the uploader did not finish the job"
        follower.join(30)
    finally:
        follower.stop.set()
    return follower.lags(), ""


def qemu_job_lag(ctx: Ctx, lab: Lab) -> tuple[list[float], list[float], str]:
    ok, why = qemu_available()
    have, why_w = worker_available()
    if not ok or not have:
        return [], [], why or why_w
    try:
        lab.qemu_device_ready("qemu01", "w1")
    except LabError as exc:
        return [], [], f"the QEMU device did not get ready: {str(exc).splitlines()[0]}"
    text, _ = standard_job_text()
    job_id = lab.submit(text)
    follower = Follower(lab, job_id)
    follower.start()
    follower.join(300)
    follower.stop.set()
    job = lab.job(job_id)
    if job["health"] != "Complete":
        return [], [], f"the QEMU job ended {job['health']}: {job['error_msg']}"
    return follower.lags(), follower.lags("target"), ""


def run(ctx: Ctx) -> Section:
    sec = Section(KEY, TITLE)
    total = 20_000 if ctx.quick else 200_000
    lab = ctx.lab("logs").start()
    rows = []
    try:
        lab.add_device_type("bench", template="qemu", disable_health_checks=True)
        lab.add_worker("fake")
        for i in range(8):
            lab.add_device(f"dev{i}", "bench", "fake", NOOP_DICTIONARY, health="Good")
        worker = FakeWorker(lab.url, "fake", lab.worker_tokens["fake"])
        jobs = start_jobs(lab, worker, 7, "bench")
        lines = records(total)

        # one stream, three batch sizes, one job each
        single = {}
        for (job_id, token), batch in zip(jobs[:3], (100, 1000, 10000), strict=True):
            n = min(total, batch * 500)
            payloads = bodies(lines[:n], batch, 0)
            elapsed = post_all(lab.url, job_id, token, payloads)
            single[batch] = n / elapsed
            floor = raw_append(ctx.work / "logs-raw" / str(batch), lines[:n], batch)
            store = jobfolder_append(ctx.work / "logs-jf" / str(batch), lines[:n], batch)
            rows.append([f"1 stream, {batch} lines/batch", n, n / elapsed, n / store, n / floor,
                         (n / elapsed) / (n / floor)])
        # four jobs at once, 1000 lines a batch
        per = total // 4
        extra = jobs[3:7]
        payloads = {job_id: bodies(lines[:per], 1000, 0) for job_id, _ in extra}
        times: dict[int, float] = {}
        threads = [threading.Thread(target=lambda j=j, t=t: times.__setitem__(j, post_all(lab.url, j, t, payloads[j])))
                   for j, t in extra]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        conc = per * len(extra) / wall
        rows.append([f"{len(extra)} jobs at once, 1000 lines/batch", per * len(extra), conc, "", "", ""])
        sec.add("ingestion, 1 stream, 1,000-line batches (dutlab-run's batch size)", single[1000], "lines/s",
                ">= 100000")
        sec.add("ingestion, 1 stream, 10,000-line batches", single[10000], "lines/s")
        sec.add(f"ingestion, {len(extra)} jobs at once, 1,000-line batches", conc, "lines/s")
        sec.add("ingestion ÷ raw append + fsync (1,000-line batches)", rows[1][5], "×")
        sec.tables.append("Throughput (lines/s):\n\n" + md_table(
            ["case", "lines", "via the worker API", "JobFolder.append in-process", "raw append + fsync",
             "API ÷ raw"], rows))

        # lag through dutlab-run's own logger and uploader
        more = start_jobs(lab, worker, 1, "bench")
        lag, why = uploader_lag(lab, more[0][0], more[0][1], ctx.work / "logs-lag", 2.0 if ctx.quick else 5.0)
        lag_rows = []
        if lag:
            s = summary(lag)
            sec.add("lag, dutlab-run logger+uploader → logs API, p50", s["p50"], "s")
            sec.add("lag, dutlab-run logger+uploader → logs API, p99", s["p99"], "s", "<= 1.0")
            lag_rows.append(["JobLogger + LogUploader, 500 lines/s", s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
        else:
            sec.not_measured("lag, dutlab-run logger+uploader → logs API, p99", why, "<= 1.0", "s")
        all_lag, console_lag, why = qemu_job_lag(ctx, lab)
        if console_lag:
            s = summary(console_lag)
            sec.add("lag, real QEMU job, console line → logs API, p99", s["p99"], "s", "<= 1.0")
            lag_rows.append(["real QEMU job, console lines", s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
            s = summary(all_lag)
            lag_rows.append(["real QEMU job, all lines", s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
        else:
            sec.not_measured("lag, real QEMU job, console line → logs API, p99", why, "<= 1.0", "s")
        if lag_rows:
            sec.tables.append("Lag (seconds; the reader polls every 20 ms, the uploader looks every 0.2 s):\n\n"
                              + md_table(["source", "lines", "p50", "p90", "p99", "max"], lag_rows))
        sec.data = {"throughput": rows, "lag_uploader": lag, "lag_qemu_console": console_lag}
        worker.close()
    finally:
        lab.stop()
    # where the time goes: the logs endpoint in-process (a connection per request, as served)
    from dutlab.service.db import database

    job_id, token = jobs[1]
    with in_process_server(lab.config) as call:
        start = min(total, 1000 * 500)

        def go(payloads: list[bytes]) -> float:
            t0 = time.perf_counter()
            for body in payloads:
                status, out = call("POST", f"/internal/v1/jobs/{job_id}/logs", body, auth=f"Job {token}")
                if not status.startswith("200"):
                    raise RuntimeError(f"in-process logs: {status} {out[:200]!r}")
            return time.perf_counter() - t0

        database.close()
        first, second = (bodies(records(50_000, at), 1000, at) for at in (start, start + 50_000))
        elapsed = go(first)
        prof = cProfile.Profile()
        prof.runcall(go, second)
    top = top_frames(prof, 22) + "\n\nby own time:\n" + top_frames(prof, 16, "tottime")
    sec.add("in-process (the app alone: no HTTP), 1,000-line batches", 50_000 / elapsed, "lines/s")
    sec.profiles.append(f"POST /internal/v1/jobs/<id>/logs in-process, 50 × 1,000 lines\n{top}")
    return sec
