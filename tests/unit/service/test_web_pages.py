"""The web pages in process (`app` fixture): session login and logout, CSRF, what each viewer sees,
admin actions, the job page's log and its live follow."""

from __future__ import annotations

import json

import pytest
from webkit import Browser

import factories
from dutlab.service.lab import jobs
from dutlab.service.logstore import JobFolder
from dutlab.service.models import Device, GroupPermission, HealthHistory, TestJob, User, WebSession, Worker
from dutlab.service.states import DeviceHealth, DeviceState, JobHealth, JobState, WorkerHealth

SECRET_DICT = "{% extends 'qemu.jinja2' %}\n{% set power_off_command = 'pdu --password hunter2' %}\n"


@pytest.fixture
def lab(app, settings):
    """A device type, a worker, an open device, a device owned by `owner`, and users."""
    dtype = factories.device_type("qemu", template="qemu")
    worker = factories.worker("w1")
    factories.device("open01", dtype, worker)
    owner = factories.user("owner")
    secret = factories.device("secret01", dtype, worker, owner_user=owner)
    secret.dictionary = SECRET_DICT
    secret.save()
    factories.user("alice")
    boss = factories.user("boss")
    GroupPermission.create(group=factories.group("admins", boss), perm="admin")
    return settings


def submit(user, name: str, settings, visibility: str = "public", device_type: str = "qemu") -> TestJob:
    text = factories.job_text(name, device_type, extra="context: {arch: amd64}").replace(
        "visibility: public", f"visibility: {visibility}")
    return jobs.submit(user, text, settings)[0]


def test_login_sets_a_signed_httponly_cookie_and_logout_ends_the_session(app, lab):
    browser = Browser(app)
    form = browser.get("/accounts/login/")
    assert form.status == 200 and "dutlab_csrf" in browser.cookies
    # without the form's CSRF token the login is refused before any password is checked
    refused = browser.post("/accounts/login/", {"username": "alice", "password": "pw", "csrf": "forged"})
    assert refused.status == 403 and "CSRF" in refused.text
    wrong = browser.post("/accounts/login/", {"username": "alice", "password": "nope"}, csrf_from="/accounts/login/")
    assert wrong.status == 401 and "Wrong user name or password" in wrong.text
    assert "dutlab_session" not in browser.cookies
    answer = browser.login("alice", "pw")
    [cookie] = [c for c in browser.last_set_cookie if c.startswith("dutlab_session=")]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Secure" not in cookie
    assert answer.headers["Location"].endswith("/")
    page = browser.get("/")
    assert '<span id="whoami">alice</span>' in page.text and page.headers["Cache-Control"] == "no-store"
    key = browser.cookies["dutlab_session"]
    # only the key's hash is stored; a cookie with a forged signature is nobody
    assert WebSession.select().count() == 1 and key.split(".")[0] not in WebSession.get().key_hash
    other = Browser(app)
    other.cookies["dutlab_session"] = key.split(".")[0] + ".0123456789abcdef0123456789abcdef"
    assert "whoami" not in other.get("/").text
    out = browser.post("/accounts/logout/", {}, csrf_from="/")
    assert out.status == 303 and "dutlab_session" not in browser.cookies
    assert WebSession.select().count() == 0
    replay = Browser(app)
    replay.cookies["dutlab_session"] = key  # the old cookie: its session is gone on the server
    assert "whoami" not in replay.get("/").text


def test_the_cookie_is_secure_behind_https(app, lab):
    lab.base_url = "https://lab.example.org"
    browser = Browser(app)
    browser.login("alice", "pw")
    [cookie] = [c for c in browser.last_set_cookie if c.startswith("dutlab_session=")]
    assert "Secure" in cookie


def test_a_login_redirects_only_to_this_site(app, lab):
    browser = Browser(app)
    for target, where in (("/jobs?state=Running", "/jobs?state=Running"), ("//evil.example", "/"),
                          ("https://evil.example/", "/")):
        answer = browser.post("/accounts/login/", {"username": "alice", "password": "pw", "next": target},
                              csrf_from="/accounts/login/")
        assert answer.status == 303 and answer.headers["Location"].endswith(where), (target, answer.headers)


