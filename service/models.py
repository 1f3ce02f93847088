"""Peewee models with LAVA's names (TestJob, Device, DeviceType, Worker) and states.

State columns hold the integer codes of `states.py`; the API shows their labels.
"""

from __future__ import annotations

import datetime as dt

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    DeferredForeignKey,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from .db import database, for_update, rows_prebuilt
from .states import DeviceHealth, DeviceState, JobHealth, JobState, WorkerHealth, WorkerState


def utcnow() -> dt.datetime:
    # naive UTC everywhere in the DB: SQLite and PostgreSQL then agree byte for byte
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class User(BaseModel):
    username = CharField(max_length=150, unique=True)
    email = CharField(max_length=254, default="")
    password_hash = CharField(max_length=256, default="")
    is_superuser = BooleanField(default=False)
    is_active = BooleanField(default=True)
    #: the person's name (LDAP's attribute map fills it; web pages show it)
    full_name = CharField(max_length=300, default="")
    date_joined = DateTimeField(default=utcnow)
    last_login = DateTimeField(null=True)


class Group(BaseModel):
    name = CharField(max_length=150, unique=True)


class GroupMember(BaseModel):
    group = ForeignKeyField(Group, backref="members", on_delete="CASCADE")
    user = ForeignKeyField(User, backref="memberships", on_delete="CASCADE")

    class Meta:
        indexes = ((("group", "user"), True),)


class GroupPermission(BaseModel):
    group = ForeignKeyField(Group, backref="permissions", on_delete="CASCADE")
    #: one of states.PERMISSIONS
    perm = CharField(max_length=40)

    class Meta:
        indexes = ((("group", "perm"), True),)


class UserPermission(BaseModel):
    """A permission granted to one user directly (LAVA's per-user permissions), besides groups."""

    user = ForeignKeyField(User, backref="permissions", on_delete="CASCADE")
    #: one of states.PERMISSIONS
    perm = CharField(max_length=40)

    class Meta:
        indexes = ((("user", "perm"), True),)


class Token(BaseModel):
    """An API token; only its SHA-256 is stored, the secret is shown once."""

    user = ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    description = CharField(max_length=200, default="")
    secret_hash = CharField(max_length=64, unique=True)
    #: first characters of the secret, so admins can tell tokens apart in lists
    prefix = CharField(max_length=8, default="")
    created = DateTimeField(default=utcnow)
    last_used = DateTimeField(null=True)


class DeviceType(BaseModel):
    name = CharField(max_length=100, unique=True)
    description = TextField(default="")
    #: template file name without .jinja2 (defaults to the type name)
    template = CharField(max_length=100, default="")
    #: health-check job definition (YAML); empty: the shipped health-checks/<template>.yaml
    health_check = TextField(default="")
    health_frequency = IntegerField(default=24)
    health_denominator = CharField(max_length=5, default="hours")  # hours | jobs
    disable_health_checks = BooleanField(default=False)
    display = BooleanField(default=True)


class Tag(BaseModel):
    name = CharField(max_length=100, unique=True)
    description = TextField(default="")


class Worker(BaseModel):
    hostname = CharField(max_length=200, unique=True)
    description = TextField(default="")
    token_hash = CharField(max_length=64, default="")
    state = IntegerField(default=WorkerState.OFFLINE)
    health = IntegerField(default=WorkerHealth.ACTIVE)
    job_limit = IntegerField(default=0)  # 0: unlimited
    version = CharField(max_length=50, default="")
    protocol = IntegerField(default=0)
    last_ping = DateTimeField(null=True)
    #: when the worker went Offline (its jobs keep their devices until their own timeout)
    offline_since = DateTimeField(null=True)
    #: bumped whenever the worker has something new to do; long-polls watch it
    wake_seq = IntegerField(default=0)


class WorkerFile(BaseModel):
    """A file the server keeps for one worker and sends with each of its jobs (lab/worker_files.py):
    LAVA's dispatcher.d/<worker>.yaml (`dispatcher`), env.yaml (`env`), env-dut.yaml (`env-dut`)."""

    worker = ForeignKeyField(Worker, backref="files", on_delete="CASCADE")
    kind = CharField(max_length=20)
    text = TextField(default="")
    updated = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("worker", "kind"), True),)


class Device(BaseModel):
    hostname = CharField(max_length=200, unique=True)
    device_type = ForeignKeyField(DeviceType, backref="devices", on_delete="RESTRICT")
    worker = ForeignKeyField(Worker, backref="devices", null=True, on_delete="SET NULL")
    description = TextField(default="")
    #: the device dictionary: {% extends 'qemu.jinja2' %} + {% set ... %} lines
    dictionary = TextField(default="")
    state = IntegerField(default=DeviceState.IDLE, index=True)
    health = IntegerField(default=DeviceHealth.UNKNOWN, index=True)
    owner_user = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="owned_devices")
    owner_group = ForeignKeyField(Group, null=True, on_delete="SET NULL", backref="owned_devices")
    physical_user = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="physical_devices")
    physical_group = ForeignKeyField(Group, null=True, on_delete="SET NULL", backref="physical_devices")
    current_job = DeferredForeignKey("TestJob", null=True, on_delete="SET NULL")
    last_health_report_job = DeferredForeignKey("TestJob", null=True, on_delete="SET NULL")


