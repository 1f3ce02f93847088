"""The fuzz test of issue 18: more than 5,000 malformed requests across REST, the worker API and
XML-RPC against a real server, including every case the issue lists (tests/data/bad-requests).

Each answer must pass `bad_requests.problems`: no 5xx, no traceback, every 4xx a sentence that
names the problem (the corpus also says which words), no XML-RPC fault -32603. Afterwards the
server is up, its log holds no incident and no traceback, and its RSS is back within 50 MB of its
idle size, measured after a warm-up that sends requests on all its threads (so every thread has
its database connection and every code path its imports, as on any server that has worked).

"No request over 2 s": each request is sent alone, on its own connection, from one client thread,
so its time from the first byte sent to the last byte read is the server's work on it plus loopback
transfer. Other processes load this 2-core machine, so a request over 2 s is sent once more after
the run, and the test fails only when the second time is over 2 s as well; the slowest request is
reported either way.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
from bad_requests import Request, Sender, corpus, job_cases, problems, route_cases, rpc_cases

import factories
from labkit import http

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
LIMIT_SECONDS = 2.0
RSS_SLACK_MB = 50


def _job(n: object) -> str:
    return factories.job_text(f"fuzz {n}", extra="context: {arch: amd64}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def job_token(lab, worker_token: str) -> tuple[int, str]:
    """A job offered to worker w1, and the job token that came with the offer."""
    def poll(wait: float) -> dict:
        r = http("POST", f"{lab.url}/internal/v1/workers/w1/poll", {"protocol": 1, "running": [], "wait": wait},
                 auth=f"Worker {worker_token}")
        assert r.status == 200, r.text
        return r.json()

    poll(0)  # Online first, so the scheduler may use its device
    job_id = lab.submit(_job(n="offered"))
    for _ in range(30):
        for start in poll(2)["start"]:
            if start["id"] == job_id:
                return job_id, start["token"]
    raise AssertionError(f"job {job_id} was never offered to w1:\n{lab.log('consumer')}")


def warm_up(sender: Sender, lab) -> None:
    """Requests on every server thread at once, each kind of route once per thread."""
    kinds = [Request("warm validate", "POST", "/api/v1/jobs/validate", "admin",
                     {"Content-Type": "application/yaml"}, _job(n="w").encode()),
             Request("warm list", "GET", "/api/v1/jobs?limit=100"),
             Request("warm rpc", "POST", "/RPC2", "admin", {"Content-Type": "text/xml"},
                     b"<?xml version='1.0'?><methodCall><methodName>scheduler.jobs.list</methodName></methodCall>"),
             Request("warm 413", "POST", "/api/v1/jobs/validate", "anonymous", {}, b"x" * (1024 * 1024))]

    def worker() -> None:
        for _round in range(3):
            for req in kinds:
                sender.send(req)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_malformed_requests_never_get_a_5xx_and_the_server_stays_small(lab_server):
    from dutlab.service.app import ROUTE_MODULES

    lab = lab_server
    lab.add_device_type("qemu", disable_health_checks=True)
    w1 = lab.add_worker("w1")
    lab.add_device("q1", "qemu", "w1", QEMU_DICT)
    w2 = lab.add_worker("w2")  # the fuzzed worker: its polls must not re-offer (and re-token) w1's job
    job_id, token = job_token(lab, w1)
    for n in range(30):  # list calls then have rows to read
        lab.submit(_job(n=n))
    sender = Sender(lab.port, {"admin": f"Token {lab.admin_token}", "worker": f"Worker {w2}", "job": f"Job {token}"},
                    {"worker": "w2", "job_id": str(job_id)})
    serve_pid = lab.pid("serve")

    warm_up(sender, lab)
    time.sleep(1)
    idle = rss_mb(serve_pid)

    rng = random.Random(1818)
    routes = [(path, method, config.get("auth", "public")) for module in ROUTE_MODULES
              for path, method, _fn, config in module.routes.items]
    names = _rpc_names(sender)
    texts = [p.read_text() for p in sorted((DATA / "good-jobs").glob("*.yaml"))] + [_job(n="m")]
    cases = corpus() + route_cases(routes, rng, 40) + job_cases(texts, rng, 1200) + rpc_cases(names, rng, 12)
    assert len(cases) >= 5000
    rng.shuffle(cases)

    failures: list[str] = []
    timed: list[tuple[float, Request]] = []
    beating = _heartbeats(lab, w1, job_id)  # w1 stays Online, so its job (and token) stays valid
    for req in cases:
        try:
            answer = sender.send(req)
        except OSError as exc:  # a reset or a refused connection: never acceptable
            failures.append(f"{req.name}: {req.method} {req.path[:80]}: {exc!r}")
            continue
        failures.extend(problems(req, answer))
        timed.append((answer.seconds, req))
    # last, so that what the server threads hold afterwards is what the bursts left them
    failures.extend(_bursts(sender, job_id))
    beating.set()
    assert not failures, f"{len(failures)} bad answers of {len(cases)}:\n" + "\n".join(failures[:40])

    slowest = max(timed, key=lambda t: t[0])
    still_slow = []
    for seconds, req in sorted(timed, key=lambda t: -t[0]):
        if seconds <= LIMIT_SECONDS:
            break
        again = sender.send(req).seconds
        if again > LIMIT_SECONDS:
            still_slow.append(f"{req.name}: {seconds:.2f} s, then {again:.2f} s")
    print(f"{len(cases)} requests; slowest {slowest[0]:.2f} s: {slowest[1].name}")
    assert not still_slow, "requests over 2 s twice:\n" + "\n".join(still_slow)

    assert lab.procs.popen("serve").poll() is None, "the server died"
    assert http("GET", f"{lab.url}/api/v1/system/version").status == 200
    log = (lab.log_dir / "serve.log").read_text(errors="replace")
    assert "incident" not in log and "Traceback" not in log, log[-3000:]
    deadline = time.monotonic() + 15
    while rss_mb(serve_pid) > idle + RSS_SLACK_MB and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"serve RSS: idle {idle:.0f} MB, after the run {rss_mb(serve_pid):.0f} MB")
    assert rss_mb(serve_pid) <= idle + RSS_SLACK_MB, f"RSS {rss_mb(serve_pid):.0f} MB, idle was {idle:.0f} MB"


def _rpc_names(sender: Sender) -> list[str]:
    import xmlrpc.client

    body = xmlrpc.client.dumps((), "system.listMethods").encode()
    answer = sender.send(Request("list", "POST", "/RPC2", "anonymous", {"Content-Type": "text/xml"}, body))
    return xmlrpc.client.loads(answer.body)[0][0]


def _heartbeats(lab, worker_token: str, job_id: int) -> threading.Event:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(5):
            http("POST", f"{lab.url}/internal/v1/workers/w1/poll", {"protocol": 1, "running": [job_id], "wait": 0},
                 auth=f"Worker {worker_token}")

    threading.Thread(target=beat, daemon=True).start()
    return stop


def _bursts(sender: Sender, job_id: int) -> list[str]:
    """Issue 18: five 20 MiB bodies at once took the server to 759 MB, and it stayed there. Here:
    those five (refused), then bodies at the limits that are accepted and parsed, five at a time:
    16 MiB log batches of the worker API and 4 MiB job definitions."""
    state = Request("running", "POST", f"/internal/v1/jobs/{job_id}/state", "job",
                    {"Content-Type": "application/json"}, b'{"state": "Running"}', expect={"status": 200})
    out = problems(state, sender.send(state))
    record = json.dumps({"dt": "2026-01-01T00:00:00+00:00", "lvl": "target", "msg": "x" * 15000})
    logs = Request("16 MiB log batch", "POST", f"/internal/v1/jobs/{job_id}/logs", "job",
                   {"Content-Type": "application/json"}, json.dumps({"index": 0, "lines": [record] * 1000}).encode(),
                   expect={"status": 200})
    definition = "job_name: big\n# " + "y" * (4 * 1024 * 1024 - 200)
    validate = Request("4 MiB job definition", "POST", "/api/v1/jobs/validate", "admin",
                       {"Content-Type": "application/json"}, json.dumps({"definition": definition}).encode(),
                       expect={"status": 200})
    refused = Request("20 MiB anonymous body", "POST", "/api/v1/jobs/validate", "anonymous",
                      {"Content-Type": "application/yaml"}, b"y" * (20 * 1024 * 1024), expect={"status": 413})

    def one(req: Request) -> None:
        try:
            out.extend(problems(req, sender.send(req)))
        except OSError as exc:
            out.append(f"{req.name}: {exc!r}")

    for batch in ([refused] * 5, [logs] * 5 + [validate] * 5, [logs] * 5 + [validate] * 5):
        threads = [threading.Thread(target=one, args=(req,)) for req in batch]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return out
