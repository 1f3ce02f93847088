"""Notifications in process (the `db` fixture): submit-time checks, criteria, the rows a plan makes,
LAVA's callback payload, claims, retries and lab alerts. Sending over real SMTP, HTTP and IRC is in
tests/integration/test_notifications.py; SMTP login over STARTTLS is here, on aiosmtpd."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import sys

import pytest

import factories as f
from dutlab.dispatcher.protocol import JobResult
from dutlab.service import auth
from dutlab.service.errors import ApiError
from dutlab.service.lab import devices, jobs, results
from dutlab.service.models import CallbackSecret, Notification, TestJob, utcnow
from dutlab.service.notify import alerts, criteria, deliver, plan, rows
from dutlab.service.notify.payload import job_data, substitute
from dutlab.service.notify.rows import DeliveryError
from dutlab.service.notify.secrets import token_value
from dutlab.service.states import DeviceHealth, JobState


@pytest.fixture
def lab(db, settings):
    alice = f.user("alice")
    alice.email = "alice@example.org"
    alice.save()
    dtype = f.device_type("qemu")
    f.device("qemu01", dtype, f.worker("w1"), owner_user=alice)
    return alice


def submit(user, notify: str, name: str = "t", settings=None) -> TestJob:
    return jobs.submit(user, f.job_text(name, extra=notify), settings)[0]


def finish(job: TestJob, passed: bool = True) -> TestJob:
    return jobs.finish(job, JobResult("pass") if passed else JobResult.failed("Test", "a test failed"))


def rows_of(job: TestJob) -> list[dict]:
    return [rows.notification_json(n) for n in Notification.select().where(Notification.job == job)
            .order_by(Notification.id)]


@pytest.mark.parametrize("notify, path, words", [
    ("notify: {criteria: {status: finished, dependency_query: q1}}", "notify.criteria.dependency_query",
     "not supported"),
    ("notify: {criteria: {status: finished}, compare: {query: {username: a, name: q}}}", "notify.compare.query",
     "previous job with the same name"),
    ("notify:\n  criteria: {status: finished}\n  recipients:\n  - to: {method: email, user: nobody}",
     "notify.recipients[0].to.user", "user 'nobody' does not exist"),
    ("notify:\n  criteria: {status: finished}\n  recipients:\n  - to: {method: irc, handle: bob}",
     "notify.recipients[0].to.server", "needs 'server'"),
])
def test_submission_refuses_what_cannot_be_sent(lab, settings, notify, path, words):
    with pytest.raises(ApiError) as err:
        submit(lab, notify, settings=settings)
    assert err.value.status == 400 and err.value.path == path and words in err.value.message


def test_no_recipients_mails_the_submitter_and_criteria_filter(lab, settings):
    done = finish(submit(lab, "notify: {criteria: {status: complete}}", settings=settings))
    assert plan.plan_job(done.id, "running", settings) == []  # complete asks for the Finished event only
    [row_id] = plan.plan_job(done.id, "finished", settings)
    [row] = rows_of(done)
    assert (row["id"], row["method"], row["recipient"], row["key"], row["state"]) == (
        row_id, "email", "alice@example.org", "submitter", "pending")
    assert plan.plan_job(done.id, "finished", settings) == [row_id]  # a second plan makes no new row
    failed = finish(submit(lab, "notify: {criteria: {status: complete}}", settings=settings), passed=False)
    assert plan.plan_job(failed.id, "finished", settings) == []
    [skipped] = rows_of(failed)
    assert skipped["state"] == "skipped" and "ended Incomplete" in skipped["last_error"]


def test_status_all_wants_running_and_finished(lab, settings):
    job = submit(lab, "notify: {criteria: {status: all}}", settings=settings)
    assert plan.plan_job(job.id, "running", settings) == []  # not running yet: nothing to tell
    TestJob.update(state=JobState.SCHEDULED).where(TestJob.id == job.id).execute()
    jobs.mark_running(TestJob.get_by_id(job.id))
    assert len(plan.plan_job(job.id, "running", settings)) == 1
    finish(TestJob.get_by_id(job.id))
    assert len(plan.plan_job(job.id, "finished", settings)) == 1
    assert [r["event"] for r in rows_of(job)] == ["running", "finished"]


def test_regression_and_progression_compare_with_the_previous_job(lab, settings):
    regression = "notify: {criteria: {status: incomplete, type: regression}}"
    progression = "notify: {criteria: {status: complete, type: progression}}"
    first = finish(submit(lab, regression, "nightly", settings), passed=False)
    assert "no earlier finished job" in criteria.verdict({"status": "incomplete", "type": "regression"},
                                                         first, "finished")
    finish(submit(lab, regression, "other-name", settings))  # another name is not compared
    ok = finish(submit(lab, progression, "nightly", settings))
    assert len(plan.plan_job(ok.id, "finished", settings)) == 1  # Incomplete → Complete
    broke = finish(submit(lab, regression, "nightly", settings), passed=False)
    assert len(plan.plan_job(broke.id, "finished", settings)) == 1  # Complete → Incomplete
    still = finish(submit(lab, regression, "nightly", settings), passed=False)
    assert plan.plan_job(still.id, "finished", settings) == []
    assert f"job {broke.id} ended Incomplete and job {still.id} Incomplete" in rows_of(still)[0]["last_error"]


def test_recipients_callbacks_and_the_allow_list(lab, settings):
    f.user("bob")  # no email address
    settings.callback_allowed_hosts = ["*.ci.example", "127.0.0.1"]
    job = finish(submit(lab, """notify:
  criteria: {status: finished}
  verbosity: verbose
  recipients:
  - to: {method: email, email: team@example.org}
  - to: {method: email, user: bob}
  - to: {method: irc, user: alice, server: "irc.example:6697"}
  callbacks:
  - {url: "https://lab.ci.example/cb/{ID}?s={STATUS}&h={HEALTH_STRING}", method: POST, dataset: all}
  - {url: "http://10.1.2.3/steal"}