def test_web_logins_are_throttled_with_the_api_logins(app, lab):
    browser = Browser(app)
    for _ in range(5):
        assert browser.post("/accounts/login/", {"username": "alice", "password": "bad"},
                            csrf_from="/accounts/login/").status == 401
    throttled = browser.post("/accounts/login/", {"username": "alice", "password": "pw"},
                             csrf_from="/accounts/login/")
    assert throttled.status == 429 and int(throttled.headers["Retry-After"]) > 0
    assert "too many failed logins" in throttled.text
    # the API's password login shares the counts
    api = app.api("POST", "/api/v1/tokens", {"username": "alice", "password": "pw"}, token=None)
    assert api.status == 429


def test_anonymous_and_other_users_see_no_private_job_and_no_restricted_dictionary(app, lab):
    owner = User.get(User.username == "owner")
    public = submit(owner, "public job", lab)
    private = submit(owner, "private job", lab, visibility="personal")
    anonymous, alice, owner_browser = Browser(app), Browser(app), Browser(app)
    alice.login("alice", "pw")
    owner_browser.login("owner", "pw")
    for viewer in (anonymous, alice):
        listed = viewer.get("/jobs").text
        assert "public job" in listed and "private job" not in listed
        assert viewer.get(f"/jobs/{private.id}").status == 404
        assert viewer.get(f"/jobs/{private.id}/log.json").status == 404
        page = viewer.get("/devices/secret01").text
        assert "hunter2" not in page and 'id="no-dictionary"' in page
    assert "private job" in owner_browser.get("/jobs").text
    assert owner_browser.get(f"/jobs/{private.id}").status == 200
    owned = owner_browser.get("/devices/secret01").text
    assert 'id="dictionary"' in owned and "hunter2" in owned
    assert "pdu --password" not in alice.get(f"/jobs/{public.id}").text
    # an open device's dictionary is for any user, not for anonymous visitors (as GET .../dictionary)
    assert 'id="dictionary"' in alice.get("/devices/open01").text
    assert 'id="dictionary"' not in anonymous.get("/devices/open01").text
    # the job page links the texts the viewer may read; a restricted device's config is not one of them
    TestJob.update(actual_device=Device.get(Device.hostname == "secret01")).where(
        TestJob.id == public.id).execute()
    assert 'id="link-config"' not in alice.get(f"/jobs/{public.id}").text
    assert alice.get(f"/jobs/{public.id}/config.yaml").status == 403
    assert 'id="link-config"' in owner_browser.get(f"/jobs/{public.id}").text


def test_an_admin_puts_a_device_in_maintenance_with_a_reason(app, lab):
    admin, alice = Browser(app), Browser(app)
    admin.login("boss", "pw")
    alice.login("alice", "pw")
    page = admin.get("/devices/open01").text
    assert 'id="health-form"' in page and 'id="health-form"' not in alice.get("/devices/open01").text
    refused = alice.post("/devices/open01/health", {"health": "Maintenance", "reason": "mine",
                                                     "csrf": alice.csrf("/devices/open01")})
    assert refused.status == 403 and "is not an admin" in refused.text
    done = admin.post("/devices/open01/health", {"health": "Maintenance", "reason": "new PSU"}, "/devices/open01")
    assert done.status == 303 and done.headers["Location"].endswith("/devices/open01#history")
    entry = HealthHistory.select().order_by(HealthHistory.id.desc()).first()
    assert (entry.new_health, entry.reason, entry.actor) == (DeviceHealth.MAINTENANCE, "new PSU", "boss")
    history = admin.get("/devices/open01").text
    assert "new PSU" in history and "boss" in history
    bad = admin.post("/devices/open01/health", {"health": "Sleeping"}, "/devices/open01")
    assert bad.status == 400 and "is not a DeviceHealth" in bad.text
    worker = admin.post("/workers/w1/health", {"health": "Maintenance", "reason": "kernel update"}, "/workers/w1")
    assert worker.status == 303 and Worker.get().health == WorkerHealth.MAINTENANCE


