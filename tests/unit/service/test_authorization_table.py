"""Who may call what: every route of the server × every kind of caller → the status it answers.

The table is checked against the installed route table (`test_every_route_has_a_row`), so a
route added without deciding who may call it fails here. Each row runs on objects made for
each caller alone (a device, a job, a worker... named after the caller), so a DELETE that one
caller may do leaves the next caller's objects as they were.

The callers: no credentials; a plain user; the owner of a restricted device (who submitted the
job on it); a user with the `admin` permission (not a superuser); a superuser; a worker (its
worker token, and on the job routes the job token a worker hands its dutlab-run).
"""

from __future__ import annotations

import json
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

import pytest

import factories
from dutlab.dispatcher.protocol import PROTOCOL
from dutlab.service import auth
from dutlab.service.lab import jobs
from dutlab.service.logstore import JobFolder
from dutlab.service.models import Device, DeviceTag, GroupPermission, PlaybookRun, Tag, TestJob, User
from dutlab.service.states import DeviceState, JobState

CALLERS = ("anonymous", "user", "owner", "admin", "superuser", "worker")
SECRET_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n{% set power_off_command = 'pdu --pw hunter2' %}\n"


@dataclass
class Row:
    """Statuses in CALLERS order; the body sent (a function of the caller's World); which of the
    world's objects fill the rule's wildcards when not the default ones."""

    statuses: tuple[int, ...]
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)


EVERYONE = (200, 200, 200, 200, 200, 403)  # a worker token never acts as a user
USERS = (401, 200, 200, 200, 200, 403)
ADMINS = (401, 403, 403, 200, 200, 403)
ADMINS_CREATE = (401, 403, 403, 201, 201, 403)
ADMINS_DELETE = (401, 403, 403, 204, 204, 403)
DEVICE_READERS = (401, 403, 200, 200, 200, 403)  # a restricted device: its owners and admins
WORKER_ONLY = (401, 403, 403, 403, 403, 200)

