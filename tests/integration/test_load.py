"""Load: 200 concurrent submitters × 5 jobs against a real server (issue 18, scope 6).

Every submission is answered — 201, or 503 with Retry-After when the server sheds load, which the
client honours and retries — no connection is reset or refused, and the stored jobs are exactly
the acknowledged ones (none lost, none stored twice).
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from labkit import smoke_job

pytestmark = pytest.mark.slow

SUBMITTERS, JOBS_EACH = 200, 5


def _job(name: str) -> str:
    # smoke_job()'s definition under a unique name: the stored jobs are matched to the answers by it
    text = smoke_job()
    return text.replace("job_name: ", f"job_name: {name} ", 1) if "job_name: " in text else text


def _submit(port: int, token: str, body: str, results: list, errors: list) -> None:
    """One submission on a new connection; 503 answers are retried after their Retry-After."""
    for _attempt in range(30):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            conn.request("POST", "/api/v1/jobs", body=body.encode(),
                         headers={"Authorization": f"Token {token}", "Content-Type": "application/yaml"})
            answer = conn.getresponse()
            data = answer.read()
        except OSError as exc:  # a reset, a refused connect, a timeout: what this test forbids
            errors.append(repr(exc))
            return
        finally:
            conn.close()
        if answer.status == 503:
            retry = answer.getheader("Retry-After")
            if retry is None:
                errors.append(f"503 without Retry-After: {data[:200]!r}")
                return
            results.append(("503", None))
            time.sleep(float(retry))
            continue
        results.append((answer.status, data))
        return
    errors.append("still 503 after 30 attempts")


def test_200_concurrent_submitters_every_submission_answered_and_stored_once(lab_server):
    lab = lab_server
    lab.add_worker("w1")  # never started: the jobs stay queued, the scheduler still runs passes
    lab.add_device_type("qemu", disable_health_checks=True)
    lab.add_device("q1", "qemu", "w1", "{% extends 'qemu.jinja2' %}")
    results: list = []
    errors: list = []
    start = threading.Barrier(SUBMITTERS)

    def submitter(n: int) -> None:
        start.wait()  # all 200 connect at once: the burst the listen backlog must absorb
        for k in range(JOBS_EACH):
            _submit(lab.port, lab.admin_token, _job(f"load-{n}-{k}"), results, errors)

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert not any(t.is_alive() for t in threads), "submitters still running after 15 minutes"

    assert errors == [], f"{len(errors)} connection errors, first: {errors[:3]}"
    answers = [(status, data) for status, data in results if status != "503"]
    assert len(answers) == SUBMITTERS * JOBS_EACH
    bad = [(status, data[:200]) for status, data in answers if status != 201]
    assert bad == [], f"{len(bad)} submissions not accepted, first: {bad[:3]}"

    acknowledged = sorted(i for _s, data in answers for i in json.loads(data)["job_ids"])
    assert len(set(acknowledged)) == len(acknowledged) == SUBMITTERS * JOBS_EACH

    listed = lab.json("GET", "/api/v1/jobs?limit=1000")
    assert listed["count"] == SUBMITTERS * JOBS_EACH  # nothing stored that was not acknowledged
    stored = {job["id"]: job["description"] for job in listed["results"]}
    assert sorted(stored) == acknowledged
    names = sorted(stored.values())
    assert len(set(names)) == len(names)  # each submission stored once
    assert {name.split(" ")[0] for name in names} == {f"load-{n}-{k}" for n in range(SUBMITTERS)
                                                       for k in range(JOBS_EACH)}
