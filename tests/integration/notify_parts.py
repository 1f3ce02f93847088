"""The real parts notifications talk to, on loopback, each started by a test and stopped by PID:
an SMTP server (aiosmtpd's daemon, mail kept in a Maildir), an HTTP receiver for callbacks, an IRC
server (Debian's ngircd) with a listening client, and a worker that speaks the worker API over HTTP
so a job ends as a worker ends it, without booting anything."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from factories import job_text
from labkit import free_port, http


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def wait_for(what: str, probe, timeout: float = 60, interval: float = 0.1):
    """`probe()`'s first truthy answer; fails naming `what` and the last answer."""
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {answer!r})")


class Smtp:
    """`python -m aiosmtpd` as a daemon of the lab (its process list stops it); every message it
    accepts is one file in a Maildir."""

    def __init__(self, lab, port: int = 0) -> None:
        self.lab, self.port = lab, port or free_port()
        self.box = lab.root / "maildir"

    def start(self) -> Smtp:
        self.lab.spawn("smtp", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}",
                                "-c", "aiosmtpd.handlers.Mailbox", str(self.box)])
        wait_port(self.port)
        return self

    def stop(self) -> None:
        self.lab.stop("smtp")

    def mails(self) -> list[email.message.EmailMessage]:
        files = sorted(p for sub in ("new", "cur") for p in (self.box / sub).glob("*")) if self.box.exists() else []
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]

    def to(self, address: str, job_id: int | None = None) -> list[email.message.EmailMessage]:
        return [m for m in self.mails() if m["To"] == address
                and (job_id is None or m["X-Dutlab-Job"] == str(job_id))]

    def wait(self, count: int, to: str, job_id: int | None = None, timeout: float = 60
             ) -> list[email.message.EmailMessage]:
        """The mails to `to` (about `job_id`) once there are `count` or more."""
        return wait_for(f"{count} mail(s) to {to} (job {job_id})",
                        lambda: (lambda got: got if len(got) >= count else None)(self.to(to, job_id)), timeout)


