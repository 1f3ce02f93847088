"""Several server processes on PostgreSQL + Redis (issue 17, scope 4): `serve --processes 2`, plus a
second `serve` on another port against the same database and queue (as N services behind nginx).

Both children answer, a killed child is replaced, a burst of jobs for long-polling workers is
assigned once, long-polls are woken across processes and log batches of one job sent through
both servers end up complete and in order. `longpoll_interval` is far beyond the polls' wait, so
only a notification can answer a held poll before its deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import yaml

import factories
from dutlab.dispatcher import protocol
from dutlab.service.lab.workers import PING_RESOLUTION
from labkit import BIN, Pid, http, start_lab, write_config
from labkit.backends import sqlite_urls
from labkit.procs import free_port

pytestmark = pytest.mark.backend



def _job(device_type: str) -> str:
    return factories.job_text("procs", device_type=device_type)


def _need_postgres_and_redis() -> None:
    database, queue = os.environ.get("DUTLAB_TEST_DATABASE", ""), os.environ.get("DUTLAB_TEST_QUEUE", "")
    if database.startswith("postgres") and queue.startswith("redis"):
        return
    if (database or queue) and os.environ.get("CI") == "true":
        pytest.fail(f"several server processes need DUTLAB_TEST_DATABASE=postgresql://... and "
                    f"DUTLAB_TEST_QUEUE=redis://... together; got {database!r} and {queue!r}")
    pytest.skip("serve --processes N runs on PostgreSQL + Redis: this runs in the PostgreSQL + Redis pass")


class Servers:
    """`serve --processes 2` (lab.url) and a second `serve` (url_b) on one database and queue."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.port_b = free_port()
        self.url_b = f"http://127.0.0.1:{self.port_b}"
        lab.spawn("serve-b", [str(BIN / "dutlab-server"), "--config", str(lab.config), "serve",
                              "--listen", f"127.0.0.1:{self.port_b}"])
        self.wait_answering(self.url_b)

    def urls(self) -> tuple[str, str]:
        return self.lab.url, self.url_b

    def children(self, want: int = 2, timeout: float = 30) -> list[int]:
        """The parent's serving children once there are `want` of them."""
        parent = self.lab.pid("serve")
        deadline = time.monotonic() + timeout
        while True:
            kids = _children(parent)
            if len(kids) == want or time.monotonic() > deadline:
                return kids
            time.sleep(0.05)

    def wait_answering(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if http("GET", url + "/api/v1/system/version", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{url} does not answer:\n{self.lab.log('serve-b')}")

    def worker_api(self, url: str, path: str, body: dict, auth: str, timeout: float = 30):
        return http("POST", url + path, body, auth=auth, timeout=timeout)


def _children(parent: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                kids.append(int(entry))
    return sorted(kids)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    _need_postgres_and_redis()
    # each server thread keeps a database connection: 3 processes x 16 threads stay well below
    # PostgreSQL's default max_connections (100), with room for the consumer and the test
    lab, stop = start_lab(tmp_path_factory.mktemp("procs"), serve_args=("--processes", "2"),
                          longpoll_interval=3600, threads=16)
    try:
        yield Servers(lab)
    finally:
        stop()


def _lab_objects(lab, workers: int, devices_each: int, prefix: str) -> dict[str, str]:
    """Workers with devices (health Good) of device type `prefix` (each test its own: the jobs one
    leaves queued cannot start in another); their tokens by name."""
    lab.add_device_type(prefix, template="qemu", disable_health_checks=True)
    tokens = {}
    for w in range(workers):
        name = f"{prefix}{w}"
        tokens[name] = lab.add_worker(name)
        for d in range(devices_each):
            lab.add_device(f"{name}-d{d}", prefix, name, "{% extends 'qemu.jinja2' %}", health="Good")
    return tokens


def _poll(url: str, name: str, token: str, running: list[int], wait: float) -> dict:
    r = http("POST", url + protocol.poll_path(name), {"protocol": protocol.PROTOCOL, "version": "test",
                                                      "running": running, "wait": wait},
             auth=f"Worker {token}", timeout=wait + 30)
    assert r.status == 200, r.text
    return r.json()


def _run(url: str, job_id: int, token: str) -> None:
    r = http("POST", url + protocol.job_path(job_id, "state"), {"state": "Running"}, auth=f"Job {token}")
    assert r.status == 200, r.text


def test_two_processes_both_answer_and_a_killed_one_is_replaced(servers):
    lab = servers.lab
    kids = servers.children()
    assert len(kids) == 2, f"serve --processes 2 has children {kids}:\n{lab.log('serve')}"
    for kid in kids:
        assert open(f"/proc/{kid}/cmdline").read().split("\0")[-2:-1] == ["2"]  # forked, not exec'd
    # each child alone: the other stopped, a new connection can only be taken by this one
    for alone in kids:
        others = [Pid.of(k) for k in kids if k != alone]
        for other in others:
            other.signal(signal.SIGSTOP)
        try:
            assert http("GET", lab.url + "/api/v1/system/version", timeout=30).status == 200
        finally:
            for other in others:
                other.signal(signal.SIGCONT)

    killed = kids[0]
    Pid.of(killed).signal(signal.SIGKILL)
    replaced = servers.children()
    deadline = time.monotonic() + 30
    while (killed in replaced or len(replaced) != 2) and time.monotonic() < deadline:
        time.sleep(0.05)
        replaced = servers.children()
    assert killed not in replaced and len(replaced) == 2, (kids, replaced, lab.log("serve"))
    assert f"server process {killed} ended (killed by signal SIGKILL)" in lab.log("serve")
    for _ in range(10):
        assert http("GET", lab.url + "/api/v1/system/version", timeout=30).status == 200
    assert lab.json("GET", "/api/v1/system/version")


def test_sigterm_to_the_parent_alone_stops_every_child_and_waits_for_them(servers):
    lab = servers.lab
    port = free_port()
    proc = lab.spawn("serve-c", [str(BIN / "dutlab-server"), "--config", str(lab.config), "serve",
                                 "--processes", "2", "--listen", f"127.0.0.1:{port}"])
    try:
        servers.wait_answering(f"http://127.0.0.1:{port}")
        kids = [Pid.of(k) for k in _children(proc.pid)]
        assert len(kids) == 2, lab.log("serve-c")
        Pid.of(proc.pid).signal(signal.SIGTERM)  # the parent only, as systemd and the init script do
        assert proc.wait(60) == 0, lab.log("serve-c")
        assert not any(kid.exists() for kid in kids), lab.log("serve-c")  # waited for: gone, reaped
        assert "SIGTERM: stopping 2 server processes" in lab.log("serve-c")
    finally:
        lab.stop("serve-c")


def test_a_parent_killed_outright_takes_its_children_with_it(servers):
    """The init script's last resort is SIGKILL to the PID it tracks: no child may keep the port."""
    lab = servers.lab
    port = free_port()
    proc = lab.spawn("serve-d", [str(BIN / "dutlab-server"), "--config", str(lab.config), "serve",
                                 "--processes", "2", "--listen", f"127.0.0.1:{port}"])
    kids: list = []
    try:
        servers.wait_answering(f"http://127.0.0.1:{port}")
        kids = [Pid.of(k) for k in _children(proc.pid)]
        assert len(kids) == 2, lab.log("serve-d")
        Pid.of(proc.pid).signal(signal.SIGKILL)
        proc.wait(30)
        for kid in kids:
            assert kid.wait_gone(30), f"server process {kid.pid} outlived its parent:\n{lab.log('serve-d')}"
    finally:
        lab.stop("serve-d")
        for kid in kids:  # when the test failed: the group of a dead leader is not signalled
            if kid is not None and kid.running():
                kid.signal(signal.SIGKILL)


def test_a_burst_of_jobs_is_assigned_once_to_workers_long_polling_both_servers(servers):
    lab = servers.lab
    tokens = _lab_objects(lab, workers=4, devices_each=2, prefix="burst")
    urls = servers.urls()
    started: dict[str, list[int]] = {name: [] for name in tokens}
    errors: list[str] = []
    stop = threading.Event()

    def worker(n: int, name: str) -> None:
        polls = 0
        try:
            while not stop.is_set():
                url = urls[(n + polls) % 2]  # alternate the servers, two workers starting on each
                polls += 1
                answer = _poll(url, name, tokens[name], started[name], 3)
                for item in answer["start"]:
                    started[name].append(item["id"])
                    _run(urls[polls % 2], item["id"], item["token"])
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            errors.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(n, name)) for n, name in enumerate(tokens)]
    for thread in threads:
        thread.start()
    try:
        ids = [lab.submit(_job("burst")) for _ in range(12)]  # 12 jobs for 8 devices, all while the polls wait
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not errors:
            if sum(len(v) for v in started.values()) >= 8:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    every = [i for v in started.values() for i in v]
    assert len(every) == 8 and len(set(every)) == 8, started  # 8 devices: 8 jobs, none handed out twice
    jobs = {i: lab.job(i) for i in ids}
    running = {i: j for i, j in jobs.items() if j["state"] == "Running"}
    assert sorted(running) == sorted(every)
    assert len({j["actual_device"] for j in running.values()}) == 8  # each device one job
    for name, mine in started.items():
        assert {running[i]["worker"] for i in mine} <= {name}  # on the worker it was handed to
    devices = [d for d in lab.json("GET", "/api/v1/devices?limit=100")["results"]
               if d["hostname"].startswith("burst")]
    assert sorted(d["current_job"] for d in devices) == sorted(every)
    assert all(d["state"] == "Running" for d in devices)
    assert sorted(j["state"] for i, j in jobs.items() if i not in running) == ["Submitted"] * 4


def test_long_polls_are_woken_across_processes(servers):
    lab = servers.lab
    token = _lab_objects(lab, workers=1, devices_each=1, prefix="wake")["wake0"]
    url_a, url_b = servers.urls()

    # a submission on A: the consumer's pass wakes the poll held on B
    answers: list = []
    before = _last_ping(lab, "wake0")
    held = threading.Thread(target=lambda: answers.append(_poll(url_b, "wake0", token, [], 12)))
    held.start()
    _wait_polled(lab, "wake0", before)
    job_id = lab.submit(_job("wake"))
    held.join()
    assert [item["id"] for item in answers[0]["start"]] == [job_id]
    _run(url_a, job_id, answers[0]["start"][0]["token"])

    # a cancel on B wakes the poll held on A (any of its children)
    answers.clear()
    held = threading.Thread(target=lambda: answers.append(_poll(url_a, "wake0", token, [job_id], 12)))
    before = _last_ping(lab, "wake0")
    held.start()
    _wait_polled(lab, "wake0", before)
    assert http("POST", url_b + f"/api/v1/jobs/{job_id}/cancel", token=lab.admin_token).status < 300
    held.join()
    assert answers[0]["cancel"] == [job_id]


def test_a_wake_up_made_in_one_child_reaches_a_poll_held_in_the_other(servers):
    """The children of one `serve --processes 2` tell their own Redis messages from each other's."""
    lab = servers.lab
    token = _lab_objects(lab, workers=1, devices_each=1, prefix="sibling")["sibling0"]
    first, second = [Pid.of(k) for k in servers.children()]
    answers: list = []
    job_id = lab.submit(_job("sibling"))
    start = _poll(lab.url, "sibling0", token, [], 12)["start"]
    assert [item["id"] for item in start] == [job_id]
    _run(lab.url, job_id, start[0]["token"])

    second.signal(signal.SIGSTOP)  # the poll can only go to the first child
    try:
        before = _last_ping(lab, "sibling0")
        held = threading.Thread(target=lambda: answers.append(_poll(lab.url, "sibling0", token, [job_id], 12)))
        held.start()
        _wait_polled(lab, "sibling0", before, url=servers.url_b)
    finally:
        second.signal(signal.SIGCONT)
    first.signal(signal.SIGSTOP)  # the cancel can only go to the second
    try:
        canceled = http("POST", lab.url + f"/api/v1/jobs/{job_id}/cancel", token=lab.admin_token, timeout=30)
        assert canceled.status < 300, canceled.text
    finally:
        first.signal(signal.SIGCONT)
    held.join()
    assert answers[0]["cancel"] == [job_id]


def _last_ping(lab, name: str) -> str | None:
    """The worker's last_ping, once it is old enough that the next poll's heartbeat writes it (a
    poll writes it only when the stored one is older than PING_RESOLUTION)."""
    time.sleep(PING_RESOLUTION.total_seconds())
    return lab.json("GET", f"/api/v1/workers/{name}")["last_ping"]


def _wait_polled(lab, name: str, before: str | None, url: str | None = None, timeout: float = 30) -> None:
    """Until the server has the worker's new poll (its heartbeat moved last_ping), and a moment
    for the poll to make its first read and sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = http("GET", (url or lab.url) + f"/api/v1/workers/{name}", token=lab.admin_token)
        if r.status == 200 and r.json()["last_ping"] != before:
            time.sleep(0.5)
            return
        time.sleep(0.02)
    raise AssertionError(f"worker {name} never polled")


def test_log_batches_of_one_job_through_both_servers_are_stored_once_in_order(servers):
    lab = servers.lab
    token = _lab_objects(lab, workers=1, devices_each=1, prefix="logs")["logs0"]
    job_id = lab.submit(_job("logs"))
    start = _poll(lab.url, "logs0", token, [], 12)["start"]
    job_token = start[0]["token"]
    _run(servers.url_b, job_id, job_token)
    lines = [json.dumps({"dt": "2026-01-01T00:00:00", "lvl": "target", "msg": f"line {i}"}) for i in range(600)]
    size = 20
    errors: list[str] = []

    def uploader(first: int) -> None:
        # both uploaders send every batch, each alternating the servers from a different one: the
        # same lines arrive twice, through different processes, at the same time
        for n, index in enumerate(range(0, len(lines), size)):
            url = servers.urls()[(first + n) % 2]
            batch = {"index": index, "lines": lines[index:index + size]}
            r = http("POST", url + protocol.job_path(job_id, "logs"), batch, auth=f"Job {job_token}")
            if r.status != 200:
                errors.append(f"{url} batch {index}: {r.status} {r.text}")

    threads = [threading.Thread(target=uploader, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    r = http("GET", lab.url + f"/api/v1/jobs/{job_id}/logs", token=lab.admin_token)
    assert r.status == 200
    assert [rec["msg"] for rec in yaml.safe_load(r.text)] == [f"line {i}" for i in range(600)]


def test_several_processes_on_sqlite_are_refused_naming_the_setting(tmp_path):
    database, queue = sqlite_urls(tmp_path)
    config = write_config(tmp_path, database, queue, free_port())
    proc = subprocess.run([str(BIN / "dutlab-server"), "--config", str(config), "serve", "--processes", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "processes: 2 server processes need database: postgresql://" in proc.stderr
