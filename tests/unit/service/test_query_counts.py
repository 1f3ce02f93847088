"""Every list the server answers (REST, XML-RPC, web pages, /metrics) costs a fixed number of
queries, whatever the number of rows it lists: counted at the database driver, in process, with
2 and with 30 rows of every kind. A GET route or a listing XML-RPC method missing from the
inventory below fails the test too, so a new list is counted from its first day."""

from __future__ import annotations

import re
import xmlrpc.client

import pytest
from test_page_queries import counting
from webkit import Browser

import factories
from dutlab.service import auth, rpc
from dutlab.service.lab import jobs
from dutlab.service.models import (
    Device,
    DeviceType,
    Group,
    GroupMember,
    GroupPermission,
    HealthHistory,
    JobViewingGroup,
    Notification,
    PlaybookRun,
    Tag,
    TestCase,
    TestJob,
    TestSuite,
    User,
    UserPermission,
    Worker,
)
from dutlab.service.states import DeviceHealth, DeviceState, JobHealth, JobState

#: one device, worker, device type, tag, job and group that every row also touches: their own
#: pages list what grows (the type's devices, the job's results and notifications...)
MAIN_DEVICE, MAIN_WORKER, MAIN_TYPE, MAIN_TAG, MAIN_GROUP = "main01", "w-main", "qemu", "common", "team"

#: REST lists: (path, who may call it: "user" = any signed-in user, "admin" = admins only)
REST = [
    ("/api/v1/jobs?limit=1000", "user"),
    ("/api/v1/jobs?limit=1000&state=Finished&health=Incomplete", "user"),
    ("/api/v1/devices?limit=1000", "user"),
    ("/api/v1/device-types?limit=1000", "user"),
    ("/api/v1/workers?limit=1000", "user"),
    ("/api/v1/tags?limit=1000", "user"),
    ("/api/v1/users?limit=1000", "user"),
    ("/api/v1/groups?limit=1000", "user"),
    ("/api/v1/tokens?limit=1000", "user"),
    ("/api/v1/playbook-runs", "admin"),
    ("/metrics", "user"),
    # one object's page whose lists grow
    (f"/api/v1/devices/{MAIN_DEVICE}", "user"),
    (f"/api/v1/devices/{MAIN_DEVICE}/health-history?limit=1000", "user"),
    (f"/api/v1/devices/{MAIN_DEVICE}/tags", "user"),
    (f"/api/v1/device-types/{MAIN_TYPE}", "user"),
    (f"/api/v1/workers/{MAIN_WORKER}", "user"),
    (f"/api/v1/tags/{MAIN_TAG}", "user"),
    (f"/api/v1/groups/{MAIN_GROUP}", "user"),
    ("/api/v1/users/owner", "user"),
    ("/api/v1/jobs/{job}", "user"),
    ("/api/v1/jobs/{job}/results", "user"),
    ("/api/v1/jobs/{job}/results?format=yaml", "user"),
    ("/api/v1/jobs/{job}/results?format=junit", "user"),
    ("/api/v1/jobs/{job}/notifications", "user"),
]
#: XML-RPC methods that answer a list (or an object with one), with their parameters
RPC = [
    ("scheduler.jobs.list", (None, None, 0, 100, 0, True)),
    ("scheduler.jobs.list", ("Finished", "Incomplete", 0, 100, 0, False)),
    ("scheduler.jobs.queue", (None, 0, 100)),
    ("scheduler.devices.list", (True,)),
    ("scheduler.devices.show", (MAIN_DEVICE,)),
    ("scheduler.devices.tags.list", (MAIN_DEVICE,)),
    ("scheduler.devices.perms_list", (MAIN_DEVICE,)),
    ("scheduler.device_types.list", (True,)),
    ("scheduler.device_types.show", (MAIN_TYPE,)),
    ("scheduler.device_types.devices", (MAIN_TYPE,)),
    ("scheduler.device_types.aliases.list", (MAIN_TYPE,)),
    ("scheduler.workers.list", (True,)),
    ("scheduler.workers.show", (MAIN_WORKER,)),
    ("scheduler.tags.list", ()),
    ("scheduler.tags.show", (MAIN_TAG,)),
    ("scheduler.jobs.show", ("{job}",)),
    ("results.get_testjob_results_yaml", ("{job}",)),
    ("results.get_testjob_results_csv", ("{job}",)),
    ("results.get_testjob_suites_list_yaml", ("{job}",)),
    ("results.get_testjob_suites_list_csv", ("{job}",)),
    ("results.get_testsuite_results_yaml", ("{job}", "0_main")),
    ("system.listMethods", ()),
]
#: web pages (a browser, signed in or not)
WEB = ["/", "/devices", "/jobs", "/device-types", "/workers", f"/devices/{MAIN_DEVICE}", f"/workers/{MAIN_WORKER}",
       f"/device-types/{MAIN_TYPE}", "/jobs/{job}"]
