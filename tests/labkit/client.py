"""HTTP to a lab: `http()` (one request, any status returned) and `Client` (a kept-alive connection
for loops that measure or hammer the server)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import client as httpc
from typing import Any


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(method: str, url: str, body: Any = None, token: str | None = None, auth: str | None = None,
         headers: dict | None = None, timeout: float = 30) -> Response:
    """One request; dicts and lists are sent as JSON. HTTP errors come back as a Response."""
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


class HttpError(RuntimeError):
    def __init__(self, status: int, body: bytes, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class Client:
    """A keep-alive HTTP/1.1 client: one connection, so one per thread."""

    def __init__(self, url: str, auth: str = "") -> None:
        host, _, port = url.split("://", 1)[1].rstrip("/").partition(":")
        self.host, self.port = host, int(port or 80)
        self.auth = auth
        self.conn: httpc.HTTPConnection | None = None

    def _connect(self) -> httpc.HTTPConnection:
        if self.conn is None:
            self.conn = httpc.HTTPConnection(self.host, self.port, timeout=60)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                auth: str | None = None, expect: tuple[int, ...] = (200, 201)) -> tuple[int, dict, bytes]:
        """(status, headers, body); a status outside `expect` (when given) raises HttpError."""
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
            except (httpc.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server closed the kept connection between two requests: one fresh try
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