class Receiver:
    """A callback receiver: a threading http.server on loopback that records each request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": self.rfile.read(length) if length else b""})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, prefix: str, timeout: float = 60) -> list[dict]:
        return wait_for(f"a callback to {prefix}", lambda: [r for r in self.requests if r["path"].startswith(prefix)],
                        timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


NGIRCD_CONF = """\
[Global]
\tName = irc.dutlab.test
\tInfo = dutlab notification tests
\tListen = 127.0.0.1
\tPorts = {port}
\tMotdPhrase = dutlab tests
[Limits]
\tMaxConnectionsIP = 0
[Options]
\tPAM = no
\tIdent = no
\tDNS = no
"""


def ngircd_or_skip() -> str:
    path = shutil.which("ngircd") or ("/usr/sbin/ngircd" if os.path.exists("/usr/sbin/ngircd") else "")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("ngircd is not installed (scripts/setup.sh installs it)")
        pytest.skip("ngircd is not installed (scripts/setup.sh installs it)")
    return path


class Ircd:
    """ngircd in the foreground with a private config on a loopback port."""

    def __init__(self, lab) -> None:
        self.lab, self.port = lab, free_port()

    def start(self) -> Ircd:
        conf = self.lab.root / "ngircd.conf"
        conf.write_text(NGIRCD_CONF.format(port=self.port))
        self.lab.spawn("ngircd", [ngircd_or_skip(), "--nodaemon", "--config", str(conf)])
        wait_port(self.port)
        return self


class IrcListener:
    """A user on the IRC server that joined a channel; records every PRIVMSG it sees."""

    def __init__(self, port: int, nick: str, channel: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.lines: list[str] = []
        self.joined = threading.Event()
        self._send(f"NICK {nick}")
        self._send(f"USER {nick} 0 * :test listener")
        self.channel = channel
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.joined.wait(15):
            raise AssertionError(f"the IRC listener did not join {channel}: {self.lines[-5:]}")

    def _send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n" in buf:
                raw, buf = buf.split(b"\r\n", 1)
                line = raw.decode(errors="replace")
                self.lines.append(line)
                parts = line.split(" ")
                if line.startswith("PING"):
                    self._send("PONG" + line[4:])
                elif len(parts) > 1 and parts[1] == "001":
                    self._send(f"JOIN {self.channel}")
                elif len(parts) > 1 and parts[1] == "366":
                    self.joined.set()

    def said(self, target: str) -> list[str]:
        return [line.split(" :", 1)[1] for line in self.lines if f" PRIVMSG {target} :" in line]

    def close(self) -> None:
        try:
            self._send("QUIT :bye")
        except OSError:
            pass
        self.sock.close()


class ApiWorker:
    """A worker that speaks the worker API (docs/worker-api.md) over HTTP: it takes the jobs the
    server offers and ends them as it is told, with log lines and results."""

    def __init__(self, lab, name: str) -> None:
        self.lab, self.name = lab, name
        self.token = lab.add_worker(name)

    def poll(self, running=(), wait: float = 0.0) -> dict:
        r = http("POST", f"{self.lab.url}/internal/v1/workers/{self.name}/poll",
                 {"protocol": 1, "version": "test", "running": list(running), "wait": wait},
                 auth=f"Worker {self.token}")
        assert r.status == 200, r.text
        return r.json()

    def offer(self, job_id: int | None = None, timeout: float = 60) -> tuple[int, str]:
        """(job id, job token) of the next job offered (or of `job_id`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for start in self.poll(wait=2)["start"]:
                if job_id is None or start["id"] == job_id:
                    return start["id"], start["token"]
        raise AssertionError(f"worker {self.name}: no job {job_id or ''} offered within {timeout:.0f} s")

    def call(self, job_id: int, token: str, suffix: str, body: dict) -> dict:
        r = http("POST", f"{self.lab.url}/internal/v1/jobs/{job_id}{suffix}", body, auth=f"Job {token}")
        assert r.status == 200, f"{suffix}: {r.status} {r.text}"
        return r.json()

    def run(self, job_id: int | None = None, passed: bool = True, results: tuple = (), error_type: str = "Test",
            error_msg: str = "a test case failed") -> int:
        """Start the job, log a line and `results` ((suite, case, result) ...), end it; its id."""
        job_id, token = self.offer(job_id)
        self.call(job_id, token, "/state", {"state": "Running"})
        lines = [json.dumps({"dt": "2026-01-01T00:00:00+00:00", "lvl": "target", "msg": f"job {job_id} booted"})]
        lines += [json.dumps({"dt": "2026-01-01T00:00:01+00:00", "lvl": "results",
                              "msg": {"definition": s, "case": c, "result": r}}) for s, c, r in results]
        self.call(job_id, token, "/logs", {"index": 0, "lines": lines})
        end = {"result": "pass"} if passed else {"result": "fail", "error_type": error_type, "error_msg": error_msg}
        self.call(job_id, token, "/finish", {**end, "log_line_count": len(lines)})
        return job_id


def notify_job(name: str, notify: str) -> str:
    """A QEMU job definition (never booted here: an ApiWorker ends it) with a notify block."""
    return job_text(name, extra=notify)


def rows(lab, job_id: int, token: str | None = "admin") -> list[dict]:
    r = lab.api("GET", f"/api/v1/jobs/{job_id}/notifications", token=token)
    assert r.status == 200, r.text
    return r.json()["results"]


def wait_rows(lab, job_id: int, states: set[str], count: int = 1, timeout: float = 60) -> list[dict]:
    """The job's rows once `count` or more exist and all are in `states`."""
    return wait_for(f"job {job_id}: {count} notification row(s) in {states}",
                    lambda: (lambda got: got if len(got) >= count and all(r["state"] in states for r in got)
                             else None)(rows(lab, job_id)), timeout)
