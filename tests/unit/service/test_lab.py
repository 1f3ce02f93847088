"""Lab objects in process (no HTTP): validation, ownership, health rules, secrets."""

from __future__ import annotations

import datetime as dt

import pytest

import factories
from dutlab.service import auth
from dutlab.service.errors import ApiError
from dutlab.service.lab import checks, device_types, devices, maintenance, tags, tokens, users, workers
from dutlab.service.models import Device, HealthHistory, TestJob, Token, User, Worker, utcnow
from dutlab.service.queue import huey
from dutlab.service.states import DeviceHealth, JobState, WorkerHealth

QEMU_DICT = factories.QEMU_DICT


def refused(status: int, path: str | None = None):
    """Context: the call raises ApiError(status) at `path`."""

    class Check:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            assert isinstance(exc, ApiError), f"expected ApiError({status}), got {exc!r}"
            assert exc.status == status, exc.body()
            if path is not None:
                assert exc.path == path, exc.body()
            assert exc.message
            return True

    return Check()


@pytest.fixture
def qemu_lab(db, settings):
    """Device type qemu, worker w1, device qemu01 (Good)."""
    dtype = device_types.create_device_type({"name": "qemu"})
    worker, _ = workers.create_worker({"hostname": "w1"})
    device = factories.device("qemu01", dtype, worker, health=DeviceHealth.GOOD)
    return dtype, worker, device


def health(hostname: str) -> str:
    return DeviceHealth(Device.get(Device.hostname == hostname).health).label


# Checks and paging ################################################################


def test_unknown_field_is_named(db):
    with refused(400, "colour"):
        tags.create_tag({"name": "fast", "colour": "red"})


def test_page_limits_and_validates(db):
    rows = list(range(120))
    assert checks.page(rows) == {"count": 120, "results": rows[:50]}
    assert checks.page(rows, "10", "115")["results"] == rows[115:]
    with refused(400, "limit"):
        checks.page(rows, "zero")
    with refused(400, "offset"):
        checks.page(rows, 5, -1)


def test_names_refuse_slashes_and_dots(db):
    for bad in ("a/b", ".hidden", "", "with space"):
        with refused(400, "hostname"):
            workers.create_worker({"hostname": bad})


# Users, groups, tokens ############################################################


def test_generated_password_logs_in(db):
    user, password = users.create_user({"username": "alice"}, generate_password=True)
    assert password and len(password) >= 12
    assert users.login("alice", password).id == user.id
    assert users.login("alice", "wrong") is None
    assert User.get_by_id(user.id).last_login is not None
    _, none = users.create_user({"username": "bob", "password": "given-pw"}, generate_password=True)
    assert none is None and users.login("bob", "given-pw")


def test_user_json_has_no_secret(db):
    user, _ = users.create_user({"username": "alice", "password": "pw-alice", "email": "a@example.org"})
    out = users.user_json(user)
    assert "password" not in str(out) and "pbkdf2" not in str(out)
    assert out["email"] == "a@example.org" and out["is_active"] is True


def test_duplicate_user_conflicts(db):
    users.create_user({"username": "alice"})
    with refused(409, "username"):
        users.create_user({"username": "alice"})


def test_only_superusers_make_superusers(db):
    admin_group = users.create_group({"name": "admins", "permissions": ["admin"]})
    carol, _ = users.create_user({"username": "carol", "groups": [admin_group.name]})
    with refused(403):
        users.create_user({"username": "mallory", "is_superuser": True}, caller=carol)
    boss = factories.user("boss", superuser=True)
    user, _ = users.create_user({"username": "second", "is_superuser": True}, caller=boss)
    assert user.is_superuser


def test_update_changes_only_given_fields(db):
    users.create_user({"username": "alice", "email": "a@x", "password": "pw-one"})
    user = users.update_user("alice", {"is_active": False})
    assert user.email == "a@x" and not user.is_active
    assert users.login("alice", "pw-one") is None  # inactive accounts cannot log in
    with refused(400, "is_active"):
        users.update_user("alice", {"is_active": "no"})


