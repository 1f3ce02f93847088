"""The worker API contract (docs/worker-api.md) against a real server and queue consumer."""

from __future__ import annotations

import json
import threading

import pytest

from labkit import http

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
JOB = """\
job_name: worker api
device_type: qemu
visibility: public
timeouts:
  job: {minutes: 5}
context: {arch: amd64}
actions:
- boot: {method: qemu, media: tmpfs, prompts: ['# ']}
"""


def rec(i: int, lvl: str = "target", msg: object = None) -> str:
    return json.dumps({"dt": "2026-01-01T00:00:00+00:00", "lvl": lvl, "msg": msg if msg is not None else f"line {i}"})


class Worker:
    def __init__(self, lab, name: str, token: str) -> None:
        self.lab, self.name, self.token = lab, name, token

    def poll(self, running=(), wait=0.0, protocol=1, auth=None):
        return http("POST", f"{self.lab.url}/internal/v1/workers/{self.name}/poll",
                    {"protocol": protocol, "version": "test", "running": list(running), "wait": wait},
                    auth=auth or f"Worker {self.token}")

    def wait_start(self, running=(), tries=20):
        for _ in range(tries):
            r = self.poll(running, wait=2)
            assert r.status == 200, r.text
            if r.json()["start"]:
                return r.json()["start"]
        raise AssertionError("no job offered")


def job_call(lab, method, job_id, token, suffix="", body=None):
    return http(method, f"{lab.url}/internal/v1/jobs/{job_id}{suffix}", body, auth=f"Job {token}")


@pytest.fixture
def lab(lab_server, tmp_path):
    token = lab_server.add_worker("w1")
    lab_server.add_qemu_device("qemu01", worker="w1", dictionary=QEMU_DICT)
    lab_server.worker = Worker(lab_server, "w1", token)
    return lab_server


def submit(lab) -> int:
    r = lab.api("POST", "/api/v1/jobs", {"definition": JOB})
    assert r.status == 201, r.text
    return r.json()["job_ids"][0]


def test_poll_auth_and_protocol(lab):
    w = lab.worker
    r = http("POST", f"{lab.url}/internal/v1/workers/w1/poll", {"protocol": 1})
    assert r.status == 401
    assert w.poll(auth=f"Token {lab.admin_token}").status == 403  # a user token is not a worker token
    assert w.poll(auth="Worker wrong").status == 403
    r = http("POST", f"{lab.url}/internal/v1/workers/nope/poll", {"protocol": 1}, auth=f"Worker {w.token}")
    assert r.status == 404 and "not registered" in r.json()["error"]
    r = w.poll(protocol=7)
    assert r.status == 409 and r.json()["path"] == "protocol"
    assert w.poll(protocol=0).status == 409
    r = w.poll()
    assert r.status == 200 and r.json() == {"protocol": 1, "start": [], "cancel": [], "unknown": []}
    worker = lab.api("GET", "/api/v1/workers/w1").json()
    assert worker["state"] == "Online" and worker["version"] == "test"


