"""A dutlab server on loopback: its config, its admin user, `serve` + `consumer`, the REST API and
the admin CLI. Every process it starts is stopped by PID (labkit.procs)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .backends import sqlite_urls
from .client import Client, Response, http
from .procs import BIN, Procs, free_port


class LabError(AssertionError):
    """The lab did not do what it was asked (a command failed, a state never came); the message has the
    evidence: the command's output, the last lines of the server's log."""


def write_config(root: Path, database: str, queue: str, port: int, **settings: Any) -> Path:
    """root/server.yaml for a server on 127.0.0.1:`port` that keeps everything below `root`."""
    # the data dir must exist before `migrate` when the database is not SQLite: the SQLite task
    # queue inside it is not created otherwise ("unable to open database file")
    (root / "data").mkdir(parents=True, exist_ok=True)
    data = {
        "data_dir": str(root / "data"),
        "database": database,
        "queue": queue,
        "listen": f"127.0.0.1:{port}",
        "base_url": f"http://127.0.0.1:{port}",
        "template_dirs": [str(root / "etc" / "device-types")],
        "health_checks_dir": str(root / "etc" / "health-checks"),
        "secret_key_file": str(root / "etc" / "secret_key"),
    }
    data.update(settings)
    path = root / "server.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def bootstrap(config: Path, password: str = "admin-pw", description: str = "tests") -> str:
    """Migrate and create the superuser `admin` in this process; return an API token for it.

    The CLI verbs are tested on their own (test_manage_cli.py); here they would only cost three
    interpreter start-ups per lab.
    """
    from dutlab.service import auth, filemodes, migrations
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database
    from dutlab.service.models import User

    settings = load(str(config))
    filemodes.prepare(settings)  # the database file private, as `dutlab-server migrate` makes it
    db = open_database(settings.database)
    try:
        migrations.migrate()
        admin = User.create(username="admin", is_superuser=True, password_hash=auth.hash_password(password))
        return auth.create_token(admin, description)[1]
    finally:
        db.close()
        database.initialize(None)


@dataclass
class LabServer:
    """`dutlab-server serve` (+ `consumer`) for the config in `root`."""

    root: Path
    config: Path
    port: int
    admin_token: str = ""
    #: --log-level of serve and consumer ("" = the server's default); benchmarks use WARNING
    log_level: str = ""
    #: where each process's output goes (<name>.log); default root/logs
    logs: Path | None = None
    #: more `serve` arguments (e.g. "--processes", "2")
    serve_args: tuple[str, ...] = ()
    procs: Procs = field(default_factory=Procs)

    @classmethod
    def create(cls, root: Path, *, database: str = "", queue: str = "", port: int = 0,
               settings: dict | None = None, **fields: Any) -> LabServer:
        """A lab in `root` (SQLite unless `database`/`queue` name others), not started yet."""
        root.mkdir(parents=True, exist_ok=True)
        sqlite_db, sqlite_queue = sqlite_urls(root)
        port = port or free_port()
        config = write_config(root, database or sqlite_db, queue or sqlite_queue, port, **(settings or {}))
        return cls(root=root, config=config, port=port, **fields)

    @property
    def tmp(self) -> Path:
        """`root`, by the name the tests gave it."""
        return self.root

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.logs or self.root / "logs"

    def env(self) -> dict:
        env = dict(os.environ)
        env["DUTLAB_CONFIG"] = str(self.config)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- the admin CLI ---------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "dutlab-server"), "--config", str(self.config), *args],
                              capture_output=True, text=True, env=self.env(), input=input, timeout=120)
        if check and proc.returncode != 0:
            raise LabError(f"dutlab-server {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
        return proc

    def manage(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return self.cli("manage", *args, check=check, input=input)

    def bootstrap(self, password: str = "admin-pw", description: str = "tests") -> str:
        """Migrate, create the superuser admin; its token becomes `admin_token`."""
        self.admin_token = bootstrap(self.config, password, description)
        return self.admin_token

    # -- processes -------------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None
              ) -> subprocess.Popen:
        """Start any process that belongs to this lab (stopped with it); output in log_dir/<name>.log."""
        return self.procs.spawn(name, argv, self.log_dir / f"{name}.log", env=env or self.env(), cwd=cwd)

    def _server(self, what: str) -> None:
        level = ["--log-level", self.log_level] if self.log_level else []
        extra = self.serve_args if what == "serve" else ()
        self.spawn(what, [str(BIN / "dutlab-server"), "--config", str(self.config), *level, what, *extra])

    def start(self, consumer: bool = True) -> LabServer:
        self._server("serve")
        if consumer:
            self._server("consumer")
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.popen("serve")
            if proc.poll() is not None:
                raise LabError(f"dutlab-server serve exited {proc.returncode}:\n{self.log('serve')}")
            try:
                if http("GET", self.url + "/api/v1/system/version", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise LabError(f"server not ready on {self.url}:\n{self.log('serve')}")

    def pid(self, name: str) -> int:
        return self.procs.pid(name)

    def log(self, name: str) -> str:
        """The end of process `name`'s output."""
        try:
            return (self.log_dir / f"{name}.log").read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, name: str | None = None, sig: int = signal.SIGTERM) -> None:
        """Stop process `name`, or all of them (the last started first)."""
        if name is None:
            self.procs.stop_all()
        else:
            self.procs.stop(name, sig)

    def restart(self, name: str = "serve") -> None:
        """Stop and start `serve` or `consumer` again."""
        self.stop(name)
        self._server(name)
        if name == "serve":
            self.wait_ready()

    # -- the API ---------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, token: str | None = "admin", **kw: Any) -> Response:
        """One request as admin (token="admin"), with another token, or none (token=None)."""
        if token == "admin":
            token = self.admin_token
        return http(method, self.url + path, body, token=token, **kw)

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a request as admin that must succeed."""
        r = self.api(method, path, body)
        if r.status >= 300:
            raise LabError(f"{method} {path}: HTTP {r.status}: {r.text[:500]}")
        return r.json() if r.body else None

    def client(self) -> Client:
        """A kept-alive connection as admin."""
        return Client(self.url, f"Token {self.admin_token}")

    def add_user(self, name: str, *extra: str) -> str:
        """Create a user (`manage users add` flags in `extra`) and return an API token for it."""
        self.manage("users", "add", name, "--passwd", "pw-" + name, *extra)
        out = self.manage("tokens", "add", "--user", name).stdout
        return out.strip().split()[-1]

    def add_device_type(self, name: str = "qemu", **fields: Any) -> dict:
        return self.json("POST", "/api/v1/device-types", {"name": name, **fields})

    def add_device(self, hostname: str, device_type: str, worker: str, dictionary: str, **fields: Any) -> dict:
        """Any device (QEMU or a board): `dictionary` is the Jinja2 device dictionary's text."""
        return self.json("POST", "/api/v1/devices", {"hostname": hostname, "device_type": device_type,
                                                     "worker": worker, "dictionary": dictionary, **fields})

    def submit(self, definition: str) -> int:
        return self.json("POST", "/api/v1/jobs", {"definition": definition})["job_ids"][0]

    def job(self, job_id: int) -> dict:
        return self.json("GET", f"/api/v1/jobs/{job_id}")

    def wait_job(self, job_id: int, states: tuple[str, ...] = ("Finished",), timeout: float = 180,
                 interval: float = 0.2) -> dict:
        """The job once its state is one of `states`."""
        deadline = time.monotonic() + timeout
        job: dict = {}
        client = self.client()
        try:
            while time.monotonic() < deadline:
                job = client.json("GET", f"/api/v1/jobs/{job_id}")
                if job.get("state") in states:
                    return job
                time.sleep(interval)
        finally:
            client.close()
        raise LabError(f"job {job_id} still {job.get('state')} after {timeout:.0f}s: {job}\n"
                       f"{self.log('serve')}\n{self.log('consumer')}")