#: GET routes that list nothing: one object's text or file, a redirect, a form, a constant
NOT_LISTS = {
    "/api/v1/system/version", "/api/v1/system/whoami", "/api/v1/openapi.json", "/RPC2", "/RPC2/", "/accounts/login/",
    "/static/dutlab.css", "/static/dutlab.js", "/scheduler/job/<job_id>", "/api/v1/devices/<hostname>/dictionary",
    "/api/v1/device-types/<name>/template", "/api/v1/device-types/<name>/health-check",
    "/api/v1/jobs/<job_id:jobid>/definition", "/api/v1/jobs/<job_id:jobid>/config",
    "/api/v1/jobs/<job_id:jobid>/description", "/api/v1/jobs/<job_id:jobid>/logs",
    "/api/v1/workers/<name>/files/<kind>", "/api/v1/playbook-runs/<run_id:int>",
    "/jobs/<job_id:jobid>/log.json", "/jobs/<job_id:jobid>/definition.yaml", "/jobs/<job_id:jobid>/config.yaml",
    "/jobs/<job_id:jobid>/description.yaml", "/jobs/<job_id:jobid>/output.yaml",
    "/internal/v1/jobs/<job_id:int>",  # the worker fetches one job (its polls are POSTs)
}
#: XML-RPC methods whose name says they list (or show an object with a list), left uncounted: none has rows
RPC_NOT_LISTS = {"system.listMethods"}


def rule_of(path: str) -> str:
    """The route rule a counted path answers from (its parameters written as the rule writes them)."""
    path = path.split("?")[0]
    for fixed, rule in ((MAIN_DEVICE, "<hostname>"), (MAIN_WORKER, "<name>"), (MAIN_TAG, "<name>"),
                        (MAIN_GROUP, "<name>"), ("owner", "<name>"), ("{job}", "<job_id:jobid>")):
        path = path.replace(f"/{fixed}", f"/{rule}")
    return re.sub(r"/device-types/qemu\b", "/device-types/<name>", path)


def test_the_inventory_holds_every_list_route_and_method(app):
    """A GET route is either counted here or listed as answering no list; likewise the XML-RPC
    methods whose names say they list."""
    counted = {rule_of(p) for p, _ in REST} | {rule_of(p) for p in WEB}
    for route in app.wsgi.routes:
        if route.method == "GET":
            assert route.rule in counted or route.rule in NOT_LISTS, \
                f"GET {route.rule}: add it to REST/WEB in this test (or to NOT_LISTS if it lists nothing)"
    named = {name for name, _ in RPC}
    for name in rpc.methods():
        if re.search(r"list|queue|devices$|\.show$", name, re.I):
            assert name in named or name in RPC_NOT_LISTS, f"XML-RPC {name}: add it to RPC in this test"