def test_cancel_and_resubmit_from_the_job_page(app, lab):
    alice = User.get(User.username == "alice")
    job = submit(alice, "to cancel", lab)
    owner_view, other = Browser(app), Browser(app)
    owner_view.login("alice", "pw")
    other.login("owner", "pw")
    assert 'id="cancel"' in owner_view.get(f"/jobs/{job.id}").text
    assert 'id="cancel"' not in other.get(f"/jobs/{job.id}").text
    assert other.post(f"/jobs/{job.id}/cancel", {"csrf": other.csrf(f"/jobs/{job.id}")}).status == 403
    done = owner_view.post(f"/jobs/{job.id}/cancel", {}, f"/jobs/{job.id}")
    assert done.status == 303 and TestJob.get_by_id(job.id).health == JobHealth.CANCELED
    again = owner_view.post(f"/jobs/{job.id}/resubmit", {}, f"/jobs/{job.id}")
    new_id = int(again.headers["Location"].rsplit("/", 1)[1])
    assert again.status == 303 and new_id > job.id and TestJob.get_by_id(new_id).submitter_id == alice.id


def test_the_job_page_shows_results_and_the_log_and_follows_new_lines(app, lab):
    alice = User.get(User.username == "alice")
    job = submit(alice, "log job", lab)
    TestJob.update(state=JobState.RUNNING).where(TestJob.id == job.id).execute()
    folder = JobFolder(lab.output_dir, job.id)
    records = [{"dt": "2026-01-01T00:00:00.000", "lvl": "info", "msg": "start: 1 deploy"},
               {"dt": "2026-01-01T00:00:01.000", "lvl": "target", "msg": "<script>alert(1)</script>"},
               {"dt": "2026-01-01T00:00:02.000", "lvl": "results",
                "msg": {"definition": "0_smoke", "case": "uname", "result": "pass"}}]
    from dutlab.service.lab import results
    results.ingest(job, folder.append(0, [json.dumps(r) for r in records])[1])
    browser = Browser(app)
    page = browser.get(f"/jobs/{job.id}").text
    assert 'id="L0"' in page and 'href="#L2"' in page and "lvl-target" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page  # escaped, never run
    assert 'data-follow="/jobs/' in page and '<script src="/static/dutlab.js"></script>' in page
    assert "uname" in page and "0_smoke" in page  # the results table
    follow = browser.get(f"/jobs/{job.id}/log.json?start=1").json()
    assert [line[0] for line in follow["lines"]] == [1, 2] and follow["next"] == 3 and not follow["finished"]
    folder.append(3, [json.dumps({"dt": "2026-01-01T00:00:03.000", "lvl": "info", "msg": "more"})])
    TestJob.update(state=JobState.FINISHED, health=JobHealth.COMPLETE).where(TestJob.id == job.id).execute()
    follow = browser.get(f"/jobs/{job.id}/log.json?start=3").json()
    assert follow["lines"] == [[3, "2026-01-01T00:00:03.000", "info", "more"]] and follow["finished"]
    assert follow["state"] == "Finished" and follow["health"] == "Complete"
    finished = browser.get(f"/jobs/{job.id}").text
    assert "data-follow" not in finished and 'id="link-output"' in finished
    raw = browser.get(f"/jobs/{job.id}/output.yaml")
    assert raw.text.count("\n") == 4 and raw.text.startswith("- {")
    assert browser.get(f"/jobs/{job.id}/log.json?start=x").status == 400


def test_lists_filter_and_page(app, lab):
    alice = User.get(User.username == "alice")
    for n in range(55):
        submit(alice, f"job {n}", lab)
    browser = Browser(app)
    first = browser.get("/jobs").text
    assert 'id="job-total">55<' in first and "job 54" in first and "job 4<" not in first and 'id="next"' in first
    second = browser.get("/jobs?page=2").text
    assert "job 4<" in second and 'id="prev"' in second
    assert "job 7<" in browser.get("/jobs?text=job+7").text and "job 8<" not in browser.get("/jobs?text=job+7").text
    assert browser.get("/jobs?page=0").status == 400
    assert browser.get("/jobs?state=Sleeping").status == 400
    Device.update(state=DeviceState.RUNNING).where(Device.hostname == "open01").execute()
    running = browser.get("/devices?state=Running").text
    assert "open01" in running and "secret01" not in running


def test_pages_send_the_csp_that_allows_only_the_sites_own_script(app, lab):
    page = Browser(app).get("/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert csp.startswith("default-src 'none'") and "frame-ancestors 'none'" in csp
    script = Browser(app).get("/static/dutlab.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