TABLE: dict[tuple[str, str], Row] = {
    ("GET", "/api/v1/system/version"): Row(EVERYONE),
    ("GET", "/api/v1/system/whoami"): Row(EVERYONE),
    # jobs: the world's job is public, on a device restricted to `owner`, who submitted it
    ("POST", "/api/v1/jobs"): Row((401, 403, 201, 403, 201, 403), lambda w: {"definition": w.job_text}),
    ("POST", "/api/v1/jobs/validate"): Row(EVERYONE, lambda w: {"definition": w.job_text}),
    ("GET", "/api/v1/jobs"): Row(EVERYONE),
    ("GET", "/api/v1/jobs/<job_id:jobid>"): Row(EVERYONE),
    ("POST", "/api/v1/jobs/<job_id:jobid>/cancel"): Row((401, 403, 200, 200, 200, 403)),
    # an admin may resubmit others' jobs, but only owners (and superusers) use a restricted device
    ("POST", "/api/v1/jobs/<job_id:jobid>/resubmit"): Row((401, 403, 201, 403, 201, 403)),
    ("GET", "/api/v1/jobs/<job_id:jobid>/definition"): Row(DEVICE_READERS),
    ("GET", "/api/v1/jobs/<job_id:jobid>/config"): Row(DEVICE_READERS),
    ("GET", "/api/v1/jobs/<job_id:jobid>/description"): Row(DEVICE_READERS),
    ("GET", "/api/v1/jobs/<job_id:jobid>/logs"): Row(EVERYONE),
    ("GET", "/api/v1/jobs/<job_id:jobid>/results"): Row(EVERYONE),
    # they name recipients: the submitter (`owner` here) and admins
    ("GET", "/api/v1/jobs/<job_id:jobid>/notifications"): Row((401, 403, 200, 200, 200, 403)),
    # devices
    ("GET", "/api/v1/devices"): Row(EVERYONE),
    ("POST", "/api/v1/devices"): Row(ADMINS_CREATE, lambda w: {"hostname": f"new-{w.c}", "device_type": w.dtype,
                                                               "worker": w.worker}),
    ("GET", "/api/v1/devices/<hostname>"): Row(EVERYONE),
    ("PATCH", "/api/v1/devices/<hostname>"): Row(ADMINS, {"description": "changed"}),
    ("DELETE", "/api/v1/devices/<hostname>"): Row(ADMINS_DELETE, params={"hostname": "spare_device"}),
    ("GET", "/api/v1/devices/<hostname>/dictionary"): Row(DEVICE_READERS),
    ("PUT", "/api/v1/devices/<hostname>/dictionary"): Row(ADMINS, {"dictionary": factories.QEMU_DICT}),
    ("POST", "/api/v1/devices/<hostname>/health"): Row(ADMINS, {"health": "Maintenance", "reason": "table"}),
    ("GET", "/api/v1/devices/<hostname>/health-history"): Row(EVERYONE),
    ("GET", "/api/v1/devices/<hostname>/tags"): Row(EVERYONE),
    ("POST", "/api/v1/devices/<hostname>/tags"): Row(ADMINS, lambda w: {"name": f"more-{w.c}"}),
    ("DELETE", "/api/v1/devices/<hostname>/tags/<tag>"): Row(ADMINS_DELETE),
    # device types
    ("GET", "/api/v1/device-types"): Row(EVERYONE),
    ("POST", "/api/v1/device-types"): Row(ADMINS_CREATE, lambda w: {"name": f"new-{w.c}"}),
    ("GET", "/api/v1/device-types/<name>"): Row(EVERYONE, params={"name": "dtype"}),
    ("PATCH", "/api/v1/device-types/<name>"): Row(ADMINS, {"description": "changed"}, params={"name": "dtype"}),
    ("DELETE", "/api/v1/device-types/<name>"): Row(ADMINS_DELETE, params={"name": "spare_dtype"}),
    ("GET", "/api/v1/device-types/<name>/template"): Row(EVERYONE, params={"name": "dtype"}),
    ("GET", "/api/v1/device-types/<name>/health-check"): Row(EVERYONE, params={"name": "dtype"}),
    ("PUT", "/api/v1/device-types/<name>/health-check"): Row(ADMINS, {"health_check": ""}, params={"name": "dtype"}),
    # workers
    ("GET", "/api/v1/workers"): Row(EVERYONE),
    ("POST", "/api/v1/workers"): Row(ADMINS_CREATE, lambda w: {"hostname": f"new-{w.c}"}),
    ("GET", "/api/v1/workers/<name>"): Row(EVERYONE, params={"name": "worker"}),
    ("PATCH", "/api/v1/workers/<name>"): Row(ADMINS, {"description": "changed"}, params={"name": "worker"}),
    ("DELETE", "/api/v1/workers/<name>"): Row(ADMINS_DELETE, params={"name": "spare_worker"}),
    ("POST", "/api/v1/workers/<name>/token"): Row(ADMINS, params={"name": "worker"}),
    # per-worker files may hold credentials (env): admins only
    ("GET", "/api/v1/workers/<name>/files/<kind>"): Row(ADMINS, params={"name": "worker", "kind": "file_kind"}),
    ("PUT", "/api/v1/workers/<name>/files/<kind>"): Row(ADMINS, {"text": "overrides: {LAB: table}\n"},
                                                          params={"name": "worker", "kind": "file_kind"}),
    # users and groups: the target is a plain user of the caller's world
    ("GET", "/api/v1/users"): Row(USERS),
    ("POST", "/api/v1/users"): Row(ADMINS_CREATE, lambda w: {"username": f"new-{w.c}"}),
    ("GET", "/api/v1/users/<name>"): Row(ADMINS, params={"name": "target"}),
    ("PATCH", "/api/v1/users/<name>"): Row(ADMINS, {"email": "new@example.org"}, params={"name": "target"}),
    ("DELETE", "/api/v1/users/<name>"): Row(ADMINS_DELETE, params={"name": "target"}),
    ("GET", "/api/v1/groups"): Row(USERS),
    ("POST", "/api/v1/groups"): Row(ADMINS_CREATE, lambda w: {"name": f"new-{w.c}"}),
    ("GET", "/api/v1/groups/<name>"): Row(USERS, params={"name": "group"}),
    ("PATCH", "/api/v1/groups/<name>"): Row(ADMINS, {"members": []}, params={"name": "group"}),
    ("DELETE", "/api/v1/groups/<name>"): Row(ADMINS_DELETE, params={"name": "group"}),
    # tokens: minting one for the superuser is for superusers only (issue 18)
    ("GET", "/api/v1/tokens"): Row(USERS),
    ("POST", "/api/v1/tokens"): Row((401, 403, 403, 403, 201, 403), {"user": "admin"}),
    ("DELETE", "/api/v1/tokens/<token_id>"): Row((401, 404, 204, 204, 204, 403)),  # the owner's token
    # tags
    ("GET", "/api/v1/tags"): Row(EVERYONE),
    ("POST", "/api/v1/tags"): Row(ADMINS_CREATE, lambda w: {"name": f"new-{w.c}"}),
    ("GET", "/api/v1/tags/<name>"): Row(EVERYONE, params={"name": "tag"}),
    ("PATCH", "/api/v1/tags/<name>"): Row(ADMINS, {"description": "changed"}, params={"name": "tag"}),
    ("DELETE", "/api/v1/tags/<name>"): Row(ADMINS_DELETE, params={"name": "tag"}),
    # the worker API
    ("POST", "/internal/v1/workers/<name>/poll"): Row(WORKER_ONLY, {"protocol": PROTOCOL, "wait": 0},
                                                      params={"name": "worker"}),
    ("GET", "/internal/v1/jobs/<job_id:int>"): Row(WORKER_ONLY),
    ("POST", "/internal/v1/jobs/<job_id:int>/state"): Row(WORKER_ONLY, {"state": "Running"}),
    ("POST", "/internal/v1/jobs/<job_id:int>/logs"): Row(WORKER_ONLY, {"index": 0, "lines": [
        json.dumps({"dt": "2026-01-01T00:00:00Z", "lvl": "info", "msg": "table"})]}),
    ("POST", "/internal/v1/jobs/<job_id:int>/finish"): Row(WORKER_ONLY, {"result": "pass", "log_line_count": 0}),
    # playbook runs: no schedule is configured, so an admin passes auth and gets the 404 for the name
    ("GET", "/api/v1/playbook-runs"): Row(ADMINS),
    ("GET", "/api/v1/playbook-runs/<run_id:int>"): Row(ADMINS),
    ("POST", "/api/v1/playbook-runs"): Row((401, 403, 403, 404, 404, 403), {"name": "backup"}),
    ("GET", "/api/v1/openapi.json"): Row(EVERYONE),
    # XML-RPC: the endpoint answers everyone (methods check the caller: test_rpc_restricted_job_details)
    ("POST", "/RPC2"): Row((200, 200, 200, 200, 200, 400), xmlrpc.client.dumps((), "system.whoami")),
    ("POST", "/RPC2/"): Row((200, 200, 200, 200, 200, 400), xmlrpc.client.dumps((), "system.whoami")),
    ("GET", "/RPC2"): Row((200,) * 6),  # the help text; no credentials are read
    ("GET", "/RPC2/"): Row((200,) * 6),
    ("GET", "/scheduler/job/<job_id>"): Row((302, 302, 302, 302, 302, 403)),
    ("GET", "/metrics"): Row(EVERYONE),
    # web pages (service/web/): what a token caller sees there is what its user sees; a form POST
    # from a browser needs its CSRF token (an anonymous call here has none: 403), a token caller none
    ("GET", "/"): Row(EVERYONE),
    ("GET", "/accounts/login/"): Row(EVERYONE),
    ("POST", "/accounts/login/"): Row((403, 401, 401, 401, 401, 403), "username=nobody&password=wrong"),
    ("POST", "/accounts/logout/"): Row((403, 303, 303, 303, 303, 403), ""),
    ("GET", "/jobs"): Row(EVERYONE),
    ("GET", "/jobs/<job_id:jobid>"): Row(EVERYONE),
    ("GET", "/jobs/<job_id:jobid>/log.json"): Row(EVERYONE),
    ("GET", "/jobs/<job_id:jobid>/definition.yaml"): Row(DEVICE_READERS),
    ("GET", "/jobs/<job_id:jobid>/config.yaml"): Row(DEVICE_READERS),
    ("GET", "/jobs/<job_id:jobid>/description.yaml"): Row(DEVICE_READERS),
    ("GET", "/jobs/<job_id:jobid>/output.yaml"): Row(EVERYONE),
    ("POST", "/jobs/<job_id:jobid>/cancel"): Row((403, 403, 303, 303, 303, 403), ""),
    ("POST", "/jobs/<job_id:jobid>/resubmit"): Row((403, 403, 303, 403, 303, 403), ""),
    ("GET", "/devices"): Row(EVERYONE),
    ("GET", "/devices/<hostname>"): Row(EVERYONE),
    ("POST", "/devices/<hostname>/health"): Row((403, 403, 403, 303, 303, 403), "health=Maintenance&reason=table"),
    ("GET", "/device-types"): Row(EVERYONE),
    ("GET", "/device-types/<name>"): Row(EVERYONE, params={"name": "dtype"}),
    ("GET", "/workers"): Row(EVERYONE),
    ("GET", "/workers/<name>"): Row(EVERYONE, params={"name": "worker"}),
    ("POST", "/workers/<name>/health"): Row((403, 403, 403, 303, 303, 403), "health=Maintenance&reason=table",
                                           params={"name": "worker"}),
    ("GET", "/static/dutlab.css"): Row(EVERYONE),
    ("GET", "/static/dutlab.js"): Row(EVERYONE),
}
#: the body of a web form row (a str that is not XML-RPC)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class World:
    """One caller's objects: `c` names them."""

    c: str
    dtype: str
    spare_dtype: str
    worker: str
    spare_worker: str
    device: str
    spare_device: str
    tag: str
    group: str
    target: str
    job_id: int
    job_token: str
    token_id: int
    run_id: int
    job_text: str
    file_kind: str = "env"

    def wildcards(self, params: dict[str, str]) -> dict[str, str]:
        names = {"hostname": self.device, "tag": self.tag, "name": self.device, "job_id": str(self.job_id),
                 "token_id": str(self.token_id), "run_id": str(self.run_id)}
        names.update({key: str(getattr(self, attr)) for key, attr in params.items()})
        return names


