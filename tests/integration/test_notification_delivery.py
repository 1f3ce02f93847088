"""Delivery that survives failures, and lab alerts, on the real server, consumer and SMTP server.

- The SMTP server is down, the consumer is killed (SIGKILL) while mails wait for their retry and a
  job ends while no consumer runs; then the SMTP server, the server and the consumer start again:
  every notification arrives exactly once.
- A device whose health check fails: its owner and the admins get one alert mail, and a second
  failure within alert_interval sends none; a worker that stops polling is reported Offline.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest
from notify_parts import ApiWorker, Smtp, notify_job, rows, wait_for

from labkit import free_port, start_lab

pytestmark = pytest.mark.backend

NOTIFY = """notify:
  criteria: {status: finished}
  recipients:
  - to: {method: email, email: dev@dutlab.test}
  - to: {method: email, user: admin}"""


@contextmanager
def lab_with_smtp(tmp_path, **settings):
    port = free_port()
    lab, stop = start_lab(tmp_path, email={"host": "127.0.0.1", "port": port, "timeout": 5}, **settings)
    try:
        lab.smtp = Smtp(lab, port)
        lab.json("PATCH", "/api/v1/users/admin", {"email": "admin@dutlab.test"})
        lab.worker = ApiWorker(lab, "w1")
        lab.worker.poll()
        yield lab
    finally:
        stop()


def test_every_mail_arrives_once_after_the_consumer_is_killed_while_smtp_is_down(tmp_path):
    with lab_with_smtp(tmp_path, notification_backoff=1, notification_attempts=30) as lab:
        lab.add_qemu_device("qemu01", worker="w1")
        ended = [lab.worker.run(lab.submit(notify_job(f"job {i}", NOTIFY))) for i in range(3)]
        # one more job runs, and ends while no consumer runs (its plan waits in the queue)
        late = lab.submit(notify_job("late job", NOTIFY))
        late_id, late_token = lab.worker.offer(late)
        lab.worker.call(late_id, late_token, "/state", {"state": "Running"})

        def retrying() -> bool:  # each row failed at least twice and waits for its next try
            got = [r for job in ended for r in rows(lab, job)]
            return len(got) == 6 and all(r["state"] == "pending" and r["attempts"] >= 2 for r in got) and got
        waiting = wait_for("every row waiting for a retry", retrying)
        assert "127.0.0.1" in waiting[0]["last_error"] and "refused" in waiting[0]["last_error"].lower()
        lab.stop("consumer", sig=signal.SIGKILL)
        lab.worker.call(late_id, late_token, "/finish", {"result": "pass"})
        lab.restart("serve")
        lab.smtp.start()
        lab.restart("consumer")

        jobs = ended + [late]
        final = wait_for("every row sent", lambda: (lambda got: got if len(got) == 8 and all(
            r["state"] == "sent" for r in got) else None)([r for job in jobs for r in rows(lab, job)]), timeout=120)
        # a sent row is never claimed again, so what arrived now is all that will ever arrive
        mails = lab.smtp.mails()
        got = sorted((m["To"], int(m["X-Dutlab-Job"])) for m in mails)
        assert got == sorted((to, job) for job in jobs for to in ("dev@dutlab.test", "admin@dutlab.test"))
        assert len({m["Message-ID"] for m in mails}) == 8
        assert all(r["attempts"] >= 3 for r in final if r["job"] in ended)


def notifications_in_db(lab, subject_prefix: str) -> list[tuple]:
    """The lab's alert rows (REST shows only a job's), read from its database in this process."""
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database
    from dutlab.service.models import Notification

    db = open_database(load(str(lab.config)).database)
    try:
        query = Notification.select().where(Notification.subject.startswith(subject_prefix)).order_by(Notification.id)
        return [(n.subject, n.event, n.key, n.state, n.last_error) for n in query]
    finally:
        db.close()
        database.initialize(None)


def test_a_failed_health_check_alerts_the_owner_and_admins_once(tmp_path):
    with lab_with_smtp(tmp_path, admins=["ops@dutlab.test", "admin"], worker_heartbeat_timeout=4) as lab:
        lab.smtp.start()
        lab.add_user("alice")
        lab.json("PATCH", "/api/v1/users/alice", {"email": "alice@dutlab.test"})
        lab.add_qemu_device("qemu01", worker="w1", health_checks=True, owner_user="alice")
        check = lab.worker.run(error_type="Infrastructure", error_msg="no login prompt", passed=False)
        assert lab.job(check)["health_check"] is True
        people = ("alice@dutlab.test", "ops@dutlab.test", "admin@dutlab.test")
        for to in people:
            [mail] = lab.smtp.wait(1, to)
            assert mail["Subject"] == "[dutlab] device qemu01 is Bad"
            assert f"health check job {check} failed: Infrastructure no login prompt" in mail.get_content()
        # it fails again at once: held back, the rows say why
        lab.json("PATCH", "/api/v1/devices/qemu01", {"health": "Unknown", "reason": "try again"})
        again = lab.worker.run(passed=False)
        assert again != check and lab.json("GET", "/api/v1/devices/qemu01")["health"] == "Bad"
        def second_alert() -> list[tuple]:
            found = notifications_in_db(lab, "device:qemu01")
            events = sorted({r[1] for r in found}, key=lambda e: int(e.split(":")[1]))
            return [r for r in found if r[1] == events[-1]] if len(events) == 2 else []
        held = wait_for("the second alert's rows", second_alert)
        assert [r[3] for r in held] == ["skipped"] * 3 and all("alert_interval" in r[4] for r in held)
        assert sorted(m["To"] for m in lab.smtp.mails()) == sorted(people)
        # the worker stops polling: Offline, told to the admins and the owner of its device
        for to in people:
            [mail] = wait_for(f"the offline alert to {to}", lambda to=to: [
                m for m in lab.smtp.to(to) if m["Subject"] == "[dutlab] worker w1 is Offline"], timeout=60)
            assert "Its devices get no jobs until it is back: qemu01" in mail.get_content()