def grow(settings, start: int, end: int) -> None:
    """Rows start..end-1 of every kind the lists show: users (in a group, with a permission), groups,
    tokens, tags, device types, workers, devices (owners, physical access, tags, health, a current
    job), jobs (public, personal and group-visible, tagged, some finished Incomplete), health history,
    notifications, test suites and cases, playbook runs."""
    owner, team = User.get(User.username == "owner"), Group.get(Group.name == MAIN_GROUP)
    main_type, main_worker = DeviceType.get(name=MAIN_TYPE), Worker.get(hostname=MAIN_WORKER)
    main_device = Device.get(hostname=MAIN_DEVICE)
    first_job = TestJob.select().order_by(TestJob.id).first()
    for n in range(start, end):
        user = factories.user(f"user{n:03d}")
        group = factories.group(f"group{n:03d}", user, owner)
        GroupMember.create(group=team, user=user)
        UserPermission.create(user=user, perm="submit")
        GroupPermission.create(group=group, perm="cancel_resubmit")
        auth.create_token(owner, f"token {n}")
        Tag.create(name=f"tag{n:03d}", description=f"tag {n}")
        dtype = factories.device_type(f"type{n:03d}", template="qemu")
        worker = factories.worker(f"w{n:03d}")
        extra = {"owner_user": user} if n % 3 == 0 else {"owner_group": group} if n % 3 == 1 else {}
        extra |= {"physical_user": owner} if n % 2 else {"physical_group": team}
        factories.device(f"own{n:03d}", dtype, worker, tags=(f"tag{n:03d}",), **extra)
        device = factories.device(f"dev{n:03d}", main_type, main_worker, tags=(f"tag{n:03d}", MAIN_TAG),
                                  health=DeviceHealth.BAD if n % 5 == 0 else DeviceHealth.GOOD, **extra)
        HealthHistory.create(device=main_device, old_health=DeviceHealth.GOOD, new_health=DeviceHealth.BAD,
                             reason=f"check {n} failed", actor="dutlab-health")
        if n % 5 == 0:
            HealthHistory.create(device=device, old_health=DeviceHealth.GOOD, new_health=DeviceHealth.BAD,
                                 reason=f"health check job {n} failed", actor="dutlab-health")
        visibility = ("public", "personal", "group")[n % 3]
        text = factories.job_text(f"job {n}", MAIN_TYPE, extra="context: {arch: amd64}\ntags: [common]")
        text = text.replace("visibility: public", "visibility: " + (
            visibility if visibility != "group" else f"{{group: [{team.name}, {group.name}]}}"))
        [job] = jobs.submit(user if n % 2 else owner, text, settings)
        if visibility == "group":
            assert JobViewingGroup.select().where(JobViewingGroup.job == job.id).exists()
        if n % 4 == 1:
            TestJob.update(state=JobState.FINISHED, health=JobHealth.INCOMPLETE, actual_device=device, worker=worker,
                           failure_comment="boom", error_type="Test").where(TestJob.id == job.id).execute()
        elif n % 4 == 2:
            TestJob.update(state=JobState.RUNNING, actual_device=device, worker=main_worker,
                           start_time=TestJob.submit_time).where(TestJob.id == job.id).execute()
            Device.update(state=DeviceState.RUNNING, current_job=job.id).where(Device.id == device.id).execute()
        first_job = first_job or job
        suite, _ = TestSuite.get_or_create(job=first_job, name="0_main" if n % 2 == 0 else f"{n}_extra")
        TestCase.create(suite=suite, name=f"case{n}", result=n % 3, measurement=n or None, units="s",
                        metadata=f"case: case{n}\nextra: {{label: image{n}}}\n", log_line=n)
        Notification.create(subject=f"job:{first_job.id}", job=first_job, event="finished", key=f"recipients[{n}]",
                            method="email", recipient=f"user{n}@example.org")
        PlaybookRun.create(name=f"backup{n}", playbook="backup.yml", stats='{"ok": 1}')


