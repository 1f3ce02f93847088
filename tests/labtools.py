"""Test helpers: a real dutlab server (and queue consumer) on loopback, and backend selection.

Backends come from the environment so the same tests run on both:
  DUTLAB_TEST_DATABASE  postgresql://user:pw@127.0.0.1/postgres  (a fresh database per test is
                        created next to the one named, and dropped afterwards); default SQLite
  DUTLAB_TEST_QUEUE     redis://127.0.0.1:6379/15 (flushed per test); default SqliteHuey
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_urls(tmp: Path) -> tuple[str, str, callable]:
    """(database URL, queue URL, cleanup) for this test."""
    cleanups = []
    db = os.environ.get("DUTLAB_TEST_DATABASE", "")
    if db.startswith("postgres"):
        import psycopg2

        name = "dutlab_t_" + uuid.uuid4().hex[:12]
        admin = psycopg2.connect(db)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        base, _, _ = db.rpartition("/")
        database = f"{base}/{name}"

        def drop() -> None:
            cur = admin.cursor()
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.close()

        cleanups.append(drop)
    else:
        database = f"sqlite:///{tmp / 'data' / 'dutlab.sqlite3'}"
    queue = os.environ.get("DUTLAB_TEST_QUEUE", "")
    if queue.startswith("redis"):
        import redis

        redis.Redis.from_url(queue).flushdb()
    else:
        queue = f"sqlite:///{tmp / 'data' / 'queue.sqlite3'}"

    def cleanup() -> None:
        for fn in cleanups:
            fn()

    return database, queue, cleanup


def write_config(tmp: Path, database: str, queue: str, port: int, **extra) -> Path:
    data = {
        "data_dir": str(tmp / "data"),
        "database": database,
        "queue": queue,
        "listen": f"127.0.0.1:{port}",
        "template_dirs": [str(tmp / "etc" / "device-types")],
        "health_checks_dir": str(tmp / "etc" / "health-checks"),
        "secret_key_file": str(tmp / "etc" / "secret_key"),
        # generous: a loaded 2-core machine must not turn a slow worker into an offline one
        "worker_heartbeat_timeout": 30,
        "worker_offline_grace": 120,
        "longpoll_timeout": 15,
        "scheduler_sweep": 2,
    }
    data.update(extra)
    path = tmp / "server.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(method: str, url: str, body=None, token: str | None = None, auth: str | None = None,
         headers: dict | None = None, timeout: float = 30) -> Response:
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        else:
            data = body.encode() if isinstance(body, str) else body
    if token:
        hdrs["Authorization"] = f"Token {token}"
    if auth:
        hdrs["Authorization"] = auth
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), dict(e.headers))


@dataclass
class LabServer:
    tmp: Path
    config: Path
    port: int
    procs: dict = field(default_factory=dict)
    admin_token: str = ""
    logs: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        env = dict(os.environ)
        env["DUTLAB_CONFIG"] = str(self.config)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "dutlab-server"), "--config", str(self.config), *args],
                              capture_output=True, text=True, env=self.env(), input=input, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"dutlab-server {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def manage(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return self.cli("manage", *args, check=check, input=input)

    def _spawn(self, name: str, *args: str) -> None:
        self.logs = self.tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [str(BIN / "dutlab-server"), "--config", str(self.config), *args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
        )

    def start(self, consumer: bool = True) -> None:
        self._spawn("serve", "serve")
        if consumer:
            self._spawn("consumer", "consumer")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs["serve"]
            if proc.poll() is not None:
                raise AssertionError(f"dutlab-server serve exited {proc.returncode}:\n{self.log('serve')}")
            try:
                if http("GET", self.url + "/api/v1/system/version", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready on {self.url}:\n{self.log('serve')}")

    def log(self, name: str) -> str:
        try:
            return (self.logs / f"{name}.log").read_text()[-5000:]
        except (OSError, TypeError):
            return ""

    def stop(self, name: str | None = None, sig: int = signal.SIGTERM) -> None:
        for key in [name] if name else list(self.procs):
            proc = self.procs.pop(key, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def restart(self, name: str = "serve") -> None:
        self.stop(name)
        if name == "serve":
            self._spawn("serve", "serve")
            self.wait_ready()
        else:
            self._spawn(name, name)

    def add_worker(self, name: str) -> str:
        """Register a worker; return its token."""
        return self.manage("workers", "add", name).stdout.strip().split()[-1]

    def start_worker(self, name: str = "worker1", token: str | None = None, *extra: str) -> Path:
        """Register (when no token is given) and start a real dutlab-worker; return its work dir."""
        if token is None:
            token = self.add_worker(name)
        token_file = self.tmp / f"{name}.token"
        token_file.write_text(token + "\n")
        work = self.tmp / f"worker-{name}"
        self.logs = self.tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        out = open(self.logs / f"worker-{name}.log", "ab")
        self.procs[f"worker-{name}"] = subprocess.Popen(
            [str(BIN / "dutlab-worker"), "--url", self.url, "--name", name, "--token-file", str(token_file),
             "--work-dir", str(work), "--poll-wait", "5", "--cancel-grace", "5", *extra],
            stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
        )
        return work

    def add_qemu_device(self, hostname: str = "qemu01", worker: str = "worker1", dictionary: str | None = None,
                        device_type: str = "qemu", health_checks: bool = False) -> None:
        if self.api("GET", f"/api/v1/device-types/{device_type}").status == 404:
            flags = [] if health_checks else ["--disable-health-checks"]
            self.manage("device-types", "add", device_type, *flags)
        path = self.tmp / f"{hostname}.jinja2"
        path.write_text(dictionary or "{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n")
        self.manage("devices", "add", hostname, "--device-type", device_type, "--worker", worker,
                    "--dictionary", str(path))

    def api(self, method: str, path: str, body=None, token: str | None = "admin", **kw) -> Response:
        if token == "admin":
            token = self.admin_token
        return http(method, self.url + path, body, token=token, **kw)

    def add_user(self, name: str, *extra: str) -> str:
        """Create a user and return an API token for it."""
        self.manage("users", "add", name, "--passwd", "pw-" + name, *extra)
        out = self.manage("tokens", "add", "--user", name).stdout
        return out.strip().split()[-1]

    def wait_health(self, hostname: str, wanted: set[str], timeout: float = 240) -> dict:
        """The device once its health is one of `wanted` (e.g. after its health check)."""
        deadline = time.monotonic() + timeout
        device = {}
        while time.monotonic() < deadline:
            device = self.api("GET", f"/api/v1/devices/{hostname}").json()
            if device["health"] in wanted:
                return device
            time.sleep(0.5)
        workers = "\n".join(self.log(name) for name in self.procs if name.startswith("worker-"))
        raise AssertionError(f"{hostname} still {device.get('health')} after {timeout}s:\n{self.log('serve')}\n"
                             f"{workers}")

    def wait_job(self, job_id: int, states=("Finished",), timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        job = {}
        while time.monotonic() < deadline:
            job = self.api("GET", f"/api/v1/jobs/{job_id}").json()
            if job.get("state") in states:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} still {job.get('state')} after {timeout}s: {job}\n"
                             f"{self.log('serve')}\n{self.log('consumer')}")


def bootstrap(config: Path) -> str:
    """Migrate and create the admin user in process; return its token.

    The CLI verbs are tested on their own (test_manage_cli.py); here they would only cost three
    interpreter start-ups per test.
    """
    from dutlab.service import auth, migrations
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database
    from dutlab.service.models import User

    db = open_database(load(str(config)).database)
    try:
        migrations.migrate()
        admin = User.create(username="admin", is_superuser=True, password_hash=auth.hash_password("admin-pw"))
        return auth.create_token(admin, "tests")[1]
    finally:
        db.close()
        database.initialize(None)


def start_lab(tmp: Path, *, consumer: bool = True, **settings) -> tuple[LabServer, callable]:
    database, queue, cleanup = backend_urls(tmp)
    port = free_port()
    config = write_config(tmp, database, queue, port, **settings)
    lab = LabServer(tmp=tmp, config=config, port=port)
    lab.admin_token = bootstrap(config)
    lab.start(consumer=consumer)

    def stop() -> None:
        lab.stop()
        cleanup()

    return lab, stop
