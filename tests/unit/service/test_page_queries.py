"""Every list page and list endpoint does a fixed number of queries, whatever its length: the same
for 2 devices and jobs as for 200 (counted at the database driver, in process)."""

from __future__ import annotations

import contextlib

import pytest
from webkit import Browser

import factories
from dutlab.service.db import database
from dutlab.service.lab import jobs
from dutlab.service.models import GroupPermission, HealthHistory, JobViewingGroup, TestJob, User
from dutlab.service.states import DeviceHealth, JobHealth, JobState

PAGES = ("/", "/devices", "/jobs", "/api/v1/devices", "/api/v1/jobs?limit=1000")


@contextlib.contextmanager
def counting():
    """Count the statements the database executes (every query goes through execute_sql)."""
    seen: list[str] = []
    real = database.obj.execute_sql

    def execute_sql(sql, params=None, *args, **kwargs):
        seen.append(sql)
        return real(sql, params, *args, **kwargs)

    database.obj.execute_sql = execute_sql
    try:
        yield seen
    finally:
        del database.obj.execute_sql


def test_the_counter_sees_every_query(db):
    """The counting is at the driver: a loop that asks once per row is seen as N queries."""
    for n in range(5):
        factories.user(f"user{n}")
    with counting() as seen:
        for user in User.select():
            HealthHistory.select().where(HealthHistory.actor == user.username).count()
    assert len(seen) == 1 + 5 and all(sql.lstrip().upper().startswith("SELECT") for sql in seen)


def grow(settings, start: int, end: int) -> None:
    """Devices start..end-1, each with a tag, an owner or a group, a Bad health entry, and one job
    (public, personal or group-visible, some finished Incomplete) on it."""
    dtype = factories.device_type(f"type{start}", template="qemu")
    worker = factories.worker(f"w{start}")
    owner = User.get(User.username == "owner")
    group = factories.group(f"team{start}", owner)
    for n in range(start, end):
        extra = {"owner_user": owner} if n % 3 == 0 else {"owner_group": group} if n % 3 == 1 else {}
        device = factories.device(f"dev{n:03d}", dtype, worker, tags=(f"tag{n % 4}",),
                                  health=DeviceHealth.BAD if n % 5 == 0 else DeviceHealth.GOOD, **extra)
        if n % 5 == 0:
            HealthHistory.create(device=device, old_health=DeviceHealth.GOOD, new_health=DeviceHealth.BAD,
                                 reason=f"health check job {n} failed", actor="dutlab-health")
        visibility = ("public", "personal", "group")[n % 3]
        text = factories.job_text(f"job {n}", dtype.name, extra="context: {arch: amd64}\ntags: [tag0]"
                                  if n % 4 == 0 else "context: {arch: amd64}")
        text = text.replace("visibility: public", "visibility: " + (visibility if visibility != "group"
                                                                  else f"{{group: [{group.name}]}}"))
        [job] = jobs.submit(owner, text, settings)
        if n % 2:
            TestJob.update(state=JobState.FINISHED, health=JobHealth.INCOMPLETE, actual_device=device, worker=worker,
                           failure_comment="boom", error_type="Test").where(TestJob.id == job.id).execute()
        if visibility == "group":
            assert JobViewingGroup.select().where(JobViewingGroup.job == job.id).exists()


def counts(app, browser: Browser, token: str | None) -> dict[str, int]:
    out = {}
    for path in PAGES:
        call = (lambda p=path: app.api("GET", p, token=token)) if token else (lambda p=path: browser.get(p))
        call()  # once first: a token's last-used time is written at most once a minute
        with counting() as seen:
            answer = call()
        assert answer.status == 200, (path, answer.text[:300])
        out[path] = len(seen)
    return out


@pytest.mark.parametrize("viewer", ["anonymous", "session user", "token admin", "superuser"])
def test_list_pages_do_the_same_queries_for_2_and_200_rows(app, settings, viewer):
    owner = factories.user("owner")
    boss = factories.user("boss")
    GroupPermission.create(group=factories.group("admins", boss), perm="admin")
    browser, token = Browser(app), None
    if viewer == "session user":
        browser.login("owner", "pw")
    elif viewer == "token admin":
        from dutlab.service import auth
        token = auth.create_token(boss, "counting")[1]
    elif viewer == "superuser":
        token = app.admin_token
    grow(settings, 0, 2)
    small = counts(app, browser, token)
    grow(settings, 2, 200)
    large = counts(app, browser, token)
    assert large == small, f"queries with 2 rows {small}, with 200 rows {large}"
    assert all(n >= 2 for n in small.values()), small  # the pages read the database, and it was counted
    listed = browser.get("/devices").text if not token else app.api("GET", "/devices", token=token).text
    assert "dev000" in listed and "dev199" in listed  # the 200 rows were on the page counted
    # what the counted pages showed: a superuser sees every job; the admin (not the submitter, in
    # none of the viewing groups) and the API without a token see the 67 public ones
    if token:
        want = 200 if viewer == "superuser" else 67
        assert app.api("GET", "/api/v1/jobs?limit=1000", token=token).json()["count"] == want
    else:
        assert browser.get("/api/v1/jobs?limit=1000").json()["count"] == 67  # the API reads no session
        wanted = "job 199" if viewer == "session user" else "job 198"  # 199 is personal: its submitter's
        assert wanted in browser.get("/jobs").text and owner.id
