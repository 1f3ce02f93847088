#!/usr/bin/env python3
"""The load generator of the lab-scale simulation (started and stopped by simulation.py).

  --role submit   --connections keep-alive REST clients submit jobs at a steady --rate
                  (open loop: submission k is due at start + k/rate, whatever the answers).
  --role workers  one thread per simulated worker speaks the worker protocol as dutlab-worker
                  does (dispatcher/protocol.py's Client and paths: long-poll listing its runs,
                  forget what the server ended, fetch, Running, log batches, finish); a job
                  "runs" for a duration drawn from a RNG seeded with --seed and its id, no QEMU.

From --start-at (epoch) for --duration seconds; writes what it measured as JSON to --out.
Loopback only; every thread ends by --duration (held polls are shortened to end by then).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dutlab.dispatcher.protocol import PROTOCOL, Client, JobResult, job_path, poll_path  # noqa: E402
from labkit import Client as RestClient  # noqa: E402
from labkit import HttpError  # noqa: E402

#: a held poll, as dutlab-worker asks by default (the server caps it)
POLL_WAIT = 20.0
#: threads making the job calls (fetch, state, logs, finish) for all simulated runs: dutlab-worker
#: starts a dutlab-run per job, so starts must not queue here behind a slow server
CALL_THREADS = 96
#: after a poll the server answered at once with nothing (no long-poll slot free)
SHORT_POLL_PAUSE = 1.0


def record(msg: object, lvl: str = "target") -> str:
    return json.dumps({"dt": datetime.now(UTC).isoformat(), "lvl": lvl, "msg": msg})


def submitters(args: argparse.Namespace) -> dict:
    body = {"definition": args.body_file.read_text()}
    stop_at = args.start_at + args.duration
    out: list[list] = [[] for _ in range(args.connections)]  # [sent, answered, job id or 0, status, due]
    errors: list[str] = []

    def run(i: int) -> None:
        client = RestClient(args.url, args.auth)
        try:
            client.request("GET", "/api/v1/system/version")  # connected before the clock starts
            k = i
            while True:
                due = args.start_at + k / args.rate
                if due >= stop_at or time.time() >= stop_at:  # behind plan: what is late is not sent
                    break
                time.sleep(max(0.0, due - time.time()))
                t0 = time.time()
                try:
                    status, _, raw = client.request("POST", "/api/v1/jobs", body, expect=())
                    job_id = json.loads(raw)["job_ids"][0] if status == 201 else 0
                except (HttpError, OSError, ValueError) as exc:
                    status, job_id, raw = 0, 0, str(exc).encode()
                    client.close()
                if not job_id and len(errors) < 5:
                    errors.append(f"HTTP {status}: {raw[:200].decode(errors='replace')}")
                out[i].append([t0, time.time(), job_id, status, due])
                k += args.connections
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.connections)]
    for t in threads:
        t.start()
    end = stop_at + 30  # a request the server has not answered by then is lost with its thread
    for t in threads:
        t.join(max(0.0, end - time.time()))
    return {"submissions": [row for rows in out for row in rows], "errors": errors}


class Sim:
    """Every simulated worker's runs: offered → fetch, Running, first log batch → (duration) →
    last log batch, finish. Calls go through a small pool; finishes wait in a timer heap."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_at = args.start_at + args.duration
        self.pool = ThreadPoolExecutor(CALL_THREADS)
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.due: list[tuple[float, int, str]] = []  # (when, job id, token)
        self.jobs: dict[int, dict] = {}  # id -> {worker, offered, running, finished, duration}
        self.calls: dict[str, list[float]] = {k: [] for k in ("fetch", "state", "logs", "finish", "poll")}
        self.polls = {"count": 0, "errors": 0, "short": 0}
        self.errors: list[str] = []
        self.active: dict[str, set[int]] = {}  # worker -> runs it lists in its polls
        self.waiting: dict[str, threading.Event] = {}

    def _call(self, kind: str, fn, *a):
        t0 = time.perf_counter()
        answer = fn(*a)
        with self.lock:
            self.calls[kind].append(time.perf_counter() - t0)
        return answer

    def _error(self, what: str, exc: BaseException) -> None:
        with self.lock:
            if len(self.errors) < 10:
                self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def duration(self, job_id: int) -> float:
        return random.Random(self.args.seed * 1_000_003 + job_id).uniform(self.args.min_s, self.args.max_s)

    def start(self, worker: str, job_id: int, token: str) -> None:
        job = Client(self.args.url, f"Job {token}")
        with self.lock:
            self.jobs[job_id]["picked"] = time.time()  # minus "offered": this generator's own queueing
        try:
            self._call("fetch", job.get, job_path(job_id))
            self._call("state", job.post, job_path(job_id, "state"), {"state": "Running"})
            running = time.time()
            self._call("logs", job.post, job_path(job_id, "logs"), {"index": 0, "lines": [
                record("dutlab-run simulated", "info"), record("start: simulated boot", "info"), record("login:")]})
        except Exception as exc:  # noqa: BLE001 - counted; the job stays listed until the server ends it
            self._error(f"job {job_id} start", exc)
            return
        with self.wake:
            self.jobs[job_id]["running"] = running
            heapq.heappush(self.due, (running + self.jobs[job_id]["duration"], job_id, token))
            self.wake.notify()

    def finish(self, job_id: int, token: str) -> None:
        job = Client(self.args.url, f"Job {token}")
        result = JobResult("pass")
        try:
            self._call("logs", job.post, job_path(job_id, "logs"), {"index": 3, "lines": [
                record("simulated test done"), record(result.results_record(), "results")]})
            self._call("finish", job.post, job_path(job_id, "finish"), result.finish_body("", 5))
        except Exception as exc:  # noqa: BLE001
            self._error(f"job {job_id} finish", exc)
            return
        with self.lock:
            self.jobs[job_id]["finished"] = time.time()

    def timer(self) -> None:
        """Hand each run's finish to the pool when its duration has passed."""
        with self.wake:
            while time.time() < self.stop_at:
                now = time.time()
                while self.due and self.due[0][0] <= now:
                    _, job_id, token = heapq.heappop(self.due)
                    self.pool.submit(self.finish, job_id, token)
                self.wake.wait(min(0.5, self.due[0][0] - now) if self.due else 0.5)

    def worker(self, name: str, token: str, first_at: float) -> None:
        client = Client(self.args.url, f"Worker {token}")
        mine = self.active.setdefault(name, set())
        while time.time() < first_at:
            time.sleep(0.01)
        while (left := self.stop_at - time.time()) > 0.5:
            with self.lock:
                running = sorted(mine)
            body = {"protocol": PROTOCOL, "version": "simulation", "wait": min(POLL_WAIT, left - 0.5),
                    "running": running}
            t0 = time.perf_counter()
            try:
                answer = client.post(poll_path(name), body, timeout=POLL_WAIT + 15)
            except Exception as exc:  # noqa: BLE001 - dutlab-worker retries too
                self._error(f"poll {name}", exc)
                with self.lock:
                    self.polls["errors"] += 1
                time.sleep(0.5)
                continue
            now = time.time()
            with self.lock:
                self.polls["count"] += 1
                self.calls["poll"].append(time.perf_counter() - t0)
                for item in answer.get("ended", []):
                    mine.discard(int(item["id"]))
                for job_id in answer.get("unknown", []):
                    mine.discard(int(job_id))
                for item in answer.get("start", []):
                    job_id = int(item["id"])
                    if job_id in mine:
                        continue  # offered again while it runs here: ignored, as dutlab-worker does
                    mine.add(job_id)
                    self.jobs[job_id] = {"worker": name, "offered": now, "duration": self.duration(job_id)}
                    self.pool.submit(self.start, name, job_id, str(item["token"]))
            interval = float(answer.get("poll_interval") or 0)
            if not any(answer.get(k) for k in ("start", "cancel", "unknown", "ended")) and \
                    time.perf_counter() - t0 < body["wait"] - 1:
                # the server held no poll (all its long-poll slots taken): dutlab-worker would poll
                # again at once, a busy loop; the simulation waits SHORT_POLL_PAUSE instead
                with self.lock:
                    self.polls["short"] += 1
                interval = max(interval, SHORT_POLL_PAUSE)
            if interval:
                time.sleep(min(interval, max(0.0, self.stop_at - time.time())))

    def run(self) -> dict:
        names = json.loads(self.args.workers_file.read_text())
        # first polls spread over a second, as workers started at different times come online
        first = [self.args.start_at + i / len(names) for i in range(len(names))]
        threads = [threading.Thread(target=self.worker, args=(w["name"], w["token"], at), daemon=True)
                   for w, at in zip(names, first, strict=True)]
        threads.append(threading.Thread(target=self.timer, daemon=True))
        for t in threads:
            t.start()
        end = self.stop_at + 30
        for t in threads:
            t.join(max(0.0, end - time.time()))
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            return {"jobs": {str(k): v for k, v in self.jobs.items()}, "calls": self.calls, "polls": self.polls,
                    "errors": self.errors}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--role", choices=("submit", "workers"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--start-at", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--auth", default="", help="submit: the Authorization value")
    p.add_argument("--body-file", type=Path, help="submit: the job definition")
    p.add_argument("--rate", type=float, default=35.0, help="submit: jobs per second")
    p.add_argument("--connections", type=int, default=4, help="submit: concurrent clients")
    p.add_argument("--workers-file", type=Path, help="workers: JSON [{name, token}]")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--min-s", type=float, default=1.0, help="workers: shortest simulated job")
    p.add_argument("--max-s", type=float, default=30.0, help="workers: longest simulated job")
    args = p.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost")):
        sys.exit("simload: loopback URLs only")
    got = submitters(args) if args.role == "submit" else Sim(args).run()
    args.out.write_text(json.dumps(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
