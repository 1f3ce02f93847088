"""Shared pieces of the benchmarks: a lab on loopback, HTTP clients, statistics, RSS, profiles.

Every process a benchmark starts goes through `Procs`, which stops it by PID (its own process
group) in a `finally`; nothing here ever kills by name.
"""

from __future__ import annotations

import cProfile
import http.client
import io
import json
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSETS = Path(os.environ.get("DUTLAB_ASSETS", "/var/cache/dutlab/assets"))
PG_ADMIN_URL = os.environ.get("DUTLAB_BENCH_PG", "postgresql://dutlab_test:dutlab_test@127.0.0.1:5432/postgres")


# -- results ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, with its target when it has one."""

    name: str
    value: float | None
    unit: str = ""
    target: str = ""  # e.g. "<= 1.0"
    ok: bool | None = None  # None: no target (context figure)
    note: str = ""

    def status(self) -> str:
        if self.value is None:
            return "NOT MEASURED"
        if self.ok is None:
            return ""
        return "PASS" if self.ok else "MISS"


@dataclass
class Section:
    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # pre-rendered markdown tables
    profiles: list[str] = field(default_factory=list)  # "title\n<top frames>"
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers for report.json
    seconds: float = 0.0
    error: str = ""

    def add(self, name: str, value: float | None, unit: str = "", target: str | None = None,
            note: str = "") -> Figure:
        """Add a figure; `target` like '<= 0.1' or '>= 600' sets PASS/MISS."""
        ok = None
        if target and value is not None:
            op, _, bound = target.partition(" ")
            ok = value <= float(bound) if op == "<=" else value >= float(bound)
        fig = Figure(name, value, unit, target or "", ok, note)
        self.figures.append(fig)
        print(f"  {name}: {fmt(value)} {unit}" + (f"  (target {target} {unit}: {fig.status()})" if target else "")
              + (f"  [{note}]" if note else ""), flush=True)
        return fig

    def not_measured(self, name: str, why: str, target: str = "", unit: str = "") -> None:
        self.figures.append(Figure(name, None, unit, target, None, f"not measured: {why}"))
        print(f"  {name}: not measured: {why}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 1000:
        return f"{value:,.0f}"
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        raise ValueError("no values")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "p50": pct(values, 50), "p90": pct(values, 90),
            "p99": pct(values, 99), "max": max(values), "mean": statistics.fmean(values)}


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(fmt(c) if isinstance(c, float) else str(c) for c in row) + " |")
    return "\n".join(out)


# -- processes --------------------------------------------------------------------------------


class Procs:
    """Processes this run started; each in its own session, stopped by PID (its group)."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str], log: Path, env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left in its group (a dutlab-run, a QEMU) goes too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


# -- HTTP -------------------------------------------------------------------------------------


class HttpError(RuntimeError):
    def __init__(self, status: int, body: bytes, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class Client:
    """A keep-alive HTTP/1.1 client (one connection; one per thread)."""

    def __init__(self, url: str, auth: str = "") -> None:
        host, _, port = url.split("://", 1)[1].rstrip("/").partition(":")
        self.host, self.port = host, int(port or 80)
        self.auth = auth
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                auth: str | None = None, expect: tuple[int, ...] = (200, 201)) -> tuple[int, dict, bytes]:
        headers = {"Connection": "keep-alive"}
        auth = self.auth if auth is None else auth
        if auth:
            headers["Authorization"] = auth
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            headers["Content-Type"] = ctype
        for attempt in range(2):
            conn = self._connect()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        if resp.will_close:
            self.close()
        if expect and resp.status not in expect:
            raise HttpError(resp.status, raw, f"{method} {path}")
        return resp.status, dict(resp.getheaders()), raw

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        _, _, raw = self.request(method, path, body, **kw)
        return json.loads(raw) if raw else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- the lab ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_available() -> tuple[bool, str]:
    try:
        import psycopg2
    except ImportError:
        return False, "psycopg2 is not installed (pip install dutlab[postgres])"
    try:
        psycopg2.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return False, f"cannot connect to {PG_ADMIN_URL.rpartition('@')[2]}: {str(exc).strip()}"
    return True, ""


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); yields its URL."""
    import psycopg2

    name = "dutlab_bench_" + uuid.uuid4().hex[:10]
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rpartition("/")[0] + "/" + name
    finally:
        cur = admin.cursor()
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


