"""Issue 18's security rules in process (the `app` fixture): privileges, restricted job details,
masked secrets, password hashes, the login throttle, files at rest, response headers."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import xmlrpc.client

import pytest

import factories
from dutlab.service import auth, filemodes
from dutlab.service.lab import jobs, tokens, users
from dutlab.service.logstore import JobFolder
from dutlab.service.models import Device, GroupPermission, TestJob, User
from dutlab.service.states import JobState
from dutlab.service.throttle import LoginThrottle

SECRET_CONFIG = "commands: {power_off: pdu --password hunter2 off}\n"


def rpc(app, method: str, *params: object, token: str | None = None):
    """(value, None) or (None, fault) of one XML-RPC call."""
    r = app.api("POST", "/RPC2", xmlrpc.client.dumps(params, method, allow_none=True), token=token,
                headers={"Content-Type": "text/xml"})
    try:
        return xmlrpc.client.loads(r.body, use_builtin_types=True)[0][0], None
    except xmlrpc.client.Fault as fault:
        return None, fault


def token_of(user: User) -> str:
    return auth.create_token(user, "test")[1]


def admin_permission_user(name: str = "boss") -> User:
    boss = factories.user(name)
    GroupPermission.create(group=factories.group(f"{name}-admins", boss), perm="admin")
    return boss


# -- privileges ------------------------------------------------------------------------------------


def test_an_admin_cannot_act_on_a_superuser_or_raise_privileges(app, db):
    boss = token_of(admin_permission_user())
    plain = factories.user("plain")
    r = app.api("POST", "/api/v1/tokens", {"user": "admin"}, token=boss)
    assert r.status == 403 and "only a superuser may create tokens for a superuser" in r.json()["error"]
    for method, path, body in (("PATCH", "/api/v1/users/admin", {"password": "taken-over"}),
                               ("PATCH", "/api/v1/users/admin", {"is_active": False}),
                               ("DELETE", "/api/v1/users/admin", None)):
        r = app.api(method, path, body, token=boss)
        assert r.status == 403 and "only a superuser may" in r.json()["error"], (method, path, r.text)
    admin_token = auth.Token.select().where(auth.Token.user == User.get(username="admin")).first()
    assert app.api("DELETE", f"/api/v1/tokens/{admin_token.id}", token=boss).status == 403
    for body in ({"is_superuser": True}, {"is_staff": True}, {"groups": ["boss-admins"]}):
        r = app.api("PATCH", "/api/v1/users/boss", body, token=boss)
        assert r.status == 403 and "only a superuser may set" in r.json()["error"]
    r = app.api("POST", "/api/v1/users", {"username": "eve", "is_superuser": True}, token=boss)
    assert r.status == 403
    assert User.get(username="admin").password_hash == "" and User.get(username="admin").is_active
    # what an admin may do stays: act on users who are not superusers
    r = app.api("POST", "/api/v1/tokens", {"user": "plain"}, token=boss)
    assert r.status == 201 and r.json()["user"] == "plain"
    assert app.api("PATCH", "/api/v1/users/plain", {"email": "p@example.org"}, token=boss).status == 200
    # and a superuser may do all of it
    assert app.api("POST", "/api/v1/tokens", {"user": "admin"}).status == 201
    assert app.api("PATCH", "/api/v1/users/plain", {"is_superuser": True}).status == 200
    assert User.get_by_id(plain.id).is_superuser
    r = app.api("PATCH", "/api/v1/users/plain", {"email": "x@example.org"}, token=boss)
    assert r.status == 403  # plain is a superuser now


def test_the_admin_cli_keeps_acting_on_superusers(db):
    """The CLI acts for the lab (caller None): root on the server may reset any account."""
    factories.user("root-admin", superuser=True)
    users.update_user("root-admin", {"password": "reset-by-root"})
    token, secret = tokens.create_token({"user": "root-admin"})
    assert auth.user_for_token(secret).username == "root-admin"


# -- restricted job details and secrets ------------------------------------------------------------


def restricted_job(settings, secrets: str = "") -> tuple[TestJob, User]:
    owner = factories.user("owner")
    dtype = factories.device_type("qemu", template="qemu")
    device = factories.device("locked", dtype, factories.worker("w1"), owner_user=owner)
    [job] = jobs.submit(owner, factories.job_text("locked", extra=secrets), settings)
    TestJob.update(state=JobState.RUNNING, actual_device=device).where(TestJob.id == job.id).execute()
    folder = JobFolder(settings.output_dir, job.id)
    folder.write("device.yaml", SECRET_CONFIG)
    folder.write("description.yaml", "device: {hostname: locked}\n")
    return TestJob.get_by_id(job.id), owner


def test_a_restricted_devices_configuration_is_for_its_owners_and_admins(app, settings):
    job, owner = restricted_job(settings)
    plain, boss = token_of(factories.user("plain")), token_of(admin_permission_user())
    for part in ("config", "description", "definition"):
        path = f"/api/v1/jobs/{job.id}/{part}"
        anonymous = app.api("GET", path, token=None)
        assert anonymous.status == 401 and "owners of device 'locked'" in anonymous.json()["error"]
        refused = app.api("GET", path, token=plain)
        assert refused.status == 403 and "restricted to its owners" in refused.json()["error"]
        for token in (token_of(owner), boss, "admin"):
            assert app.api("GET", path, token=token).status == 200
    assert "hunter2" in app.api("GET", f"/api/v1/jobs/{job.id}/config", token=token_of(owner)).text
    # the job itself, its log and results stay public
    assert app.api("GET", f"/api/v1/jobs/{job.id}", token=None).status == 200
    assert app.api("GET", f"/api/v1/jobs/{job.id}/logs", token=None).status == 200
    # XML-RPC answers the same
    for method in ("scheduler.jobs.configuration", "scheduler.jobs.definition"):
        _, fault = rpc(app, method, str(job.id), token=plain)
        assert fault is not None and fault.faultCode == 403, method
        _, fault = rpc(app, method, str(job.id))
        assert fault is not None and fault.faultCode == 401, method
    value, _ = rpc(app, "scheduler.jobs.configuration", str(job.id), token=token_of(owner))
    assert "hunter2" in value[1].decode()


def test_an_open_devices_job_configuration_stays_public(app, settings):
    job, _ = restricted_job(settings)
    Device.update(owner_user=None).where(Device.hostname == "locked").execute()
    assert "hunter2" in app.api("GET", f"/api/v1/jobs/{job.id}/config", token=None).text
    value, _ = rpc(app, "scheduler.jobs.configuration", str(job.id))
    assert "hunter2" in value[1].decode()


def test_secrets_are_shown_only_to_the_submitter_and_admins(app, settings):
    secrets = 'secrets:\n  API_KEY: "s3cr3t-\\"quoted\\""\n  OTHER: plain-secret-value\n'
    job, owner = restricted_job(settings, secrets)
    Device.update(owner_user=None).where(Device.hostname == "locked").execute()  # anyone sees the job's details
    original = job.original_definition
    for token in (token_of(owner), "admin", token_of(admin_permission_user())):
        assert app.api("GET", f"/api/v1/jobs/{job.id}/definition", token=token).text == original
    for token in (None, token_of(factories.user("plain"))):
        text = app.api("GET", f"/api/v1/jobs/{job.id}/definition", token=token).text
        assert "s3cr3t" not in text and "plain-secret-value" not in text
        assert "API_KEY: '[MASKED]'" in text and "OTHER: '[MASKED]'" in text and "job_name: locked" in text
        value, _ = rpc(app, "scheduler.jobs.definition", str(job.id), token=token)
        assert value == text
        value, _ = rpc(app, "scheduler.jobs.configuration", str(job.id), token=token)
        assert value[0].decode() == text
    # a copy would be the resubmitter's, secrets and all: holders of cancel_resubmit may not take one
    helper = factories.user("helper")
    GroupPermission.create(group=factories.group("helpers", helper), perm="cancel_resubmit")
    r = app.api("POST", f"/api/v1/jobs/{job.id}/resubmit", token=token_of(helper))
    assert r.status == 403 and "has secrets" in r.json()["error"]
    _, fault = rpc(app, "scheduler.jobs.resubmit", str(job.id), token=token_of(helper))
    assert fault is not None and fault.faultCode == 403
    assert app.api("POST", f"/api/v1/jobs/{job.id}/resubmit", token=token_of(owner)).status == 201


# -- passwords and the login throttle --------------------------------------------------------------


def old_pbkdf2_hash(password: str, rounds: int = 240_000) -> str:
    """A hash as dutlab stored them before argon2 (PBKDF2-SHA256, 240k rounds)."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"pbkdf2_sha256${rounds}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_an_old_password_hash_logs_in_and_is_replaced_by_argon2id(db):
    user = User.create(username="veteran", password_hash=old_pbkdf2_hash("old-pw"))
    assert users.login("veteran", "wrong") is None
    assert User.get_by_id(user.id).password_hash.startswith("pbkdf2_sha256$")  # a failure changes nothing
    assert users.login("veteran", "old-pw").id == user.id
    stored = User.get_by_id(user.id).password_hash
    assert stored.startswith("$argon2id$") and "m=19456,t=2,p=1" in stored
    assert users.login("veteran", "old-pw").id == user.id
    assert User.get_by_id(user.id).password_hash == stored  # current hashes are kept as they are


