"""LAVA's notify block end to end: a real server and consumer, a real SMTP server (aiosmtpd's
daemon), a real HTTP receiver and a real IRC server (ngircd). Jobs end through the worker API
(notify_parts.ApiWorker), as a worker ends them, so no test here boots QEMU.

One lab serves the module's tests (each uses its own job names and recipients): starting it,
the SMTP server and ngircd once keeps the file quick.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from notify_parts import ApiWorker, Ircd, IrcListener, Receiver, Smtp, notify_job, rows, wait_for, wait_rows

from labkit import start_lab

pytestmark = pytest.mark.backend  # the lab's backends come from the environment (SQLite, or PostgreSQL + Redis)


@pytest.fixture(scope="module")
def nlab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notify")
    receiver = Receiver()
    from labkit import free_port

    smtp_port = free_port()
    lab, stop = start_lab(tmp, email={"host": "127.0.0.1", "port": smtp_port, "sender": "lab@dutlab.test",
                                      "timeout": 10},
                          callback_allowed_hosts=["127.0.0.1"], callback_timeout=5, notification_backoff=1)
    try:
        lab.smtp = Smtp(lab, smtp_port).start()
        lab.ircd = Ircd(lab).start()
        lab.receiver = receiver
        lab.json("PATCH", "/api/v1/users/admin", {"email": "admin@dutlab.test"})
        lab.worker = ApiWorker(lab, "w1")
        lab.worker.poll()  # Online
        lab.add_qemu_device("qemu01", worker="w1")
        yield lab
    finally:
        stop()
        receiver.close()


def test_the_submitter_gets_mail_and_criteria_filter(nlab):
    # no recipients and no callback: the submitter is told
    done = nlab.submit(notify_job("mail me", "notify: {criteria: {status: finished}}"))
    nlab.worker.run(done, results=[("0_smoke", "ok", "pass"), ("0_smoke", "bad", "fail")])
    [mail] = nlab.smtp.wait(1, to="admin@dutlab.test", job_id=done)
    assert mail["Subject"] == f"[dutlab] job {done} Complete: mail me" and mail["From"] == "lab@dutlab.test"
    body = mail.get_content()
    assert f"{nlab.url}/api/v1/jobs/{done}" in body and "Device:     qemu01 (qemu) on worker w1" in body
    assert "Results:" not in body  # quiet (the default) has no results; verbose has
    [row] = wait_rows(nlab, done, {"sent"})
    assert (row["method"], row["recipient"], row["key"], row["attempts"]) == ("email", "admin@dutlab.test",
                                                                            "submitter", 1)
    # complete vs incomplete: only the job whose health matches is mailed
    want_complete = nlab.submit(notify_job("complete only", "notify: {criteria: {status: complete}}"))
    nlab.worker.run(want_complete, passed=False)
    want_incomplete = nlab.submit(notify_job("incomplete only", """notify:
  criteria: {status: incomplete}
  verbosity: verbose
  recipients:
  - to: {method: email, email: qa@dutlab.test}"""))
    nlab.worker.run(want_incomplete, passed=False, results=[("1_boot", "login", "fail")])
    [mail] = nlab.smtp.wait(1, to="qa@dutlab.test", job_id=want_incomplete)
    body = mail.get_content()
    assert "Failure:    a test case failed (error type Test)" in body
    assert "1_boot: 1 fail" in body and "  1_boot/login" in body
    [skipped] = wait_rows(nlab, want_complete, {"skipped"})
    assert "criteria status complete" in skipped["last_error"] and "Incomplete" in skipped["last_error"]
    assert nlab.smtp.to("admin@dutlab.test", want_complete) == []
    # the rows are for the submitter and admins: they name the recipients
    other = nlab.add_user("mallory")
    assert nlab.api("GET", f"/api/v1/jobs/{done}/notifications", token=other).status == 403
    assert nlab.api("GET", f"/api/v1/jobs/{done}/notifications", token=None).status == 401
    out = nlab.manage("jobs", "details", str(want_complete)).stdout
    assert "Incomplete" in out and "notifications (1):" in out
    assert "skipped" in out and "criteria status complete" in out


def test_regression_and_progression(nlab):
    notify = """notify:
  criteria: {status: %s, type: %s}
  recipients:
  - to: {method: email, email: trends@dutlab.test}"""
    regression, progression = notify % ("incomplete", "regression"), notify % ("complete", "progression")
    first = nlab.submit(notify_job("nightly", progression))
    nlab.worker.run(first)  # no earlier job: nothing to compare with
    broken = nlab.submit(notify_job("nightly", regression))
    nlab.worker.run(broken, passed=False)  # Complete → Incomplete: a regression
    still = nlab.submit(notify_job("nightly", regression))
    nlab.worker.run(still, passed=False)  # Incomplete again: not a regression
    fixed = nlab.submit(notify_job("nightly", progression))
    nlab.worker.run(fixed)  # Incomplete → Complete: a progression
    nlab.smtp.wait(1, to="trends@dutlab.test", job_id=fixed)
    wait_rows(nlab, still, {"skipped"})
    mailed = sorted(int(m["X-Dutlab-Job"]) for m in nlab.smtp.to("trends@dutlab.test"))
    assert mailed == [broken, fixed]
    assert "no earlier finished job named 'nightly'" in rows(nlab, first)[0]["last_error"]


def test_json_callback_with_dataset_all_and_a_token(nlab):
    user_token = nlab.add_user("ci")
    # the CI system's key, registered as a token with the secret it must receive (LAVA: by description)
    r = nlab.api("POST", "/api/v1/tokens", {"description": "kernelci-callback", "secret": "kci-0123456789"},
                 token=user_token)
    assert r.status == 201, r.text
    definition = notify_job("callback all", f"""notify:
  criteria: {{status: finished}}
  callbacks:
  - url: {nlab.receiver.url}/kci/{{ID}}
    method: POST
    token: kernelci-callback
    header: X-Kci-Token
    dataset: all
    content-type: json""")
    r = nlab.api("POST", "/api/v1/jobs", {"definition": definition}, token=user_token)
    assert r.status == 201, r.text
    job_id = r.json()["job_ids"][0]
    nlab.worker.run(job_id, results=[("0_smoke", "ok", "pass"), ("0_smoke", "speed", "pass")])
    [request] = nlab.receiver.wait(f"/kci/{job_id}")
    assert request["method"] == "POST" and request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Kci-Token"] == "kci-0123456789"
    data = json.loads(request["body"])
    lava_fields = {"id", "status", "status_string", "state", "state_string", "health", "health_string",
                   "submit_time", "start_time", "end_time", "submitter_username", "submitter_email",
                   "failure_comment", "priority", "description", "actual_device_id", "definition", "metadata",
                   "health_check"}
    assert lava_fields | {"log", "results"} == set(data)
    assert (data["id"], data["status"], data["status_string"], data["health_string"], data["actual_device_id"],
            data["submitter_username"]) == (job_id, 2, "complete", "Complete", "qemu01", "ci")
    assert data["definition"] == definition and f"job {job_id} booted" in data["log"]
    assert list(data["results"]) == ["0_smoke"] and "name: speed" in data["results"]["0_smoke"]
    wait_rows(nlab, job_id, {"sent"})


def test_get_callback_substitutes_and_a_foreign_host_is_refused(nlab):
    job_id = nlab.submit(notify_job("callback get", f"""notify:
  criteria: {{status: finished}}
  callbacks:
  - url: "{nlab.receiver.url}/hook/{{ID}}?status={{STATUS}}&string={{STATUS_STRING}}"
    content-type: urlencoded
  - url: http://localhost:{nlab.receiver.port}/elsewhere"""))
    nlab.worker.run(job_id, passed=False)
    [request] = nlab.receiver.wait(f"/hook/{job_id}")
    assert request["method"] == "GET" and request["body"] == b""
    assert parse_qs(urlsplit(request["path"]).query) == {"status": ["3"], "string": ["incomplete"]}
    sent, refused = wait_rows(nlab, job_id, {"sent", "refused"}, count=2)
    assert sent["state"] == "sent" and sent["recipient"].endswith(f"/hook/{job_id}?status=3&string=incomplete")
    assert refused["state"] == "refused" and refused["attempts"] == 0
    assert "host 'localhost' is not in callback_allowed_hosts (127.0.0.1)" in refused["last_error"]
    assert not [r for r in nlab.receiver.requests if r["path"] == "/elsewhere"]
    details = json.loads(nlab.manage("jobs", "details", str(job_id), "--json").stdout)[0]
    assert [n["state"] for n in details["notifications"]] == ["sent", "refused"]