class DeviceTag(BaseModel):
    device = ForeignKeyField(Device, backref="device_tags", on_delete="CASCADE")
    tag = ForeignKeyField(Tag, backref="device_tags", on_delete="CASCADE")

    class Meta:
        indexes = ((("device", "tag"), True),)


class HealthHistory(BaseModel):
    device = ForeignKeyField(Device, backref="health_history", on_delete="CASCADE")
    time = DateTimeField(default=utcnow)
    old_health = IntegerField()
    new_health = IntegerField()
    reason = TextField(default="")
    #: username, or lab.devices.HEALTH_ACTOR for the lab's own decisions
    actor = CharField(max_length=150, default="")


class TestJob(BaseModel):
    __test__ = False  # not a pytest class
    submitter = ForeignKeyField(User, backref="jobs", on_delete="CASCADE")
    description = CharField(max_length=200, default="")
    #: the text as submitted (comments kept); `definition` is the parsed, normalised form (JSON)
    original_definition = TextField()
    definition = TextField()
    requested_device_type = ForeignKeyField(DeviceType, backref="jobs", on_delete="CASCADE")
    #: pins a job (health checks) to one device
    requested_device = ForeignKeyField(Device, null=True, backref="pinned_jobs", on_delete="SET NULL")
    actual_device = ForeignKeyField(Device, null=True, backref="jobs", on_delete="SET NULL")
    worker = ForeignKeyField(Worker, null=True, backref="jobs", on_delete="SET NULL")
    priority = IntegerField(default=50)
    visibility = CharField(max_length=10, default="public")  # public | personal | group
    state = IntegerField(default=JobState.SUBMITTED, index=True)
    health = IntegerField(default=JobHealth.UNKNOWN)
    health_check = BooleanField(default=False)
    submit_time = DateTimeField(default=utcnow, index=True)
    scheduled_time = DateTimeField(null=True)
    start_time = DateTimeField(null=True)
    end_time = DateTimeField(null=True)
    #: seconds a job may wait in the queue (timeouts.queue); null: server default
    queue_timeout = IntegerField(null=True)
    failure_comment = TextField(default="")
    error_type = CharField(max_length=30, default="")
    error_msg = TextField(default="")
    #: SHA-256 of the per-job token handed to the worker with the job
    token_hash = CharField(max_length=64, default="")
    metadata = TextField(default="{}")
    #: the highest compatibility of the job's methods when it was submitted (a worker that offers
    #: less refuses it: dispatcher/actions/compatibility.py); LAVA's `pipeline_compatibility`
    pipeline_compatibility = IntegerField(default=1)
    #: MultiNode: the group's UUID (empty for a single-device job), LAVA's sub-id ("12.1") and role
    target_group = CharField(max_length=36, default="", index=True)
    sub_id = CharField(max_length=32, default="", index=True)
    role = CharField(max_length=100, default="")
    #: MultiNode: why the group ended this job (an essential role failed), as JSON {error_type, error_msg}
    group_failure = TextField(default="")


def job_by_id(job_id: int, lock: bool = False) -> TestJob | None:
    """The whole job row, or None; `lock`: inside a write transaction, locked until the commit.

    The hot read of the worker API (the job-token check reads it on every job call): its SQL is
    built once per kind of database (`db.prebuilt`) instead of by peewee on every call.
    """
    if isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id < 2**63:
        return None
    if lock:
        rows = rows_prebuilt(TestJob, "job_by_id locked", lambda i: for_update(TestJob.select().where(TestJob.id == i)),
                             job_id)
    else:
        rows = rows_prebuilt(TestJob, "job_by_id", lambda i: TestJob.select().where(TestJob.id == i), job_id)
    return rows[0] if rows else None


def device_by_id(device_id: int | None) -> Device | None:
    """The whole device row, or None (prebuilt SQL, as `job_by_id`: read on every job fetch and end)."""
    if not device_id:
        return None
    rows = rows_prebuilt(Device, "device_by_id", lambda i: Device.select().where(Device.id == i), device_id)
    return rows[0] if rows else None


class JobTag(BaseModel):
    job = ForeignKeyField(TestJob, backref="job_tags", on_delete="CASCADE")
    tag = ForeignKeyField(Tag, on_delete="CASCADE")

    class Meta:
        indexes = ((("job", "tag"), True),)


class JobViewingGroup(BaseModel):
    job = ForeignKeyField(TestJob, backref="viewing_groups", on_delete="CASCADE")
    group = ForeignKeyField(Group, on_delete="CASCADE")


class TestSuite(BaseModel):
    __test__ = False  # not a pytest class
    job = ForeignKeyField(TestJob, backref="suites", on_delete="CASCADE")
    name = CharField(max_length=200)

    class Meta:
        indexes = ((("job", "name"), True),)


