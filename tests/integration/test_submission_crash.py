"""No acknowledged submission is lost when the server dies: kill -9 during a burst, restart on the
same database, every job id a client was given exists with its definition."""

from __future__ import annotations

import signal
import threading

import factories
from labkit import http

CLIENTS = 4
#: the server is killed once this many submissions were acknowledged (some are still in flight)
KILL_AFTER = 60


def test_acknowledged_jobs_survive_kill_9_mid_burst(lab_server):
    lab = lab_server
    lab.add_worker("w1")  # never polls: the jobs stay queued
    lab.add_qemu_device("qemu01", worker="w1")
    url, token = lab.url, lab.admin_token
    acked: dict[int, str] = {}  # job id → the definition its client sent
    lock = threading.Condition()
    refused: list[str] = []

    def client(c: int) -> None:
        n = 0
        while True:
            text = factories.job_text(f"crash {c}-{n}")
            try:
                r = http("POST", f"{url}/api/v1/jobs", {"definition": text}, token=token, timeout=30)
            except OSError:  # the server is gone: this request was never acknowledged
                return
            if r.status != 201:
                with lock:
                    refused.append(f"{r.status} {r.text}")
                    lock.notify_all()
                return
            with lock:
                acked[r.json()["job_ids"][0]] = text
                lock.notify_all()
            n += 1

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    with lock:
        assert lock.wait_for(lambda: len(acked) >= KILL_AFTER or refused, timeout=120), "the burst never got going"
    assert not refused, refused
    lab.stop("serve", sig=signal.SIGKILL)
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not refused, refused
    lab.restart("serve")

    missing, wrong = [], []
    for job_id, text in sorted(acked.items()):
        r = lab.api("GET", f"/api/v1/jobs/{job_id}/definition")
        if r.status != 200:
            missing.append((job_id, r.status))
        elif r.text.strip() != text.strip():
            wrong.append(job_id)
    assert len(acked) >= KILL_AFTER
    assert not missing, f"acknowledged but lost after kill -9: {missing}"
    assert not wrong, f"stored with another definition: {wrong}"
    # the server still takes submissions on the same database
    assert lab.api("POST", "/api/v1/jobs", {"definition": factories.job_text("after")}).status == 201