def test_users_change_only_their_own_email_and_password(db):
    alice, _ = users.create_user({"username": "alice"})
    users.create_user({"username": "bob"})
    users.update_user("alice", {"password": "new-pw"}, caller=alice)
    assert users.login("alice", "new-pw")
    with refused(403):
        users.update_user("alice", {"is_superuser": True}, caller=alice)
    with refused(403):
        users.update_user("bob", {"email": "x@y"}, caller=alice)


def test_staff_is_the_staff_group_with_admin(db):
    user, _ = users.create_user({"username": "sam", "is_staff": True})
    assert users.user_json(user)["is_staff"] and auth.is_admin(user)
    users.update_user("sam", {"is_staff": False})
    assert not users.user_json(user)["is_staff"] and not auth.is_admin(user)


def test_delete_user_keeps_job_history_and_owned_devices(db, qemu_lab):
    dtype, worker, device = qemu_lab
    users.create_user({"username": "owner"})
    devices.update_device("qemu01", {"owner_user": "owner"}, None)
    with refused(409):
        users.delete_user("owner")
    submitter = factories.user("submitter")
    TestJob.create(submitter=submitter, original_definition="x", definition="{}", requested_device_type=dtype)
    with refused(409):
        users.delete_user("submitter")
    users.create_user({"username": "temp"})
    users.delete_user("temp")
    with refused(404):
        users.get_user("temp")


def test_group_permissions_and_members(db):
    users.create_user({"username": "alice"})
    users.create_user({"username": "bob"})
    with refused(400, "permissions[1]"):
        users.create_group({"name": "g", "permissions": ["submit", "fly"]})
    with refused(400, "members[0]"):
        users.create_group({"name": "g", "members": ["nobody"]})
    group = users.create_group({"name": "g", "members": ["alice"], "permissions": ["submit"]})
    users.add_to_group("g", ["bob"], list(users.SUBMITTING))
    assert users.group_json(group) == {"name": "g", "permissions": ["cancel_resubmit", "submit"],
                                          "members": ["alice", "bob"]}
    users.update_group("g", {"members": ["bob"]})  # PATCH replaces the list it is given
    assert users.group_json(group) == {"name": "g", "permissions": ["cancel_resubmit", "submit"],
                                          "members": ["bob"]}


def test_permissions_of_one_user_and_removals_from_groups(db):
    from dutlab.service import auth

    alice, _ = users.create_user({"username": "alice"})
    users.create_user({"username": "bob"})
    assert not auth.has_perm(alice, "cancel_resubmit")
    users.change_user_permissions("alice", ["lava_scheduler_app.cancel_resubmit_testjob", "submit_testjob"])
    assert users.user_json(alice)["permissions"] == ["cancel_resubmit", "submit"]
    assert auth.has_perm(alice, "cancel_resubmit") and not auth.has_perm(alice, "admin")
    users.change_user_permissions("alice", remove=["cancel_resubmit"])
    assert users.user_json(alice)["permissions"] == ["submit"] and not auth.has_perm(alice, "cancel_resubmit")
    with refused(400, "permissions[0]"):
        users.change_user_permissions("alice", ["reboot"])
    with refused(403):  # granting rights through an account is a superuser's act (as groups are)
        users.update_user("alice", {"permissions": ["admin"]}, caller=alice)
    users.create_group({"name": "ops", "members": ["alice", "bob"], "permissions": ["admin", "submit"]})
    group = users.add_to_group("ops", remove_usernames=["bob"], remove_permissions=["admin"])
    assert users.group_json(group) == {"name": "ops", "permissions": ["submit"], "members": ["alice"]}
    with refused(400, "remove_usernames[0]"):
        users.add_to_group("ops", remove_usernames=["bob"])


def test_tokens_are_hashed_and_shown_once(db):
    alice, _ = users.create_user({"username": "alice"})
    token, secret = tokens.create_token({"user": "alice", "description": "ci"})
    assert Token.get_by_id(token.id).secret_hash == auth.hash_secret(secret)
    assert secret not in str(tokens.token_json(token))
    assert tokens.token_json(token, secret)["secret"] == secret
    assert auth.user_for_token(secret).id == alice.id
    _, mine = tokens.create_token({"user": "alice", "secret": "migrated-from-lava-123"})
    assert mine == "migrated-from-lava-123"
    with refused(409, "secret"):
        tokens.create_token({"user": "alice", "secret": "migrated-from-lava-123"})
    with refused(400, "secret"):
        tokens.create_token({"user": "alice", "secret": "a b"})