def test_job_lifecycle_logs_results_finish(lab):
    w = lab.worker
    w.poll()  # online
    job_id = submit(lab)
    [offer] = w.wait_start()
    assert offer["id"] == job_id
    token = offer["token"]
    # the job token is for this job's endpoints only
    assert http("GET", f"{lab.url}/internal/v1/jobs/{job_id}", auth=f"Worker {w.token}").status == 403
    assert http("GET", f"{lab.url}/api/v1/jobs", auth=f"Job {token}").status == 403
    r = job_call(lab, "GET", job_id, token)
    assert r.status == 200, r.text
    data = r.json()
    assert "qemu-system-x86_64" in data["device"] and "-m 256" in data["device"]
    assert "worker api" in data["definition"] and data["log_line_count"] == 0
    assert job_call(lab, "POST", job_id, token, "/state", {"state": "Finished"}).status == 400
    assert job_call(lab, "POST", job_id, token, "/state", {"state": "Running"}).json()["state"] == "Running"
    assert job_call(lab, "POST", job_id, token, "/state", {"state": "running"}).status == 200  # idempotent
    # logs: idempotent by index, gaps refused with the resume point
    lines = [rec(i) for i in range(10)]
    assert job_call(lab, "POST", job_id, token, "/logs", {"index": 0, "lines": lines}).json() == {"line_count": 10}
    more = [rec(i) for i in range(5, 15)]
    assert job_call(lab, "POST", job_id, token, "/logs", {"index": 5, "lines": more}).json() == {"line_count": 15}
    gap = job_call(lab, "POST", job_id, token, "/logs", {"index": 20, "lines": [rec(20)]})
    assert gap.status == 409 and gap.json()["line_count"] == 15
    results = [
        rec(15, "results", {"definition": "0_smoke", "case": "ok", "result": "pass"}),
        rec(16, "results", {"definition": "0_smoke", "case": "speed", "result": "pass", "measurement": 12.5,
                            "units": "MB/s"}),
        rec(17, "results", {"definition": "0_smoke", "case": "bad", "result": "fail"}),
        rec(18, "results", {"definition": "lava", "case": "job", "result": "pass"}),
    ]
    assert job_call(lab, "POST", job_id, token, "/logs", {"index": 15, "lines": results}).json()["line_count"] == 19
    # resend the results batch: no duplicate test cases
    assert job_call(lab, "POST", job_id, token, "/logs", {"index": 15, "lines": results}).json()["line_count"] == 19
    assert job_call(lab, "POST", job_id, token, "/logs", {"index": "x", "lines": []}).status == 400
    log = lab.api("GET", f"/api/v1/jobs/{job_id}/logs?start=3&end=5")
    assert log.text.splitlines() == ["- " + rec(3), "- " + rec(4)]
    assert log.headers["X-Dutlab-Job-Finished"] == "false"
    # finish: refused while the server lacks lines, then idempotent
    r = job_call(lab, "POST", job_id, token, "/finish", {"result": "pass", "log_line_count": 25})
    assert r.status == 409 and r.json()["line_count"] == 19
    assert job_call(lab, "POST", job_id, token, "/finish", {"result": "maybe"}).status == 400
    r = job_call(lab, "POST", job_id, token, "/finish",
                 {"result": "pass", "log_line_count": 19, "description": "pipeline: []\n"})
    assert r.json()["state"] == "Finished"
    # a Finished job takes nothing more: finish, logs and states are a 409 with a sentence
    again = job_call(lab, "POST", job_id, token, "/finish", {"result": "fail"})
    assert again.status == 409 and again.json()["state"] == "Finished", again.text
    assert "already Finished (Complete)" in again.json()["error"]
    assert job_call(lab, "POST", job_id, token, "/logs", {"index": 19, "lines": [rec(19)]}).status == 409
    assert job_call(lab, "POST", job_id, token, "/state", {"state": "Running"}).status == 409
    assert len(lab.api("GET", f"/api/v1/jobs/{job_id}/logs").text.splitlines()) == 19
    job = lab.api("GET", f"/api/v1/jobs/{job_id}").json()
    assert job["health"] == "Complete" and job["actual_device"] == "qemu01"
    cases = lab.api("GET", f"/api/v1/jobs/{job_id}/results").json()
    got = {(c["suite"], c["name"], c["result"], c["measurement"], c["unit"]) for c in cases}
    assert got == {("0_smoke", "ok", "pass", None, ""), ("0_smoke", "speed", "pass", "12.5000000000", "MB/s"),
                   ("0_smoke", "bad", "fail", None, ""), ("lava", "job", "pass", None, "")}
    junit = lab.api("GET", f"/api/v1/jobs/{job_id}/results?format=junit").text
    assert 'classname="0_smoke"' in junit and "<failure" in junit
    assert lab.api("GET", f"/api/v1/jobs/{job_id}/description").text == "pipeline: []\n"
    assert "qemu-system-x86_64" in lab.api("GET", f"/api/v1/jobs/{job_id}/config").text
    device = lab.api("GET", "/api/v1/devices/qemu01").json()
    assert device["state"] == "Idle"


def test_cancel_reaches_the_worker(lab):
    w = lab.worker
    w.poll()
    job_id = submit(lab)
    [offer] = w.wait_start()
    job_call(lab, "POST", job_id, offer["token"], "/state", {"state": "Running"})
    assert lab.api("POST", f"/api/v1/jobs/{job_id}/cancel").json()["state"] == "Canceling"
    r = w.poll(running=[job_id], wait=2).json()
    assert r["cancel"] == [job_id] and r["start"] == []
    job_call(lab, "POST", job_id, offer["token"], "/finish", {"result": "fail", "error_type": "Canceled"})
    assert lab.api("GET", f"/api/v1/jobs/{job_id}").json()["health"] == "Canceled"
    assert w.poll(running=[job_id]).json()["unknown"] == [job_id]  # protocol 1: kill and forget it
    r = w.poll(running=[job_id, 9999], protocol=2).json()
    assert r["protocol"] == 2 and r["unknown"] == [9999]
    assert r["ended"] == [{"id": job_id, "health": "Canceled", "reason": ""}]


def test_reoffer_mints_a_new_token(lab):
    w = lab.worker
    w.poll()
    job_id = submit(lab)
    [first] = w.wait_start()
    [second] = w.wait_start()  # the worker lost the answer and polls again without the job
    assert first["id"] == second["id"] == job_id and first["token"] != second["token"]
    assert job_call(lab, "GET", job_id, first["token"]).status == 403
    assert job_call(lab, "GET", job_id, second["token"]).status == 200


def test_long_poll_answers_when_work_arrives_and_blocks_nothing(lab):
    w = lab.worker
    w.poll()
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(w.poll(wait=15)))
    waiting.start()
    others = [Worker(lab, f"x{i}", lab.manage("workers", "add", f"x{i}").stdout.split()[-1]) for i in range(4)]
    idle = [threading.Thread(target=lambda o=o: o.poll(wait=3)) for o in others]
    for t in idle:
        t.start()
    # other requests are served while five long-polls wait
    assert lab.api("GET", "/api/v1/system/version").status == 200
    job_id = submit(lab)
    waiting.join()
    for t in idle:
        t.join()
    assert answers and answers[0].status == 200
    starts = [s["id"] for s in answers[0].json()["start"]]
    assert starts == [job_id]  # the waiting poll returned with the new job