class Lab:
    """The callers' accounts and tokens, and one World per caller."""

    def __init__(self, app, settings) -> None:
        self.app, self.settings = app, settings
        self.owner = User.create(username="owner")
        plain = User.create(username="plain")
        boss = User.create(username="boss")
        admins = factories.group("admins", boss)
        GroupPermission.create(group=admins, perm="admin")
        self.tokens = {"user": self._token(plain), "owner": self._token(self.owner), "admin": self._token(boss),
                       "superuser": app.admin_token}

    @staticmethod
    def _token(user: User) -> str:
        return auth.create_token(user, "table")[1]

    def world(self, c: str) -> World:
        dtype = factories.device_type(f"dt-{c}", template="qemu")
        factories.device_type(f"spare-dt-{c}", template="qemu")
        worker = factories.worker(f"w-{c}")
        factories.worker(f"spare-w-{c}")
        device = factories.device(f"d-{c}", dtype, worker, owner_user=self.owner)
        device.dictionary = SECRET_DICT
        device.save()
        factories.device(f"spare-d-{c}", dtype, worker, owner_user=self.owner)
        tag = Tag.create(name=f"t-{c}")
        DeviceTag.create(device=device, tag=tag)
        factories.group(f"g-{c}")
        User.create(username=f"u-{c}")
        text = factories.job_text(f"table {c}", f"dt-{c}", extra="context: {arch: amd64}")
        [job] = jobs.submit(self.owner, text, self.settings)
        job_token = f"job-token-{c}"
        TestJob.update(state=JobState.RUNNING, actual_device=device, worker=worker,
                       token_hash=auth.hash_secret(job_token)).where(TestJob.id == job.id).execute()
        Device.update(state=DeviceState.RUNNING, current_job=job.id).where(Device.id == device.id).execute()
        folder = JobFolder(self.settings.output_dir, job.id)
        folder.write("device.yaml", "commands: {power_off: pdu --pw hunter2}\n")
        folder.write("description.yaml", f"job: {{id: {job.id}}}\n")
        token, _ = auth.create_token(self.owner, f"owner's token {c}")
        run = PlaybookRun.create(name="backup", playbook="backup.yml", trigger="api")
        return World(c=c, dtype=f"dt-{c}", spare_dtype=f"spare-dt-{c}", worker=f"w-{c}",
                     spare_worker=f"spare-w-{c}", device=f"d-{c}", spare_device=f"spare-d-{c}", tag=f"t-{c}",
                     group=f"g-{c}", target=f"u-{c}", job_id=job.id, job_token=job_token, token_id=token.id,
                     run_id=run.id, job_text=text)

    def call(self, caller: str, method: str, rule: str, row: Row, world: World):
        path = rule
        for key, value in world.wildcards(row.params).items():
            path = path.replace(f"<{key}:int>", value).replace(f"<{key}:jobid>", value).replace(f"<{key}>", value)
        body = row.body(world) if callable(row.body) else row.body
        headers = {"Content-Type": "text/xml"} if rule.startswith("/RPC2") else FORM if isinstance(body, str) else None
        if caller == "anonymous":
            return self.app.api(method, path, body, token=None, headers=headers)
        if caller == "worker":
            worker_auth = f"Job {world.job_token}" if "/internal/v1/jobs/" in rule else f"Worker tok-{world.worker}"
            return self.app.api(method, path, body, token=None, auth=worker_auth, headers=headers)
        return self.app.api(method, path, body, token=self.tokens[caller], headers=headers)


def routes_of(app) -> set[tuple[str, str]]:
    return {(route.method, route.rule) for route in app.wsgi.routes}


def test_every_route_has_a_row(app):
    served = routes_of(app)
    missing = sorted(served - TABLE.keys())
    assert not missing, f"routes with no row in TABLE (decide who may call them): {missing}"
    assert not sorted(TABLE.keys() - served), "rows for routes the server does not serve"
    assert all(len(row.statuses) == len(CALLERS) for row in TABLE.values())


@pytest.mark.parametrize(("method", "rule"), sorted(TABLE), ids=[f"{m} {r}" for m, r in sorted(TABLE)])
def test_route_answers_each_caller_as_the_table_says(app, settings, method, rule):
    lab = Lab(app, settings)
    row = TABLE[(method, rule)]
    got = {}
    for caller in CALLERS:
        answer = lab.call(caller, method, rule, row, lab.world(caller))
        got[caller] = (answer.status, answer.text[:160])
    wanted = dict(zip(CALLERS, row.statuses, strict=True))
    assert {c: s for c, (s, _) in got.items()} == wanted, "\n".join(f"{c}: {s} {t}" for c, (s, t) in got.items())
