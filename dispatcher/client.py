"""A small JSON client for the worker API (docs/worker-api.md), on http.client only.

The worker daemon and dutlab-run are long-lived processes on lab hosts: the standard library keeps
them small, and http.client (unlike urllib) ignores *_proxy variables a lab host may carry for
downloads, so worker traffic always goes straight to the lab server.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from . import __version__

#: the worker API protocol this code speaks (sent as `Dutlab-Protocol` and in polls)
PROTOCOL = 1


class ServerUnreachable(Exception):
    """No HTTP answer at all: refused, reset, timed out, DNS failure. Always worth a retry."""

    def __init__(self, url: str, error: BaseException) -> None:
        super().__init__(f"cannot reach {url}: {error}")
        self.url = url
        self.error = error


class ApiError(Exception):
    """The server answered with an error status; `body` keeps extra fields such as `line_count`."""

    def __init__(self, status: int, error: str, path: str = "", body: dict[str, Any] | None = None,
                 url: str = "") -> None:
        where = f" (at '{path}')" if path else ""
        super().__init__(f"{url}: HTTP {status}: {error}{where}")
        self.status = status
        self.error = error
        self.path = path
        self.body = body or {}
        self.url = url

    @property
    def retryable(self) -> bool:
        # 5xx is a server being restarted or a proxy in front of it; a 4xx will not change.
        return self.status >= 500


class Client:
    """JSON requests to one server with one identity.

    :param base_url: the server, e.g. ``http://lab:8000`` (a path prefix is kept)
    :param auth: the Authorization value, ``Worker <token>`` or ``Job <token>``
    :param timeout: seconds for connect and for each read, unless a call passes its own
    """

    def __init__(self, base_url: str, auth: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL '{base_url}' must look like http://host:port")
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._headers = {
            "Authorization": auth,
            "Dutlab-Protocol": str(PROTOCOL),
            "Accept": "application/json",
            "User-Agent": f"dutlab-worker/{__version__}",
        }
        self.timeout = timeout

    def get(self, path: str, timeout: float | None = None) -> dict[str, Any]:
        return self.request("GET", path, None, timeout)

    def post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return self.request("POST", path, body, timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        """One request; returns the decoded JSON answer or raises ServerUnreachable / ApiError."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, self._prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(url, exc) from exc
        finally:
            conn.close()
        return _decode(url, status, raw)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._netloc, timeout=timeout)
        return http.client.HTTPConnection(self._netloc, timeout=timeout)


def _decode(url: str, status: int, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        # Not our server answering (a proxy page, a half-started server): keep the start as evidence.
        doc = {"error": raw[:200].decode("utf-8", "replace").strip() or "(not JSON)"}
    if not isinstance(doc, dict):
        doc = {"error": f"unexpected answer {str(doc)[:200]}"}
    if status >= 400:
        raise ApiError(status, str(doc.get("error", "")), str(doc.get("path", "")), doc, url)
    return doc