def test_token_rights(db):
    alice, _ = users.create_user({"username": "alice"})
    bob, _ = users.create_user({"username": "bob"})
    token, _ = tokens.create_token({}, caller=alice)
    assert token.user_id == alice.id
    with refused(403):
        tokens.create_token({"user": "alice"}, caller=bob)
    with refused(404):
        tokens.delete_token(token.id, caller=bob)
    tokens.delete_token(token.id, caller=alice)
    assert not Token.select().exists()


def test_prune_tokens_by_age(db):
    users.create_user({"username": "alice"})
    old, _ = tokens.create_token({"user": "alice"})
    used, _ = tokens.create_token({"user": "alice"})
    fresh, _ = tokens.create_token({"user": "alice"})
    long_ago = utcnow() - dt.timedelta(days=800)
    Token.update(created=long_ago).where(Token.id.in_([old.id, used.id])).execute()
    Token.update(last_used=utcnow()).where(Token.id == used.id).execute()
    assert tokens.prune_tokens(730) == 1
    assert {t.id for t in Token.select()} == {used.id, fresh.id}


# Device types #####################################################################


def test_device_type_fields(db, settings):
    dtype = device_types.create_device_type({"name": "qemu", "health_frequency": 6, "health_denominator": "jobs"})
    out = device_types.device_type_json(dtype, settings)
    assert out["template"] == "qemu" and out["template_found"] is True
    assert (out["health_frequency"], out["health_denominator"]) == (6, "jobs")
    with refused(400, "health_denominator"):
        device_types.update_device_type("qemu", {"health_denominator": "days"})
    with refused(400, "health_frequency"):
        device_types.update_device_type("qemu", {"health_frequency": 0})
    with refused(400, "shape"):
        device_types.update_device_type("qemu", {"shape": "round"})
    missing = device_types.create_device_type({"name": "no-such-board"})
    assert device_types.device_type_json(missing, settings)["template_found"] is False


def test_health_check_definition_is_validated(db, settings):
    device_types.create_device_type({"name": "qemu"})
    text, source = device_types.health_check_text("qemu", settings)
    assert source == "file" and "job_name" in text
    with refused(400) as _:
        device_types.update_device_type("qemu", {"health_check": "job_name: x\nactions: 3\n"})
    good = factories.job_text("hc")
    device_types.update_device_type("qemu", {"health_check": good})
    assert device_types.health_check_text("qemu", settings) == (good, "database")
    device_types.update_device_type("qemu", {"health_check": ""})
    assert device_types.health_check_text("qemu", settings)[1] == "file"


def test_device_type_with_devices_or_jobs_is_kept(db, qemu_lab):
    with refused(409):
        device_types.delete_device_type("qemu")
    device_types.create_device_type({"name": "spare"})
    device_types.delete_device_type("spare")


# Devices ##########################################################################


def test_new_device_is_unknown_and_hides_its_dictionary(db, settings, qemu_lab):
    device = devices.create_device(
        {"hostname": "qemu02", "device_type": "qemu", "worker": "w1", "dictionary": QEMU_DICT,
         "tags": ["fast", "big"]}, settings)
    out = devices.device_json(device)
    assert out["health"] == "Unknown" and out["state"] == "Idle"
    assert out["tags"] == ["big", "fast"] and out["has_dictionary"] is True
    assert "dictionary" not in out and "memory" not in str(out)
    offline = devices.create_device({"hostname": "qemu03", "device_type": "qemu", "health": "Maintenance"},
                                        settings)
    assert devices.device_json(offline)["health"] == "Maintenance"


def test_bad_dictionary_is_refused(db, settings, qemu_lab):
    with refused(400, "dictionary"):
        devices.update_device("qemu01", {"dictionary": "{% extends 'nope.jinja2' %}"}, settings)
    with refused(400, "dictionary"):
        devices.update_device("qemu01", {"dictionary": "{% set x = %}"}, settings)
    devices.update_device("qemu01", {"dictionary": ""}, settings)
    assert devices.device_json(devices.get_device("qemu01"))["has_dictionary"] is False