def lab(settings, rows: int = 2) -> User:
    """The fixed part every row refers to, and the viewers: a superuser's token, a signed-in
    user's token and session (a member of the main group), an anonymous browser."""
    owner = factories.user("owner")
    team = factories.group(MAIN_GROUP, owner)
    GroupPermission.create(group=team, perm="submit")
    dtype = factories.device_type(MAIN_TYPE, template="qemu")
    factories.device(MAIN_DEVICE, dtype, factories.worker(MAIN_WORKER), tags=(MAIN_TAG,), owner_group=team)
    grow(settings, 0, rows)
    return owner


def rpc_call(app, token: str | None, method: str, params: tuple):
    body = xmlrpc.client.dumps(params, method, allow_none=True)
    answer = app.api("POST", "/RPC2", body, token=token, headers={"Content-Type": "text/xml"})
    assert answer.status == 200, (method, answer.text[:300])
    return xmlrpc.client.loads(answer.body, use_builtin_types=True)[0][0]


def calls(app, tokens: dict[str, str], browsers: dict[str, Browser]) -> dict:
    """Each counted request once per viewer, as (viewer, what) -> a function that makes it."""
    job = str(TestJob.select(TestJob.id).order_by(TestJob.id).scalar())
    out = {}
    for viewer, token in tokens.items():
        for path, who in REST:
            if who == "admin" and viewer != "superuser":
                continue
            real = path.replace("{job}", job)
            out[(viewer, path)] = lambda p=real, t=token: app.api("GET", p, token=t)
        for method, params in RPC:
            given = tuple(job if p == "{job}" else p for p in params)
            out[(viewer, method, params)] = lambda m=method, g=given, t=token: rpc_call(app, t, m, g)
    for viewer, browser in browsers.items():
        for path in WEB:
            real = path.replace("{job}", job)
            out[(viewer, path)] = lambda p=real, b=browser: b.get(p)
    return out


def measure(requests: dict) -> dict:
    out = {}
    for key, call in requests.items():
        call()  # once first: a token's last-used time and a session's are written at most once a minute
        with counting() as seen:
            answer = call()
        if hasattr(answer, "status"):
            assert answer.status == 200, (key, answer.text[:300])
        out[key] = len(seen)
    return out


@pytest.fixture
def viewers(app, settings):
    owner = lab(settings)
    browsers = {"anonymous": Browser(app), "session user": Browser(app)}
    browsers["session user"].login("owner", "pw")
    return owner, {"superuser": app.admin_token, "token user": auth.create_token(owner, "viewer")[1]}, browsers


def test_every_list_does_the_same_queries_for_2_and_30_rows(app, settings, viewers):
    owner, tokens, browsers = viewers
    requests = calls(app, tokens, browsers)
    small = measure(requests)
    grow(settings, 2, 30)
    large = measure(requests)
    grown = {key: (small[key], large[key]) for key in small if small[key] != large[key]}
    assert not grown, "queries with 2 rows -> with 30 rows:\n" + "\n".join(f"  {k}: {v}" for k, v in grown.items())
    # the counted answers held the rows (the superuser sees every job, the user the visible ones)
    superuser, user = tokens["superuser"], tokens["token user"]
    assert app.api("GET", "/api/v1/devices?limit=1000", token=superuser).json()["count"] == 61
    assert app.api("GET", "/api/v1/jobs?limit=1000", token=superuser).json()["count"] == 30
    assert len(rpc_call(app, user, "scheduler.jobs.list", (None, None, 0, 100, 0, True))) == \
        app.api("GET", "/api/v1/jobs?limit=1000", token=user).json()["count"] == 25  # 10 public, 10 group, 5 own
    assert len(rpc_call(app, None, "scheduler.jobs.list", (None, None, 0, 100, 0, True))) == 10  # public only
    assert len(app.api("GET", f"/api/v1/workers/{MAIN_WORKER}", token=user).json()["devices"]) == 31
    assert "dev029" in browsers["anonymous"].get("/devices").text and "type029" in browsers["anonymous"].get(
        "/device-types").text
    assert len(app.api("GET", "/api/v1/users?limit=1000", token=superuser).json()["results"]) == 32