def test_irc_reaches_a_channel_and_a_nick(nlab):
    listener = IrcListener(nlab.ircd.port, "qa", "#lab")
    try:
        job_id = nlab.submit(notify_job("irc job", f"""notify:
  criteria: {{status: finished}}
  recipients:
  - to: {{method: irc, handle: "#lab", server: "127.0.0.1:{nlab.ircd.port}"}}
  - to: {{method: irc, handle: qa, server: "127.0.0.1:{nlab.ircd.port}"}}
  - to: {{method: irc, handle: nobody-here, server: "127.0.0.1:{nlab.ircd.port}"}}"""))
        nlab.worker.run(job_id)
        [line] = wait_for("the channel line", lambda: listener.said("#lab"))
        assert line == f"dutlab job {job_id} Complete: irc job - {nlab.url}/api/v1/jobs/{job_id}"
        assert wait_for("the private line", lambda: listener.said("qa")) == [line]
        channel, nick, missing = wait_rows(nlab, job_id, {"sent", "failed"}, count=3)
        assert (channel["state"], nick["state"], missing["state"]) == ("sent", "sent", "failed")
        assert "nobody-here: no such nick" in missing["last_error"]
    finally:
        listener.close()


def test_status_running_is_told_while_the_job_runs(nlab):
    job_id = nlab.submit(notify_job("tell me it runs", """notify:
  criteria: {status: running}
  verbosity: status-only
  recipients:
  - to: {method: email, email: watch@dutlab.test}"""))
    job_id, token = nlab.worker.offer(job_id)
    nlab.worker.call(job_id, token, "/state", {"state": "Running"})
    [mail] = nlab.smtp.wait(1, to="watch@dutlab.test", job_id=job_id)
    assert mail["Subject"] == f"[dutlab] job {job_id} Running: tell me it runs"
    assert "Device:" not in mail.get_content()  # status-only: the status line and the link
    nlab.worker.call(job_id, token, "/finish", {"result": "pass"})
    assert [(r["event"], r["state"]) for r in wait_rows(nlab, job_id, {"sent"})] == [("running", "sent")]
