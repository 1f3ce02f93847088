"""Long-polls wake by notification (service/wakeups.py), not by re-reading the database at 20 Hz.

The safety re-read (`longpoll_interval`) is set far beyond the polls' wait here, so only a
notification can answer a held poll before its deadline.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

import factories
from dutlab.dispatcher import protocol
from dutlab.service import scheduler
from labkit import http, start_lab

JOB = factories.job_text("wake-ups")
BODY = {"protocol": protocol.PROTOCOL, "version": "test", "running": []}


class QueryCounter(logging.Handler):
    """Counts the SQL statements peewee runs in threads whose name starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.DEBUG)
        self.prefix, self.count = prefix, 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName.startswith(self.prefix):
            self.count += 1

    def __enter__(self) -> QueryCounter:
        logger = logging.getLogger("peewee")
        self.level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("peewee")
        logger.removeHandler(self)
        logger.setLevel(self.level)


class QueriesByThread(QueryCounter):
    """The SQL statements peewee runs, per thread name."""

    def __init__(self) -> None:
        super().__init__("")
        self.by_thread: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.by_thread[record.threadName] = self.by_thread.get(record.threadName, 0) + 1

    def of(self, name: str) -> int:
        return self.by_thread.get(name, 0)


def held_poll(app, wait: float, name: str) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(name=name, target=lambda: answers.append(
        app.api("POST", protocol.poll_path("w1"), {**BODY, "wait": wait}, token=None, auth="Worker tok-w1")))
    thread.start()
    return thread, answers


def open_connections() -> int:
    """PostgreSQL's sessions on this test's database."""
    from dutlab.service.db import database

    return database.execute_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                ).fetchone()[0]


def qemu_lab() -> None:
    dtype = factories.device_type("qemu")
    factories.device("qemu01", dtype, factories.worker("w1"))


def test_an_idle_long_poll_reads_the_database_at_its_safety_interval_only(app, db, settings):
    qemu_lab()
    settings.longpoll_interval = 1.0
    with QueryCounter("notified") as notified:
        thread, answers = held_poll(app, 3, "notified")
        thread.join()
    assert answers[0].status == 200 and answers[0].json()["start"] == []
    # auth, heartbeat, the first read, ~3 safety re-reads, mark_seen: not one read per 50 ms
    assert 0 < notified.count <= 25, notified.count
    settings.longpoll_interval, settings.longpoll_notify = 0.05, False  # the old polling loop
    with QueryCounter("polling") as polling:
        thread, _ = held_poll(app, 3, "polling")
        thread.join()
    assert polling.count > 3 * notified.count, (polling.count, notified.count)


def test_held_polls_give_their_database_connections_back_while_they_wait(app, db, settings):
    """Hundreds of idle workers would otherwise hold a PostgreSQL connection each (CI's PostgreSQL
    pass runs this; a SQLite connection is kept on purpose: it has no server-side slot, and
    reopening it on every wake-up cost more than the idle poll's other work)."""
    from dutlab.service.db import is_sqlite

    if is_sqlite():
        pytest.skip("counts PostgreSQL sessions: runs in the PostgreSQL + Redis pass")
    settings.longpoll_interval = 3600.0
    dtype = factories.device_type("qemu")
    names = [f"w{i}" for i in range(6)]
    for name in names:
        factories.device(f"qemu-{name}", dtype, factories.worker(name))
    idle = open_connections()
    answers: list = []
    threads = [threading.Thread(name=f"held-{name}", target=lambda name=name: answers.append(app.api(
        "POST", protocol.poll_path(name), {**BODY, "wait": 8}, token=None, auth=f"Worker tok-{name}")))
        for name in names]
    with QueriesByThread() as queries:
        for thread in threads:
            thread.start()
        # auth, heartbeat, first read done in every poll: each is waiting (or about to)
        while any(queries.of(t.name) < 4 for t in threads) and all(t.is_alive() for t in threads):
            time.sleep(0.01)
        seen = []
        while all(t.is_alive() for t in threads):  # the polls hold for 8 s: look while they wait
            seen.append(open_connections())
            if seen[-1] <= idle:
                break
            time.sleep(0.05)
        held = all(t.is_alive() for t in threads)
        for thread in threads:
            thread.join()
    assert held and seen and seen[-1] <= idle, (idle, seen[-5:])
    assert [a.status for a in answers] == [200] * len(names) and all(a.json()["start"] == [] for a in answers)


def test_a_wake_up_in_this_process_answers_the_held_poll(app, db, settings):
    qemu_lab()
    settings.longpoll_interval = 3600.0
    job_id = app.api("POST", "/api/v1/jobs", {"definition": JOB}).json()["job_ids"][0]
    with QueryCounter("held") as held:
        thread, answers = held_poll(app, 10, "held")
        while held.count < 4:  # auth, heartbeat, first read done: the poll is waiting (or about to)
            time.sleep(0.01)
        time.sleep(0.2)
        assert thread.is_alive()
        assert job_id in scheduler.run_pass(settings).scheduled  # the pass wakes w1 after its commit
        thread.join()
    assert [s["id"] for s in answers[0].json()["start"]] == [job_id]


def test_wake_ups_from_the_consumer_and_the_server_reach_a_held_poll(tmp_path):
    lab, stop = start_lab(tmp_path, longpoll_interval=3600)
    try:
        token = lab.add_worker("w1")
        lab.add_qemu_device("qemu01", worker="w1")
        url, auth = f"{lab.url}{protocol.poll_path('w1')}", f"Worker {token}"
        assert http("POST", url, {**BODY, "wait": 0}, auth=auth).status == 200

        def poll_while(act, running=()) -> dict:
            answers: list = []
            thread = threading.Thread(target=lambda: answers.append(
                http("POST", url, {**BODY, "running": list(running), "wait": 12}, auth=auth)))
            thread.start()
            time.sleep(1)  # let the poll make its first read, so only a wake-up can answer it
            assert thread.is_alive()
            result = act()
            thread.join()
            assert answers[0].status == 200, answers[0].text
            return {"result": result, **answers[0].json()}

        # the pass runs in the consumer process: its wake-up crosses to `serve` by the queue's channel
        answer = poll_while(lambda: lab.api("POST", "/api/v1/jobs", {"definition": JOB}).json()["job_ids"][0])
        job_id = answer["result"]
        [offer] = answer["start"]
        assert offer["id"] == job_id
        running = http("POST", f"{lab.url}{protocol.job_path(job_id, 'state')}", {"state": "Running"},
                       auth=f"Job {offer['token']}")
        assert running.status == 200, running.text
        # a cancel is made by `serve` itself: the wake-up stays in the process
        answer = poll_while(lambda: lab.api("POST", f"/api/v1/jobs/{job_id}/cancel").json()["state"],
                            running=[job_id])
        assert answer["result"] == "Canceling" and answer["cancel"] == [job_id]
    finally:
        stop()
