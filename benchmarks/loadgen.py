#!/usr/bin/env python3
"""A load generator process for the benchmarks (started and stopped by submission.py, latency.py).

Runs --threads keep-alive clients from --start-at (epoch) for --duration seconds against one
endpoint and prints {"count", "errors", "error_sample", "latencies"} as JSON. Bounded in time and
count (--max-requests per thread); loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from labkit import Client, HttpError  # noqa: E402

MODES = {
    # mode: (method, path, content type, ok statuses)
    "version": ("GET", "/api/v1/system/version", "", (200,)),
    "rest": ("POST", "/api/v1/jobs", "application/yaml", (201,)),
    "rpc": ("POST", "/RPC2", "text/xml", (200,)),
    "get": ("GET", "", "", (200,)),  # any GET: --path
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--auth", default="")
    p.add_argument("--mode", choices=list(MODES), required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--start-at", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--body-file", type=Path)
    p.add_argument("--path", default="", help="the path of --mode get (with its query string)")
    p.add_argument("--max-requests", type=int, default=100_000)
    args = p.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.exit("loadgen: loopback URLs only")
    method, path, ctype, ok = MODES[args.mode]
    path = args.path or path
    if not path.startswith("/"):
        sys.exit("loadgen: --mode get needs --path /...")
    body = None
    if args.body_file:
        text = args.body_file.read_text()
        body = (xmlrpc.client.dumps((text,), "scheduler.jobs.submit") if args.mode == "rpc" else text).encode()
    counts = [0] * args.threads
    errors = [0] * args.threads
    samples: list[list[float]] = [[] for _ in range(args.threads)]
    first_error: list[str] = []
    stop_at = args.start_at + args.duration

    def worker(i: int) -> None:
        client = Client(args.url, args.auth)
        try:
            client.request("GET", "/api/v1/system/version")  # connect before the clock starts
            while time.time() < args.start_at:
                time.sleep(0.001)
            for _ in range(args.max_requests):
                t0 = time.perf_counter()
                if time.time() >= stop_at:
                    break
                try:
                    status, _, raw = client.request(method, path, body, ctype=ctype, expect=())
                    good = status in ok
                    if good and args.mode == "rpc":
                        xmlrpc.client.loads(raw)  # a Fault raises
                except (HttpError, OSError, xmlrpc.client.Fault) as exc:
                    good, raw = False, str(exc).encode()
                    client.close()
                if good:
                    counts[i] += 1
                    samples[i].append(time.perf_counter() - t0)
                else:
                    errors[i] += 1
                    if not first_error:
                        first_error.append(raw[:300].decode(errors="replace"))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + (args.start_at - time.time()) + 60)
    print(json.dumps({"count": sum(counts), "errors": sum(errors), "error_sample": first_error[:1],
                      "latencies": [x for s in samples for x in s]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