class Lab:
    """`dutlab-server serve` + `consumer` (+ workers) on loopback, set up over REST."""

    def __init__(self, root: Path, procs: Procs, database: str = "", queue: str = "", **settings: Any) -> None:
        self.root = root
        self.procs = procs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tag = uuid.uuid4().hex[:6]
        # the data dir must exist before `migrate` when the database is not SQLite: the SQLite task queue
        # inside it is not created otherwise ("unable to open database file")
        (root / "data").mkdir(parents=True, exist_ok=True)
        data = {
            "data_dir": str(root / "data"),
            "database": database or f"sqlite:///{root / 'data' / 'dutlab.sqlite3'}",
            "queue": queue or f"sqlite:///{root / 'data' / 'queue.sqlite3'}",
            "listen": f"127.0.0.1:{self.port}",
            "template_dirs": [str(root / "etc" / "device-types")],
            "health_checks_dir": str(root / "etc" / "health-checks"),
            "secret_key_file": str(root / "etc" / "secret_key"),
            "base_url": self.url,
        }
        data.update(settings)
        self.config = root / "server.yaml"
        self.config.write_text(yaml.safe_dump(data))
        self.token = ""
        self.workers: dict[str, str] = {}  # name -> token
        self.names: list[str] = []

    # setup
    def cli(self, *args: str) -> str:
        proc = subprocess.run([str(BIN / "dutlab-server"), "--config", str(self.config), "--log-level", "WARNING",
                               *args], capture_output=True, text=True, timeout=120)
        if proc.returncode:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["?"]
            raise RuntimeError(f"dutlab-server {' '.join(args)} failed: {last[0]}\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def start(self, consumer: bool = True) -> Lab:
        self.cli("migrate")
        self.cli("manage", "users", "add", "admin", "--passwd", "admin-pw", "--superuser")
        self.token = self.cli("manage", "tokens", "add", "--user", "admin", "--description", "bench").split()[-1]
        self._spawn("serve")
        if consumer:
            self._spawn("consumer")
        self.wait_ready()
        return self

    def _spawn(self, what: str) -> None:
        name = f"{what}-{self.tag}"
        self.names.append(name)
        self.procs.spawn(name, [str(BIN / "dutlab-server"), "--config", str(self.config), "--log-level",
                                "WARNING", what], self.root / f"{what}.log")

    def pid(self, what: str) -> int:
        return self.procs.pid(f"{what}-{self.tag}")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        client = Client(self.url)
        while time.monotonic() < deadline:
            if self.procs.procs[f"serve-{self.tag}"].poll() is not None:
                raise RuntimeError(f"dutlab-server serve exited:\n{self.log('serve')}")
            try:
                client.request("GET", "/api/v1/system/version")
                return
            except (OSError, HttpError):
                client.close()
                time.sleep(0.05)
        raise RuntimeError(f"server not ready on {self.url}:\n{self.log('serve')}")

    def log(self, what: str) -> str:
        try:
            return (self.root / f"{what}.log").read_text()[-4000:]
        except OSError:
            return ""

    def client(self) -> Client:
        return Client(self.url, f"Token {self.token}")

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        client = self.client()
        try:
            return client.json(method, path, body, **kw)
        finally:
            client.close()

    def add_device_type(self, name: str = "qemu", **fields: Any) -> None:
        self.api("POST", "/api/v1/device-types", {"name": name, **fields})

    def add_worker(self, name: str) -> str:
        token = self.api("POST", "/api/v1/workers", {"hostname": name})["token"]
        self.workers[name] = token
        return token

    def add_device(self, hostname: str, device_type: str, worker: str, dictionary: str, **fields: Any) -> None:
        self.api("POST", "/api/v1/devices", {"hostname": hostname, "device_type": device_type, "worker": worker,
                                             "dictionary": dictionary, **fields})

    def start_worker(self, name: str, *extra: str) -> subprocess.Popen:
        """The real dutlab-worker for `name` (documented CLI, docs/worker.md)."""
        token_file = self.root / f"{name}.token"
        token_file.write_text(self.workers[name] + "\n")
        os.chmod(token_file, 0o600)
        key = f"worker-{name}-{self.tag}"
        self.names.append(key)
        return self.procs.spawn(key, [str(BIN / "dutlab-worker"), "--url", self.url, "--name", name,
                                      "--token-file", str(token_file), "--work-dir", str(self.root / f"w-{name}"),
                                      "--level", "WARNING", *extra], self.root / f"worker-{name}.log")

    def stop_worker(self, name: str) -> None:
        key = f"worker-{name}-{self.tag}"
        self.procs.stop(key)
        if key in self.names:
            self.names.remove(key)

    def wait_worker_online(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.api("GET", f"/api/v1/workers/{name}")["state"] != "Online":
            if time.monotonic() > deadline:
                raise RuntimeError(f"dutlab-worker {name} did not come online:\n{self.log('worker-' + name)}")
            time.sleep(0.05)

    def worker_pid(self, name: str) -> int:
        return self.procs.pid(f"worker-{name}-{self.tag}")

    def submit(self, definition: str) -> int:
        return self.api("POST", "/api/v1/jobs", {"definition": definition})["job_ids"][0]

    def job(self, job_id: int) -> dict:
        return self.api("GET", f"/api/v1/jobs/{job_id}")

    def wait_job(self, job_id: int, states: tuple[str, ...] = ("Finished",), timeout: float = 300,
                 interval: float = 0.05) -> dict:
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while time.monotonic() < deadline:
                job = client.json("GET", f"/api/v1/jobs/{job_id}")
                if job["state"] in states:
                    return job
                time.sleep(interval)
        finally:
            client.close()
        raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:.0f} s")

    def stop(self) -> None:
        for name in reversed(self.names):
            self.procs.stop(name)
        self.names.clear()


def worker_available() -> tuple[bool, str]:
    """Whether the real dutlab-worker and dutlab-run are installed (they may still be in progress)."""
    import importlib.util

    for script, module in (("dutlab-worker", "dutlab.dispatcher.worker"), ("dutlab-run", "dutlab.dispatcher.run")):
        if not (BIN / script).exists() or importlib.util.find_spec(module) is None:
            return False, f"{script} is not installed in {BIN}"
    return True, ""


def qemu_available(arch: str = "amd64") -> tuple[bool, str]:
    manifest = ASSETS / arch / "manifest.json"
    if not manifest.exists():
        return False, f"no QEMU assets in {ASSETS / arch} (run scripts/build-qemu-assets.sh)"
    binary = json.loads(manifest.read_text())["qemu_binary"]
    if shutil.which(binary) is None:
        return False, f"{binary} is not installed"
    return True, ""


# -- jobs -------------------------------------------------------------------------------------

QEMU_DICTIONARY = "{% extends 'qemu.jinja2' %}\n{% set memory = 512 %}\n"


def standard_job_text() -> tuple[str, str]:
    """(definition, where from): examples/jobs/qemu-smoke.yaml, else the shipped qemu health check."""
    smoke = REPO / "examples" / "jobs" / "qemu-smoke.yaml"
    if smoke.exists():
        text, origin = smoke.read_text(), "examples/jobs/qemu-smoke.yaml"
    else:
        text = (REPO / "device-types" / "health-checks" / "qemu.yaml").read_text()
        text = text.replace("job_name: qemu health check", "job_name: bench qemu job")
        text = text.replace("priority: high", "priority: medium")
        origin = "device-types/health-checks/qemu.yaml (examples/jobs/qemu-smoke.yaml is not there yet)"
    return text.replace("file:///var/cache/dutlab/assets", f"file://{ASSETS}"), origin


def noop_job(name: str = "bench noop", tags: list[str] | None = None, priority: str = "medium",
             device_type: str = "qemu") -> str:
    """A job that runs `true` on the worker (a `command` action; the device needs NOOP_DICTIONARY)."""
    job = {
        "device_type": device_type,
        "job_name": name,
        "priority": priority,
        "visibility": "public",
        "timeouts": {"job": {"minutes": 5}, "action": {"minutes": 1}},
        "actions": [{"command": {"name": "noop"}}],
    }
    if tags:
        job["tags"] = tags
    return yaml.safe_dump(job, sort_keys=False)


NOOP_DICTIONARY = "{% extends 'qemu.jinja2' %}\n{% set user_commands = {'noop': {'do': 'true'}} %}\n"


# -- processes: memory ------------------------------------------------------------------------


def rss_kb(pid: int, key: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct and indirect children of `pid` (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class RssSampler:
    """Samples VmRSS of the processes `find()` returns, every `interval` s, in a thread."""

    def __init__(self, find: Callable[[], dict[str, int]], interval: float = 0.1) -> None:
        self.find = find
        self.interval = interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.find().items():
                kb = rss_kb(pid)
                if kb is not None:
                    self.peak[name] = max(self.peak.get(name, 0), kb)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- profiling --------------------------------------------------------------------------------


def profile_top(fn: Callable[[], Any], limit: int = 12, sort: str = "cumulative") -> tuple[Any, str]:
    """Run `fn` under cProfile; return its result and the top frames as text."""
    prof = cProfile.Profile()
    result = prof.runcall(fn)
    return result, top_frames(prof, limit, sort)


def file_frames(path: Path, limit: int = 12, sort: str = "cumulative") -> str:
    """top_frames of a profile saved with `python -m cProfile -o`."""
    return top_frames(str(path), limit, sort)


def top_frames(prof: cProfile.Profile | str, limit: int = 12, sort: str = "cumulative") -> str:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats(sort).print_stats(limit)
    text = buf.getvalue()
    # keep the table only, with paths shortened to the repository or site-packages
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    out = []
    for line in lines[start:]:
        if not line.strip():
            continue
        line = line.replace(str(REPO) + "/", "")
        line = re.sub(r"\S*/site-packages/", "", line)
        line = re.sub(r"\S*/lib/python3\.\d+/", "", line)
        out.append(line.rstrip())
    return "\n".join(out)


class WsgiCaller:
    """Call the server's WSGI app in this process (for profiling its request path without HTTP)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, method: str, path: str, body: bytes = b"", ctype: str = "application/json",
                 auth: str = "") -> tuple[str, bytes]:
        path, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": ctype, "REMOTE_ADDR": "127.0.0.1",
        }
        if auth:
            environ["HTTP_AUTHORIZATION"] = auth
        status: list[str] = []

        def start_response(s: str, headers: list, exc_info: Any = None) -> None:
            status.append(s)

        out = b"".join(self.app(environ, start_response))
        return status[0], out


@contextmanager
def in_process_server(config: Path) -> Iterator[WsgiCaller]:
    """The server's app bound to `config`'s database in this process (queue: the configured one)."""
    from dutlab.service import queue
    from dutlab.service.app import make_app
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database

    settings = load(str(config))
    db = open_database(settings.database)
    queue.configure(settings)
    try:
        yield WsgiCaller(make_app(settings))
    finally:
        if not db.is_closed():
            db.close()
        database.initialize(None)


# -- machine ----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "kernel": platform.release(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_mb"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        from dutlab.service import __version__
        info["dutlab_version"] = __version__
    except ImportError:
        info["dutlab_version"] = "not installed"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    info["git_commit"] = git("rev-parse", "HEAD")
    info["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
        info["qemu"] = out[0] if out else ""
    try:
        import peewee
        info["peewee"] = peewee.__version__
    except ImportError:
        pass
    try:
        import psycopg2
        info["psycopg2"] = psycopg2.__version__.split()[0]
        info["postgresql"] = _pg_version()
    except ImportError:
        pass
    import sqlite3
    info["sqlite"] = sqlite3.sqlite_version
    return info


def calibrate() -> dict[str, float]:
    """How fast this machine is right now: a fixed pure-Python loop and 200 SQLite commits (ms, best of 3).

    Taken at the start and the end of a run: when they differ, the load on the machine changed
    while the benchmarks ran, and figures from different sections compare less well.
    """
    import sqlite3
    import tempfile

    def loop() -> float:
        t0 = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i % 7
        return (time.perf_counter() - t0) * 1000

    def commits() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            conn = sqlite3.connect(Path(tmp) / "c.sqlite3", isolation_level=None)
            conn.execute("PRAGMA journal_mode=wal")
            conn.execute("PRAGMA synchronous=normal")
            conn.execute("CREATE TABLE t (x INTEGER)")
            t0 = time.perf_counter()
            for i in range(200):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t VALUES (?)", (i,))
                conn.execute("COMMIT")
            elapsed = (time.perf_counter() - t0) * 1000
            conn.close()
        return elapsed

    return {"python_loop_ms": round(min(loop() for _ in range(3)), 1),
            "sqlite_200_commits_ms": round(min(commits() for _ in range(3)), 1),
            "loadavg_1min": round(os.getloadavg()[0], 2)}


def _pg_version() -> str:
    ok, _ = pg_available()
    if not ok:
        return "not running"
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_URL)
    try:
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        return cur.fetchone()[0]
    finally:
        conn.close()


# -- acting as a worker through the worker API --------------------------------------------------


class FakeWorker:
    """Speaks the worker API (docs/worker-api.md) like dutlab-worker + dutlab-run, without running
    anything: isolates the server's share of pickup and hand-back latency."""

    def __init__(self, url: str, name: str, token: str) -> None:
        self.url = url
        self.name = name
        self.client = Client(url, f"Worker {token}")

    def poll(self, running: list[int] | None = None, wait: float = 0) -> dict:
        return self.client.json("POST", f"/internal/v1/workers/{self.name}/poll",
                                {"protocol": 1, "version": "bench", "running": running or [], "wait": wait})

    def take(self, timeout: float = 30, wait: float = 20) -> list[tuple[int, str]]:
        """Long-poll until the server offers jobs; [(id, token)]."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.poll([], min(wait, max(0.0, deadline - time.monotonic())))
            if answer["start"]:
                return [(s["id"], s["token"]) for s in answer["start"]]
        return []

    def job(self, job_id: int, token: str) -> Client:
        return Client(self.url, f"Job {token}")

    def close(self) -> None:
        self.client.close()


def log_record(msg: str, lvl: str = "target", dt: str | None = None) -> str:
    from datetime import UTC, datetime

    return json.dumps({"dt": dt or datetime.now(UTC).isoformat(), "lvl": lvl, "msg": msg})


def epoch(iso: str | None) -> float | None:
    """Server times ('...Z', naive UTC) and log 'dt' ('...+00:00') as epoch seconds."""
    from datetime import UTC, datetime

    if not iso:
        return None
    value = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def read_log(lab: Lab, job_id: int, start: int = 0) -> list[dict]:
    client = lab.client()
    try:
        _, _, raw = client.request("GET", f"/api/v1/jobs/{job_id}/logs?start={start}")
    finally:
        client.close()
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("- "):
            try:
                out.append(json.loads(line[2:]))
            except ValueError:
                pass
    return out


# -- what every section gets ------------------------------------------------------------------------


@dataclass
class Ctx:
    quick: bool
    procs: Procs
    work: Path
    shared: dict[str, Any] = field(default_factory=dict)

    def lab(self, name: str, **settings: Any) -> Lab:
        root = self.work / name
        shutil.rmtree(root, ignore_errors=True)
        return Lab(root, self.procs, **settings)


def qemu_lab(ctx: Ctx, name: str, *, health_check: bool = False, timeout: float = 180) -> tuple[Lab, dict]:
    """A started lab with one QEMU device `qemu01` on the real worker `w1`, device Good.

    health_check=True: the device starts Unknown and passes the shipped health check first (a
    warm-up: page cache, first QEMU start); returns that job. Else health checks are disabled.
    """
    lab = ctx.lab(name).start()
    lab.add_device_type("qemu", **({} if health_check else {"disable_health_checks": True}))
    lab.add_worker("w1")
    lab.add_device("qemu01", "qemu", "w1", QEMU_DICTIONARY, **({} if health_check else {"health": "Good"}))
    lab.start_worker("w1")
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        worker = lab.api("GET", "/api/v1/workers/w1")
        device = lab.api("GET", "/api/v1/devices/qemu01")
        if device["health"] == "Bad":
            history = lab.api("GET", "/api/v1/devices/qemu01/health-history")
            raise RuntimeError(f"qemu01 failed its health check: {history}")
        if worker["state"] == "Online" and device["health"] == "Good" and device["state"] == "Idle":
            info = {"device": device, "worker": worker}
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"qemu01/w1 not ready in {timeout:.0f} s:\n{lab.log('worker-w1')}")
    return lab, info


# -- PostgreSQL -------------------------------------------------------------------------------------


def ensure_postgres() -> str:
    """Start the Debian cluster `main` if it is down; return its version when this run started it.

    Also makes the role of the test suite (dutlab_test, CREATEDB) when missing, as scripts/test.sh
    does. Silent no-op where PostgreSQL is not installed.
    """
    if os.environ.get("DUTLAB_BENCH_PG") or shutil.which("pg_lsclusters") is None:
        return ""
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout.split("\n")
    rows = [line.split() for line in out if line.strip()]
    main = next((r for r in rows if len(r) >= 4 and r[1] == "main"), None)
    if main is None:
        return ""
    started = ""
    if main[3] != "online" and subprocess.run(["pg_ctlcluster", main[0], "main", "start"]).returncode == 0:
        started = main[0]
        print(f"  (started PostgreSQL {main[0]}/main; it is stopped again at the end)", flush=True)
    has_role = subprocess.run(["su", "postgres", "-c", "psql -qtAc \"SELECT 1 FROM pg_roles WHERE "
                               "rolname='dutlab_test'\""], capture_output=True, text=True).stdout.strip()
    if has_role != "1":
        subprocess.run(["su", "postgres", "-c", "psql -qc \"CREATE ROLE dutlab_test LOGIN CREATEDB PASSWORD "
                        "'dutlab_test'\""], capture_output=True)
    return started


def stop_postgres(version: str) -> None:
    subprocess.run(["pg_ctlcluster", version, "main", "stop"])