def test_new_passwords_are_argon2id():
    stored = auth.hash_password("pw")
    assert stored.startswith("$argon2id$") and auth.check_password("pw", stored)
    assert not auth.check_password("pw", "") and not auth.check_password("pw", "pbkdf2_sha256$garbage")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_counts_failures_per_user_and_per_address_in_a_window():
    clock = Clock()
    throttle = LoginThrottle(per_user=3, per_address=5, window=60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("alice", "10.0.0.1") == 0
        throttle.failed("alice", "10.0.0.1")
        clock.now += 10
    assert throttle.retry_after("alice", "10.0.0.9") == 30  # now 1030: the first failure leaves the window at 1060
    assert throttle.retry_after("bob", "10.0.0.1") == 0
    throttle.failed("bob", "10.0.0.1")
    throttle.failed("carol", "10.0.0.1")
    assert throttle.retry_after("dave", "10.0.0.1") == 30  # 5 failures from the address
    clock.now += 40
    assert throttle.retry_after("alice", "10.0.0.9") == 0
    throttle.succeeded("bob")
    assert "bob" not in throttle.users.failures
    off = LoginThrottle(per_user=0, per_address=0, window=60, clock=clock)
    for _ in range(100):
        off.failed("alice", "10.0.0.1")
    assert off.retry_after("alice", "10.0.0.1") == 0 and not off.users.failures


def test_the_throttle_forgets_the_oldest_names_past_its_bound(monkeypatch):
    monkeypatch.setattr("dutlab.service.throttle.MAX_KEYS", 10)
    clock = Clock()
    throttle = LoginThrottle(per_user=1, per_address=0, window=60, clock=clock)
    for i in range(25):
        throttle.failed(f"user{i}", "")
        clock.now += 0.1
    assert len(throttle.users.failures) <= 11 and "user24" in throttle.users.failures


# -- files at rest and headers ----------------------------------------------------------------------


def test_sqlite_files_are_created_private_and_broad_ones_are_named(settings, tmp_path):
    old = os.umask(0)
    try:
        filemodes.prepare(settings)
    finally:
        os.umask(old)
    database = filemodes.sqlite_file(settings.database)
    if database is None:
        pytest.skip("the database of this run is not SQLite")
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    settings.secret_key()
    assert filemodes.broad_files(settings) == []
    database.chmod(0o644)
    backups = tmp_path / "data" / "backups"
    backups.mkdir(parents=True)
    (backups / "dutlab-backup-x.tar.gz").write_bytes(b"")
    (backups / "dutlab-backup-x.tar.gz").chmod(0o640)  # group-readable is fine
    warnings = filemodes.warn_broad_files(settings)
    assert len(warnings) == 1 and str(database) in warnings[0] and "mode 0644" in warnings[0]
    assert f"chmod 600 {database}" in warnings[0]


def test_html_pages_carry_the_security_headers(app):
    page = app.api("GET", "/", token=None)
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    for r in (page, app.api("GET", "/api/v1/devices", token=None), app.api("GET", "/nowhere", token=None)):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"
    assert "Content-Security-Policy" not in app.api("GET", "/api/v1/devices", token=None).headers


def test_openapi_says_who_may_read_a_dictionary_and_a_jobs_details(app):
    paths = app.api("GET", "/api/v1/openapi.json").json()["paths"]
    dictionary = paths["/api/v1/devices/{hostname}/dictionary"]["get"]
    assert dictionary["x-dutlab-auth"] == "owner" and dictionary["security"] == [{"token": []}]
    assert "owner" in dictionary["description"]
    config = paths["/api/v1/jobs/{job_id}/config"]["get"]
    assert "restricted device" in config["x-dutlab-access"] and "restricted device" in config["description"]