class TestCase(BaseModel):
    __test__ = False  # not a pytest class
    suite = ForeignKeyField(TestSuite, backref="cases", on_delete="CASCADE")
    name = CharField(max_length=200)
    result = IntegerField()  # states.ResultCode
    measurement = FloatField(null=True)
    units = CharField(max_length=100, default="")
    test_set = CharField(max_length=200, default="")
    #: the result record as logged (YAML)
    metadata = TextField(default="")
    log_line = IntegerField(null=True)
    start_log_line = IntegerField(null=True)
    end_log_line = IntegerField(null=True)
    logged = DateTimeField(default=utcnow)


class PlaybookRun(BaseModel):
    """One ansible-playbook run started by the server (a schedule or an admin)."""

    name = CharField(max_length=100, index=True)
    playbook = CharField(max_length=300)
    trigger = CharField(max_length=20, default="schedule")  # schedule | api
    #: the minute a scheduled run was due (one run per schedule and minute)
    scheduled_for = DateTimeField(null=True)
    status = CharField(max_length=20, default="pending")  # pending running successful failed timeout canceled
    rc = IntegerField(null=True)
    created = DateTimeField(default=utcnow)
    started = DateTimeField(null=True)
    finished = DateTimeField(null=True)
    #: per-host counts from ansible-runner's stats (JSON): ok, changed, failures, dark (unreachable)
    stats = TextField(default="{}")
    #: failed tasks: host, task, message (JSON list)
    failures = TextField(default="[]")
    artifacts = CharField(max_length=500, default="")
    error = TextField(default="")

    class Meta:
        indexes = ((("name", "scheduled_for"), True),)


class Notification(BaseModel):
    """One message to one recipient about one event (service/notify/ owns the rows): a job that
    reached Running or Finished (its `notify` block), or a lab alert (a device Bad, a worker Offline)."""

    #: "job:12", "device:qemu01", "worker:w1"; with `event` and `key` it names the row once
    subject = CharField(max_length=250)
    job = ForeignKeyField(TestJob, null=True, backref="notifications", on_delete="CASCADE")
    device = ForeignKeyField(Device, null=True, backref="notifications", on_delete="CASCADE")
    #: running | finished (jobs); health:<history id> | offline:<since> (alerts)
    event = CharField(max_length=100)
    #: where the recipient came from: "recipients[0]", "callbacks[1]", "submitter", "admin:<address>"
    key = CharField(max_length=300)
    method = CharField(max_length=10)  # email | irc | callback
    #: address, handle@server or URL, as sent
    recipient = TextField(default="")
    #: what the sender needs beyond the recipient (JSON): verbosity, callback options
    detail = TextField(default="{}")
    state = CharField(max_length=10, default="pending", index=True)  # notify.rows.STATES
    attempts = IntegerField(default=0)
    last_error = TextField(default="")
    created = DateTimeField(default=utcnow)
    next_attempt = DateTimeField(null=True)
    #: when a sender took the row (a lease: a sender that died leaves it to the repair sweep)
    claimed = DateTimeField(null=True)
    sent = DateTimeField(null=True)

    class Meta:
        indexes = ((("subject", "event", "key"), True),)


class CallbackSecret(BaseModel):
    """A token secret its user chose (a CI system's key), sealed with the server's secret key so a
    notify callback naming the token's description can send it; other tokens stay hashed only."""

    token = ForeignKeyField(Token, unique=True, backref="callback_secret", on_delete="CASCADE")
    sealed = TextField()


class WebSession(BaseModel):
    """A browser's login (service/web/sessions.py): only the SHA-256 of the cookie's key is stored."""

    key_hash = CharField(max_length=64, unique=True)
    user = ForeignKeyField(User, backref="web_sessions", on_delete="CASCADE")
    #: the CSRF token every form of this session carries
    csrf = CharField(max_length=64)
    created = DateTimeField(default=utcnow)
    expires = DateTimeField(index=True)


class MetricTotal(BaseModel):
    """A running total behind a Prometheus counter or histogram (service/metrics/store.py): one
    row per metric and label set, only ever added to, shared by every server process."""

    name = CharField(max_length=100)
    #: the labels as canonical JSON ({"health": "Complete"}); "{}" for none
    labels = CharField(max_length=300, default="{}")
    value = FloatField(default=0)

    class Meta:
        indexes = ((("name", "labels"), True),)


class SchemaVersion(BaseModel):
    version = IntegerField(primary_key=True)
    name = CharField(max_length=100)
    applied = DateTimeField(default=utcnow)


MODELS = [
    User,
    Group,
    GroupMember,
    GroupPermission,
    Token,
    DeviceType,
    Tag,
    Worker,
    Device,
    DeviceTag,
    HealthHistory,
    TestJob,
    JobTag,
    JobViewingGroup,
    TestSuite,
    TestCase,
]
#: tables added by later migrations (m0002...)
MODELS_LATER = [PlaybookRun, Notification, CallbackSecret, WorkerFile, UserPermission, WebSession, MetricTotal]
