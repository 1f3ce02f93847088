"""The worker protocol (docs/worker-api.md): version, error types, the job result, API paths,
and the one HTTP client dutlab-worker and dutlab-run use.

One home for what dutlab-worker, dutlab-run and the server's ``/internal/v1`` routes must agree
on. The server imports these definitions (``dispatcher/`` never imports ``service/``), so a
change here is a change to both sides at once. Standard library only: the server and the
worker each import it at start-up.

The client is http.client, not urllib: worker hosts are long-lived lab machines, and
http.client ignores the *_proxy variables a lab host may carry for downloads, so worker
traffic always goes straight to the lab server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import __version__

if TYPE_CHECKING:
    import http.client

#: the protocol this code speaks (sent as ``Dutlab-Protocol`` and in polls)
PROTOCOL = 2
#: the oldest protocol the server still accepts from a worker (one version back)
OLDEST_PROTOCOL = max(1, PROTOCOL - 1)
#: from this protocol on, a poll answer lists the worker's runs the server has ended (``ended``)
#: apart from ids it does not know (``unknown``), and a report on a Finished job is a 409
#: (protocol 1 clients get the old 200 for a repeated finish, which they need to stop retrying)
ENDED_PROTOCOL = 2
#: the ``state`` of a 409 that refuses a report because the server has ended the job
FINISHED = "Finished"
#: the worker API's path prefix on the server
PREFIX = "/internal/v1"


class ErrorType:
    """The error type names a finished job may carry, as LAVA spells them.

    Attributes, not string literals at each use, so a misspelt type is an AttributeError
    instead of a new type on the server.
    """

    INFRASTRUCTURE = "Infrastructure"
    CONFIGURATION = "Configuration"
    BUG = "Bug"
    JOB = "Job"
    TEST = "Test"
    CANCELED = "Canceled"
    TIMEOUT = "Timeout"
    LAVA_TIMEOUT = "LAVATimeout"
    MULTINODE_TIMEOUT = "MultinodeTimeout"


#: every error type a finished job may carry, as LAVA names them
ERROR_TYPES = (ErrorType.INFRASTRUCTURE, ErrorType.CONFIGURATION, ErrorType.BUG, ErrorType.JOB, ErrorType.TEST,
               ErrorType.CANCELED, ErrorType.TIMEOUT, ErrorType.LAVA_TIMEOUT, ErrorType.MULTINODE_TIMEOUT)
#: the error types that mean "not the test's fault": a Good device goes Unknown and is re-checked
INFRASTRUCTURE_ERRORS = (ErrorType.INFRASTRUCTURE, ErrorType.CONFIGURATION, ErrorType.BUG)
#: how long an error type may be on the wire (the server's column)
ERROR_TYPE_MAX = 30


def supported(protocol: int) -> bool:
    """Whether a worker speaking ``protocol`` may talk to this server."""
    return OLDEST_PROTOCOL <= protocol <= PROTOCOL


# -- paths ----------------------------------------------------------------------------------
# Relative to the server URL; the server's routes are declared from the same templates.

POLL = PREFIX + "/workers/{name}/poll"
JOB = PREFIX + "/jobs/{job_id}"
JOB_STATE = JOB + "/state"
JOB_LOGS = JOB + "/logs"
JOB_FINISH = JOB + "/finish"


def poll_path(worker: str) -> str:
    return POLL.format(name=worker)


def job_path(job_id: int, what: str = "") -> str:
    """``/internal/v1/jobs/<id>`` or one of its parts (``state``, ``logs``, ``finish``)."""
    path = JOB.format(job_id=job_id)
    return f"{path}/{what}" if what else path


# -- the job result ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobResult:
    """How a job ended, as dutlab-run writes it to ``result.yaml`` and sends it in ``finish``.

    :param result: ``pass`` or ``fail``.
    :param error_type: one of ERROR_TYPES when the job failed, else empty.
    :param error_msg: one sentence with the evidence when the job failed, else empty.
    """

    result: str
    error_type: str = ""
    error_msg: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @classmethod
    def failed(cls, error_type: str, error_msg: str) -> JobResult:
        return cls("fail", error_type, error_msg)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> JobResult:
        """From ``result.yaml``, a results record or a finish body; anything but pass is a fail."""
        data = data or {}
        if data.get("result") == "pass":
            return cls("pass")
        return cls("fail", str(data.get("error_type") or ""), str(data.get("error_msg") or ""))

    def to_mapping(self) -> dict[str, str]:
        """``result.yaml``'s mapping: only the fields that are set."""
        data = {"result": self.result}
        if not self.passed:
            data.update(error_type=self.error_type, error_msg=self.error_msg)
        return data

    def results_record(self) -> dict[str, Any]:
        """The job's own ``lava``/``job`` case: the last ``results`` record of every log."""
        return {"definition": "lava", "case": "job", **self.to_mapping()}

    def finish_body(self, description: str, log_line_count: int) -> dict[str, Any]:
        """The body of ``POST .../finish``."""
        return {"result": self.result, "error_type": self.error_type, "error_msg": self.error_msg,
                "description": description, "log_line_count": log_line_count}


# -- the client ---------------------------------------------------------------------------------


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
    def job_ended(self) -> bool:
        """The server has ended this job and takes nothing more for it (fencing, docs/worker.md)."""
        return self.status == 409 and self.body.get("state") == FINISHED

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
        import http.client  # here, not at the top: dutlab-run reaches QEMU before it needs HTTP

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
        import http.client

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