def test_owner_is_a_user_or_a_group(db, settings, qemu_lab):
    users.create_user({"username": "alice"})
    users.create_group({"name": "team"})
    with refused(400, "owner_group"):
        devices.update_device("qemu01", {"owner_user": "alice", "owner_group": "team"}, settings)
    with refused(400, "owner_user"):
        devices.update_device("qemu01", {"owner_user": "nobody"}, settings)
    out = devices.device_json(devices.update_device("qemu01", {"owner_group": "team"}, settings))
    assert (out["owner_user"], out["owner_group"]) == (None, "team")
    out = devices.device_json(devices.update_device("qemu01", {"owner_user": "alice"}, settings))
    assert (out["owner_user"], out["owner_group"]) == ("alice", None)
    out = devices.device_json(devices.update_device("qemu01", {"physical_group": "team"}, settings))
    assert (out["owner_user"], out["physical_group"]) == ("alice", "team")
    out = devices.device_json(devices.update_device("qemu01", {"owner_user": None}, settings))
    assert out["owner_user"] is None and out["owner_group"] is None


def test_dictionary_readers(db, settings, qemu_lab):
    owner, _ = users.create_user({"username": "owner"})
    other, _ = users.create_user({"username": "other"})
    admin = factories.user("root", superuser=True)
    with refused(401):
        devices.read_dictionary("qemu01", None)
    assert devices.read_dictionary("qemu01", other).hostname == "qemu01"  # no owner: everyone
    devices.update_device("qemu01", {"owner_user": "owner"}, settings)
    with refused(403):
        devices.read_dictionary("qemu01", other)
    assert devices.read_dictionary("qemu01", owner).dictionary == QEMU_DICT
    assert devices.read_dictionary("qemu01", admin).dictionary == QEMU_DICT
    rendered = devices.render_dictionary(devices.get_device("qemu01"), settings, {"arch": "amd64"})
    assert "qemu-system-x86_64" in rendered


def test_health_change_is_recorded_with_reason_and_actor(db, settings, qemu_lab):
    before = huey.pending_count()
    devices.update_device("qemu01", {"health": "maintenance", "reason": "new cable"}, settings, actor="alice")
    assert huey.pending_count() > before  # a scheduling pass is on its way
    [entry] = devices.health_history("qemu01")
    assert devices.history_json(entry) | {"time": None} == {
        "time": None, "old_health": "Good", "new_health": "Maintenance", "reason": "new cable", "actor": "alice"}
    with refused(400, "health"):
        devices.update_device("qemu01", {"health": "sleepy"}, settings)
    with refused(400, "reason"):
        devices.update_device("qemu01", {"reason": "why not"}, settings)


def test_device_list_filters(db, settings, qemu_lab):
    devices.create_device({"hostname": "qemu02", "device_type": "qemu", "tags": ["fast"],
                               "health": "Retired"}, settings)
    assert [d.hostname for d in devices.list_devices()] == ["qemu01", "qemu02"]
    assert [d.hostname for d in devices.list_devices(include_retired=False)] == ["qemu01"]
    assert [d.hostname for d in devices.list_devices(health="good")] == ["qemu01"]
    assert [d.hostname for d in devices.list_devices(tag="fast")] == ["qemu02"]
    assert [d.hostname for d in devices.list_devices(worker="w1")] == ["qemu01"]
    with refused(400, "state"):
        devices.list_devices(state="sleeping")
    with refused(400, "device_type"):
        devices.list_devices(device_type="nope")


def test_device_tags(db, qemu_lab):
    assert devices.add_device_tags("qemu01", ["b", "a"]) == ["a", "b"]
    assert devices.remove_device_tags("qemu01", ["a"]) == ["b"]
    assert devices.remove_device_tags("qemu01", ["a"]) == ["b"]  # already gone: fine for the CLI
    with refused(404):
        devices.remove_device_tags("qemu01", ["a"], strict=True)
    assert tags.tag_json(tags.get_tag("b"), devices=True) == {"name": "b", "description": "", "devices": ["qemu01"]}


