"""Server settings: /etc/dutlab/server.yaml (or --config / DUTLAB_CONFIG).

Every key has a default, so an empty file is a working single-machine lab. Unknown keys and bad
values are refused at start-up naming the key: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dutlab.dispatcher.settings_file import SettingsError, known_values, read_mapping

DEFAULT_PATH = "/etc/dutlab/server.yaml"


ConfigError = SettingsError  # one error type for every dutlab settings file


@dataclass
class EmailSettings:
    """How the server sends mail (notify recipients, lab alerts): SMTP, or a sendmail command."""

    host: str = ""  # empty and no sendmail: no mail is sent, the notification rows say why
    port: int = 25
    sender: str = "dutlab@localhost"
    username: str = ""
    password: str = ""
    starttls: bool = False
    #: SMTP over TLS from the first byte (port 465), instead of STARTTLS
    ssl: bool = False
    #: a command that reads the whole message on stdin (e.g. "/usr/sbin/sendmail -t -i"); wins over host
    sendmail: str = ""
    timeout: int = 30

    def __post_init__(self) -> None:
        if self.starttls and self.ssl:
            raise ConfigError("email.ssl: use ssl (port 465) or starttls (port 25/587), not both")


@dataclass
class LdapSettings:
    """LDAP logins (service/ldapauth.py, docs/web-ui.md): off while `uri` is empty."""

    uri: str = ""  # ldap://host:389 or ldaps://host:636
    starttls: bool = False
    #: CA certificates that sign the server's (empty: the system's)
    ca_file: str = ""
    #: the search account (empty: an anonymous search)
    bind_dn: str = ""
    bind_password: str = ""
    user_search_base: str = ""
    #: {username} is replaced by the login name, escaped
    user_filter: str = "(uid={username})"
    #: user fields from LDAP attributes: email, full_name
    attributes: dict = field(default_factory=lambda: {"email": "mail", "full_name": "cn"})
    #: LDAP group DN -> dutlab group: the user joins (or leaves) the group at each login, so the
    #: dutlab group's permissions (submit, cancel_resubmit, admin) follow the LDAP group
    groups: dict = field(default_factory=dict)
    #: what makes the user a member, checked on each mapped group's entry; {user_dn} is replaced by
    #: the user's DN, escaped (groupOfNames: member; groupOfUniqueNames: uniqueMember)
    group_filter: str = "(member={user_dn})"
    timeout: int = 5

    def __post_init__(self) -> None:
        if self.uri and not self.uri.startswith(("ldap://", "ldaps://")):
            raise ConfigError(f"ldap.uri: use ldap://host:port or ldaps://host:port, not {self.uri!r}")
        if self.uri and not self.user_search_base:
            raise ConfigError("ldap.user_search_base: required when ldap.uri is set")
        if self.starttls and self.uri.startswith("ldaps://"):
            raise ConfigError("ldap.starttls: ldaps:// is TLS already; use ldap:// with starttls, or ldaps://")
        unknown = set(self.attributes) - {"email", "full_name"}
        if unknown:
            raise ConfigError(f"ldap.attributes: unknown field '{sorted(unknown)[0]}'; known: email, full_name")


@dataclass
class PlaybookSchedule:
    """A playbook the server runs on a cron schedule (backups, health checks)."""

    name: str = ""
    playbook: str = ""  # relative to playbooks_dir, or absolute
    cron: str = ""  # "minute hour day-of-month month day-of-week"
    inventory: str = ""
    limit: str = ""
    extravars: dict = field(default_factory=dict)
    timeout: int = 3600


@dataclass
class Settings:
    data_dir: str = "/var/lib/dutlab"
    #: peewee db_url: sqlite:////path (WAL mode) or postgresql://user:pw@host/db
    database: str = ""
    #: sqlite:////path (SqliteHuey) or redis://host:port/db
    queue: str = ""
    output_dir: str = ""
    #: admin template folders, searched before the shipped device-types/
    template_dirs: list[str] = field(default_factory=lambda: ["/etc/dutlab/device-types"])
    #: admin health-check folder (health-checks/<template>.yaml), before the shipped ones
    health_checks_dir: str = "/etc/dutlab/health-checks"
    secret_key_file: str = "/etc/dutlab/secret_key"
    listen: str = "127.0.0.1:8000"
    #: URL the server is reached at (links in notifications, lavacli --url)
    base_url: str = ""
    threads: int = 32
    #: `serve` processes sharing the listening socket (more than 1: PostgreSQL + Redis only)
    processes: int = 1
    #: the listen backlog: connections the kernel queues before `serve` accepts them
    listen_backlog: int = 1024
    #: largest request body (bytes) from an anonymous caller, a user (token), a worker or job
    max_body_anonymous: int = 256 * 1024
    max_body_user: int = 4 * 1024 * 1024
    max_body_worker: int = 16 * 1024 * 1024
    worker_heartbeat_timeout: int = 30
    #: a job of an Offline worker ends Incomplete (Infrastructure) once its own timeouts.job plus
    #: this many seconds (the run's finalize and last upload) have passed since it started
    worker_offline_grace: int = 120
    longpoll_timeout: float = 20.0
    #: how often a held long-poll re-reads the database anyway (a safety net: wake-ups arrive by
    #: notification, service/wakeups.py)
    longpoll_interval: float = 5.0
    #: false: long-polls ignore notifications and only re-read every longpoll_interval (the old way)
    longpoll_notify: bool = True
    #: repair sweep period (seconds); events trigger passes immediately
    scheduler_sweep: int = 5
    #: Submitted jobs older than this are canceled (0 = never) unless timeouts.queue says otherwise
    queue_timeout_hours: int = 0
    max_log_batch: int = 20000
    #: any active user may submit (LAVA's default); false: only holders of the "submit" permission
    open_submission: bool = True
    #: failed password logins allowed per user name and per client address within login_window
    #: seconds; more are answered 429 with Retry-After (0: no limit)
    login_failures_per_user: int = 5
    login_failures_per_address: int = 30
    login_window: int = 300
    #: how long a browser login lasts, in hours
    web_session_hours: int = 336
    ldap: LdapSettings = field(default_factory=LdapSettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    #: lab alerts (a device Bad, a worker Offline) go to the device owners and these: addresses or usernames
    admins: list[str] = field(default_factory=list)
    #: at most one lab alert per device (or worker) within this many seconds
    alert_interval: int = 3600
    #: hosts notify callbacks may reach (shell wildcards, "*.example.org"); empty: callbacks are refused
    callback_allowed_hosts: list[str] = field(default_factory=list)
    callback_timeout: int = 5
    #: tries per notification, and the delay before the first retry (doubling after each)
    notification_attempts: int = 5
    notification_backoff: int = 30
    #: where playbooks named by schedules are found (default: the checkout's playbooks/)
    playbooks_dir: str = ""
    playbook_schedules: list[PlaybookSchedule] = field(default_factory=list)

    def __post_init__(self) -> None:
        data = Path(self.data_dir)
        if not self.database:
            self.database = f"sqlite:///{data / 'dutlab.sqlite3'}"
        if not self.queue:
            self.queue = f"sqlite:///{data / 'queue.sqlite3'}"
        if not self.output_dir:
            self.output_dir = str(data / "jobs")
        if self.processes < 1:
            raise ConfigError(f"processes: expected 1 or more server processes, got {self.processes}")

    def processes_problem(self) -> str:
        """Why `processes` cannot be served on these backends ("" when it can)."""
        if self.processes > 1 and not (self.database.startswith(("postgresql:", "postgres:"))
                                       and self.queue.startswith("redis:")):
            # SQLite's wake-up channel reaches one server process, and its one writer lock would
            # only make more processes queue for it
            return (f"processes: {self.processes} server processes need database: postgresql://... and "
                    "queue: redis://... (on SQLite, serve runs as one process: set processes: 1)")
        return ""

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    def secret_key(self) -> bytes:
        """Read the secret key, generating it once (mode 0600) when missing."""
        path = Path(self.secret_key_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        return path.read_text().strip().encode()


def _check(cls: type, data: Any, prefix: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'the file'}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in known_values(cls, data, prefix).items():
        name = f"{prefix}{key}"
        default = known[key].default_factory() if callable(known[key].default_factory) else known[key].default
        if isinstance(default, (EmailSettings, LdapSettings)):
            out[key] = type(default)(**_check(type(default), value, name + "."))
            continue
        if key == "playbook_schedules":
            out[key] = _schedules(value, name)
            continue
        out[key] = _coerce(name, default, value)
    return out


def _schedules(value: Any, name: str) -> list[PlaybookSchedule]:
    from huey import crontab

    if not isinstance(value, list):
        raise ConfigError(f"{name}: expected a list of {{name, playbook, cron}} mappings")
    out = []
    for i, item in enumerate(value):
        path = f"{name}[{i}]"
        sched = PlaybookSchedule(**_check(PlaybookSchedule, item, path + "."))
        for key in ("name", "playbook", "cron"):
            if not getattr(sched, key):
                raise ConfigError(f"{path}.{key}: required")
        try:
            crontab(*cron_fields(sched.cron))
        except ValueError as exc:
            raise ConfigError(f"{path}.cron: {exc}") from None
        out.append(sched)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{name}: schedule names must be unique")
    return out


def cron_fields(text: str) -> list[str]:
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"'{text}' needs five fields: minute hour day-of-month month day-of-week")
    return parts


def _coerce(name: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{name}: expected a number >= 0, got {value!r}")
        return type(default)(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if name == "database" and value and not value.startswith(("sqlite:", "postgresql:", "postgres:")):
        raise ConfigError(f"{name}: use sqlite:////path or postgresql://user:password@host/dbname")
    if name == "queue" and value and not value.startswith(("sqlite:", "redis:", "memory:")):
        raise ConfigError(f"{name}: use sqlite:////path or redis://host:port/db")
    if name == "listen" and not value.rpartition(":")[2].isdigit():
        raise ConfigError(f"{name}: expected host:port, got {value!r}")
    return value


def from_dict(data: dict[str, Any] | None) -> Settings:
    return Settings(**_check(Settings, data, ""))


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get("DUTLAB_CONFIG") or DEFAULT_PATH


def load(path: str | None = None) -> Settings:
    """Load settings; a missing default file means all defaults, a missing explicit file is an error."""
    path = config_path(path)
    p = Path(path)
    if not p.exists():
        if path == DEFAULT_PATH:
            return Settings()
        raise ConfigError(f"{path}: configuration file not found")
    data = read_mapping(p)
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