""", settings=settings))
    assert len(plan.plan_job(job.id, "finished", settings)) == 3
    got = {r["key"]: (r["method"], r["recipient"], r["state"], r["last_error"]) for r in rows_of(job)}
    assert got["recipients[0]"] == ("email", "team@example.org", "pending", "")
    assert got["recipients[1]"][2] == "failed" and "has no email address" in got["recipients[1]"][3]
    assert got["recipients[2]"][:3] == ("irc", "alice@irc.example:6697", "pending")
    assert got["callbacks[0]"][:3] == ("callback", f"https://lab.ci.example/cb/{job.id}?s=2&h=Complete", "pending")
    method, url, state, why = got["callbacks[1]"]
    assert state == "refused" and "'10.1.2.3' is not in callback_allowed_hosts" in why
    settings.callback_allowed_hosts = []
    assert "callbacks are not enabled" in plan._callback("callback", {"url": "https://lab.ci.example/"}, job,
                                                         settings).reason


def test_callback_payload_has_lava_fields_log_and_results(lab, settings):
    job = submit(lab, "notify: {criteria: {status: finished}}", settings=settings)
    results.append_log(job, 0, [json.dumps({"dt": "2026-01-01T00:00:00", "lvl": "target", "msg": "booted"}),
                                json.dumps({"dt": "2026-01-01T00:00:01", "lvl": "results",
                                            "msg": {"definition": "0_smoke", "case": "ok", "result": "pass"}})],
                       settings)
    job = finish(job, passed=False)
    data = job_data(job, "all", settings)
    assert {k: data[k] for k in ("id", "status", "status_string", "state", "state_string", "health",
                                 "health_string", "submitter_username", "submitter_email", "failure_comment",
                                 "priority", "description", "health_check")} == {
        "id": job.id, "status": 3, "status_string": "incomplete", "state": 5, "state_string": "Finished",
        "health": 2, "health_string": "Incomplete", "submitter_username": "alice",
        "submitter_email": "alice@example.org", "failure_comment": "a test failed", "priority": 50,
        "description": "t", "health_check": False}
    assert data["definition"] == job.original_definition and data["metadata"] == {}
    assert data["end_time"].endswith("+00:00") and data["actual_device_id"] is None
    assert "booted" in data["log"] and list(data["results"]) == ["0_smoke"]
    assert "name: ok" in data["results"]["0_smoke"] and "result: pass" in data["results"]["0_smoke"]
    assert "log" not in job_data(job, "results", settings) and "results" not in job_data(job, "logs", settings)
    assert substitute("http://h/{ID}/{STATUS_STRING}/{NOPE}/{DESCRIPTION}", job) == f"http://h/{job.id}/incomplete/{{NOPE}}/t"


def test_callback_tokens_by_description(lab, settings):
    chosen, _ = auth.create_token(lab, "kernelci-callback", "kci-secret-123")
    assert CallbackSecret.get(CallbackSecret.token == chosen).sealed != "kci-secret-123"  # sealed, not plain
    assert token_value(lab, "kernelci-callback", settings) == "kci-secret-123"
    auth.create_token(lab, "generated")
    with pytest.raises(DeliveryError) as err:
        token_value(lab, "generated", settings)
    assert err.value.permanent and "tokens add --secret" in str(err.value)
    assert token_value(lab, "a-literal-value", settings) == "a-literal-value"  # names no token: as written


def test_claims_retries_backoff_and_giving_up(lab, settings):
    settings.email.host, settings.email.port, settings.email.timeout = "127.0.0.1", 9, 2  # nothing listens
    settings.notification_attempts, settings.notification_backoff = 3, 10
    job = finish(submit(lab, "notify: {criteria: {status: finished}}", settings=settings))
    [row_id] = plan.plan_job(job.id, "finished", settings)
    claimed = rows.claim(row_id)
    assert claimed is not None and rows.claim(row_id) is None  # one sender at a time
    rows.mark_retry(claimed, "test", 0)
    assert deliver.send_one(row_id, settings) == 20.0  # attempt 2 of 3 failed: again in 10 s, doubled
    row = Notification.get_by_id(row_id)
    assert (row.state, row.attempts) == ("pending", 2) and "127.0.0.1:9" in row.last_error
    assert deliver.send_one(row_id, settings) is None and Notification.get_by_id(row_id).attempts == 2  # not due
    Notification.update(next_attempt=None).where(Notification.id == row_id).execute()
    assert deliver.send_one(row_id, settings) is None
    row = Notification.get_by_id(row_id)
    assert row.state == "failed" and "gave up after 3 attempts" in row.last_error


def test_a_dead_senders_claim_is_repaired_and_lost_plans_are_made(lab, settings):
    job = finish(submit(lab, "notify: {criteria: {status: finished}}", settings=settings))
    assert not rows.exists(f"job:{job.id}", "finished")  # the event's task never ran here
    [row_id] = deliver.repair(settings)
    assert rows.exists(f"job:{job.id}", "finished")
    assert rows.claim(row_id) is not None
    assert deliver.repair(settings) == []  # claimed just now: its sender may still be at work
    Notification.update(claimed=utcnow() - dt.timedelta(hours=1)).where(Notification.id == row_id).execute()
    assert deliver.repair(settings) == [row_id]
    assert "stopped during its attempt" in Notification.get_by_id(row_id).last_error


def test_unconfigured_email_fails_at_once_and_sendmail_delivers(lab, settings, tmp_path):
    job = finish(submit(lab, "notify: {criteria: {status: finished}, verbosity: verbose}", settings=settings))
    [row_id] = plan.plan_job(job.id, "finished", settings)
    assert deliver.send_one(row_id, settings) is None
    row = Notification.get_by_id(row_id)
    assert row.state == "failed" and "email is not configured" in row.last_error and row.attempts == 1
    # a sendmail command reads the message on stdin
    out = tmp_path / "mail.txt"
    script = f"import sys; open({str(out)!r}, 'ab').write(sys.stdin.buffer.read())"
    settings.email.sendmail = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    Notification.update(state="pending", attempts=0).where(Notification.id == row_id).execute()
    assert deliver.send_one(row_id, settings) is None
    assert Notification.get_by_id(row_id).state == "sent"
    mail = out.read_text()
    assert "To: alice@example.org" in mail and f"Subject: [dutlab] job {job.id} Complete: t" in mail
    assert "Results: none recorded" in mail and f"X-Dutlab-Job: {job.id}" in mail
    assert f"Message-ID: <dutlab.notification.{row_id}." in mail


def test_health_alerts_go_to_owners_and_admins_once_per_interval(lab, settings):
    staff = f.user("carol")
    staff.email = "carol@example.org"
    staff.save()
    settings.admins = ["ops@example.org", "carol", "nobody"]
    device = devices.get_device("qemu01")
    devices.set_health(device, DeviceHealth.BAD, "health check job 7 failed", "dutlab-health")
    [entry] = devices.health_history("qemu01")[:1]
    pending = alerts.plan_health(entry.id, settings)
    made = {n.key: n for n in Notification.select().where(Notification.event == f"health:{entry.id}")}
    assert {k: (n.recipient, n.state) for k, n in made.items()} == {
        "owner:alice": ("alice@example.org", "pending"), "admin:ops@example.org": ("ops@example.org", "pending"),
        "admin:carol": ("carol@example.org", "pending"), "admin:nobody": ("", "failed")}
    assert len(pending) == 3 and "health check job 7 failed" in json.loads(made["owner:alice"].detail)["body"]
    assert alerts.plan_health(entry.id, settings) == pending  # planned once
    devices.set_health(device, DeviceHealth.GOOD, "fixed", "admin")
    devices.set_health(device, DeviceHealth.BAD, "broke again", "dutlab-health")
    again = devices.health_history("qemu01")[0]
    assert alerts.plan_health(again.id, settings) == []  # within alert_interval: held back, and says so
    held = Notification.select().where(Notification.event == f"health:{again.id}", Notification.key == "owner:alice")
    assert "at most one per 3600 s" in held.get().last_error
    assert alerts.plan_health(devices.health_history("qemu01")[1].id, settings) == []  # Good: no alert


def _self_signed(tmp_path):
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_smtp_login_over_starttls(lab, settings, tmp_path, monkeypatch):
    """email.starttls/username/password against a real SMTP server that demands both."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from labkit import free_port

    cert_file, key_file = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the client's default context trusts this cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    got = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):  # noqa: ARG002 (aiosmtpd's signature)
            got.append((session.authenticated, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    def check(server, session, envelope, mechanism, auth_data):  # noqa: ARG001
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"lab", b"s3cret"), handled=False)

    port = free_port()
    smtp = Controller(Keep(), hostname="127.0.0.1", port=port, tls_context=server_ctx, require_starttls=True,
                      authenticator=check, auth_required=True)
    smtp.start()
    try:
        email = settings.email
        email.host, email.port, email.timeout = "127.0.0.1", port, 10
        email.starttls, email.username, email.password = True, "lab", "wrong"
        job = finish(submit(lab, "notify: {criteria: {status: finished}}", settings=settings))
        [row_id] = plan.plan_job(job.id, "finished", settings)
        assert deliver.send_one(row_id, settings) is not None  # a refused login is tried again later
        assert "refused the login of 'lab'" in Notification.get_by_id(row_id).last_error
        email.password = "s3cret"
        Notification.update(next_attempt=None).where(Notification.id == row_id).execute()
        assert deliver.send_one(row_id, settings) is None
    finally:
        smtp.stop()
    assert Notification.get_by_id(row_id).state == "sent"
    [(authenticated, to, content)] = got
    assert authenticated and to == ["alice@example.org"] and f"job {job.id} Complete" in content