def test_delete_busy_device_is_refused(db, qemu_lab):
    dtype, _, device = qemu_lab
    job = TestJob.create(submitter=factories.user(), original_definition="x", definition="{}",
                         requested_device_type=dtype, actual_device=device, state=JobState.RUNNING)
    Device.update(current_job=job.id).where(Device.id == device.id).execute()
    with refused(409):
        devices.delete_device("qemu01")


# Workers ##########################################################################


def test_worker_token_is_returned_once_and_hashed(db):
    worker, token = workers.create_worker({"hostname": "w9", "job_limit": 2, "description": "rack 3"})
    assert Worker.get_by_id(worker.id).token_hash == auth.hash_secret(token)
    out = workers.worker_json(worker)
    assert "token" not in out and token not in str(out)
    assert (out["job_limit"], out["health"], out["state"]) == (2, "Active", "Offline")
    new = workers.regenerate_worker_token("w9")
    assert new != token and Worker.get_by_id(worker.id).token_hash == auth.hash_secret(new)
    with refused(400, "job_limit"):
        workers.update_worker("w9", {"job_limit": -1})


def _worker_lab(settings):
    dtype = device_types.create_device_type({"name": "qemu"})
    worker, _ = workers.create_worker({"hostname": "w1"})
    for name, h in (("good", DeviceHealth.GOOD), ("bad", DeviceHealth.BAD), ("unknown", DeviceHealth.UNKNOWN),
                    ("maint", DeviceHealth.MAINTENANCE)):
        factories.device(name, dtype, worker, health=h)


def test_worker_maintenance_then_active_makes_good_devices_unknown(db, settings):
    _worker_lab(settings)
    workers.update_worker("w1", {"health": "Maintenance"}, actor="alice")
    assert [health(n) for n in ("good", "bad", "unknown", "maint")] == ["Good", "Bad", "Unknown", "Maintenance"]
    workers.update_worker("w1", {"health": "Active", "reason": "back from the lab"}, actor="alice")
    assert [health(n) for n in ("good", "bad", "unknown", "maint")] == ["Unknown", "Bad", "Unknown", "Maintenance"]
    entry = HealthHistory.get()
    assert entry.actor == "alice" and "back from the lab" in entry.reason and "w1" in entry.reason


def test_worker_retired_retires_devices_except_bad(db, settings):
    _worker_lab(settings)
    workers.update_worker("w1", {"health": "RETIRED"})
    assert [health(n) for n in ("good", "bad", "unknown", "maint")] == ["Retired", "Bad", "Retired", "Retired"]
    Device.update(health=DeviceHealth.GOOD).where(Device.hostname == "good").execute()
    workers.update_worker("w1", {"health": "Active"})  # leaving retirement changes no device
    assert health("good") == "Good"
    assert Worker.get().health == WorkerHealth.ACTIVE


def test_worker_with_devices_is_kept(db, qemu_lab):
    with refused(409):
        workers.delete_worker("w1")
    workers.create_worker({"hostname": "spare"})
    workers.delete_worker("spare")
    assert [w.hostname for w in workers.list_workers()] == ["w1"]


# Maintenance ######################################################################


def test_maintenance_dry_run_force(db, qemu_lab):
    dtype, worker, device = qemu_lab
    factories.device("retired", dtype, worker, health=DeviceHealth.RETIRED)
    job = TestJob.create(submitter=factories.user(), original_definition="x", definition="{}",
                         requested_device_type=dtype, actual_device=device, state=JobState.RUNNING)
    assert maintenance.maintenance(dry_run=True, force=True) == [
        "qemu01: Good → Maintenance", f"job {job.id}: Running → Canceling"]
    assert health("qemu01") == "Good"
    maintenance.maintenance(force=False)
    assert health("qemu01") == "Maintenance" and health("retired") == "Retired"
    assert TestJob.get_by_id(job.id).state == JobState.RUNNING
    maintenance.maintenance(force=True, actor="ops")
    assert TestJob.get_by_id(job.id).state == JobState.CANCELING
