"""Bottle plugins: a database connection per server thread, authentication, JSON errors.

Who may call a route is route metadata: `@routes.get('/x', auth='admin')`. The plugin reads
`route.config['auth']`; routes without it are public (an optional user). `owner` routes need a
user, and the domain decides whether that user owns the object; `access='...'` says in words
what a handler narrows further (both appear in the OpenAPI document).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from bottle import HTTPError, HTTPResponse, request, response
from peewee import InterfaceError, OperationalError

from . import auth, limits
from .db import database, describe, rows_prebuilt
from .errors import ApiError, log_incident
from .models import TestJob, User, Worker, job_by_id

log = logging.getLogger("dutlab.server")

AUTH_KINDS = ("public", "user", "owner", "admin", "worker", "job")


def json_response(status: int, body: Any) -> HTTPResponse:
    return HTTPResponse(
        json.dumps(body, default=str), status=status, headers={"Content-Type": "application/json"}
    )


class DatabasePlugin:
    """One database connection per server thread, kept across requests.

    Opening one per request (and its PRAGMAs on SQLite) cost more than most requests; a
    connection that broke (PostgreSQL restarted) is dropped so the next request reconnects.
    """

    name = "dutlab-db"
    api = 2

    def apply(self, callback: Callable, route: Any) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            database.connect(reuse_if_open=True)
            try:
                return callback(*args, **kwargs)
            except (OperationalError, InterfaceError):
                if not database.is_closed():
                    database.close()
                raise

        return wrapper


class ErrorPlugin:
    """ApiError → its 4xx JSON; a busy database → 503 + Retry-After; anything else → a 500 (a bug)
    with an incident id that the server log shows beside the traceback."""

    name = "dutlab-errors"
    api = 2

    def apply(self, callback: Callable, route: Any) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except ApiError as exc:
                answer = json_response(exc.status, exc.body())
                if "retry_after" in exc.extra:  # 429 (login throttling), 503 (load shedding)
                    answer.set_header("Retry-After", str(exc.extra["retry_after"]))
                return answer
            except (HTTPResponse, HTTPError):
                raise
            except Exception as exc:
                incident = log_incident(log, f"{request.method} {request.path}")
                if _database_busy(exc):  # shed load: the client retries, nothing was written
                    answer = json_response(503, {"error": f"the database is busy; retry in a few seconds "
                                                          f"(incident {incident})", "incident": incident})
                    answer.set_header("Retry-After", "2")
                    return answer
                if _database_unreachable(exc):  # no connection (slots used up, server down): nothing written
                    answer = json_response(503, {"error": f"cannot connect to the database ({describe()}): "
                                                          f"{str(exc).strip().splitlines()[0][:200]}; retry later "
                                                          f"(incident {incident})", "incident": incident})
                    answer.set_header("Retry-After", "5")
                    return answer
                return json_response(500, {"error": f"internal server error (a bug): incident {incident} "
                                                    "in the server log", "incident": incident})

        return wrapper


def _database_busy(exc: Exception) -> bool:
    """A lock wait that ran out (SQLite busy timeout, PostgreSQL lock/statement timeout)."""
    text = str(exc).lower()
    return isinstance(exc, OperationalError) and ("locked" in text or "busy" in text or "timeout" in text)


def _database_unreachable(exc: Exception) -> bool:
    """A connection the database refused or lost (PostgreSQL out of connection slots, down)."""
    text = str(exc).lower()
    return isinstance(exc, (OperationalError, InterfaceError)) and any(
        word in text for word in ("connection", "connect to server", "too many clients", "server closed"))


def parse_authorization() -> tuple[str, str, str | None]:
    """(scheme, secret, username) from the Authorization header; ('', '', None) when absent."""
    header = request.environ.get("HTTP_AUTHORIZATION", "")  # raw: bottle's headers fail on non-UTF-8 bytes
    if not header:
        return "", "", None
    if not header.isascii():  # WSGI hands header bytes over as Latin-1 text
        raise ApiError(400, "the Authorization header holds non-ASCII bytes; send 'Token <secret>'")
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "basic":
        try:
            username, sep, secret = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, ValueError):
            raise ApiError(400, "Authorization: Basic needs base64 of 'username:token'") from None
        if not sep:
            raise ApiError(400, "Authorization: Basic needs base64 of 'username:token'")
        return "basic", secret, username
    if scheme in ("token", "worker", "job", "bearer"):
        return scheme, value, None
    raise ApiError(400, f"unsupported Authorization scheme '{scheme}'; use 'Token <secret>'")


class AuthPlugin:
    name = "dutlab-auth"
    api = 2

    def apply(self, callback: Callable, route: Any) -> Callable:
        kind = route.config.get("auth", "public")
        if kind not in AUTH_KINDS:
            raise ValueError(f"route {route.rule}: auth={kind!r} is not one of {AUTH_KINDS}")

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scheme, secret, username = parse_authorization()
            if kind == "worker":
                request.environ["dutlab.worker"] = _worker(scheme, secret, kwargs.get("name"))
            elif kind == "job":
                request.environ["dutlab.job"] = _job(scheme, secret, kwargs.get("job_id"))
            else:
                request.environ["dutlab.user"] = _user(kind, scheme, secret, username)
            return callback(*args, **kwargs)

        return wrapper


def _user(kind: str, scheme: str, secret: str, username: str | None) -> User | None:
    if scheme in ("worker", "job"):
        raise ApiError(403, f"a {scheme} token cannot act as a user; use 'Authorization: Token <secret>'")
    user = None
    if scheme:
        user = auth.user_for_token(secret, username)
        if user is None:
            raise ApiError(401, "invalid or expired API token (check the token and its user)")
    if kind in ("user", "owner", "admin") and user is None:
        raise ApiError(401, "authentication required: send 'Authorization: Token <secret>'")
    if kind == "admin" and not auth.is_admin(user):
        raise ApiError(403, f"user '{user.username}' is not an admin")
    return user


def _worker(scheme: str, secret: str, name: str | None) -> Worker:
    if not scheme:
        raise ApiError(401, "authentication required: send 'Authorization: Worker <worker token>'")
    if scheme != "worker":
        raise ApiError(403, "this endpoint takes a worker token: 'Authorization: Worker <token>'")
    rows = rows_prebuilt(Worker, "worker by hostname", lambda h: Worker.select().where(Worker.hostname == h),
                         name) if isinstance(name, str) else []
    worker = rows[0] if rows else None
    if worker is None:
        raise ApiError(404, f"worker '{name}' is not registered; add it with 'dutlab-server manage workers add'")
    if not worker.token_hash or not hmac.compare_digest(worker.token_hash, auth.hash_secret(secret)):
        raise ApiError(403, f"wrong token for worker '{name}'")
    return worker


def _job(scheme: str, secret: str, job_id: Any) -> TestJob:
    if not scheme:
        raise ApiError(401, "authentication required: send 'Authorization: Job <job token>'")
    if scheme != "job":
        raise ApiError(403, "this endpoint takes a job token: 'Authorization: Job <token>'")
    job = job_by_id(job_id)
    if job is None:
        raise ApiError(404, f"job '{job_id}' does not exist")
    if not job.token_hash or not hmac.compare_digest(job.token_hash, auth.hash_secret(secret)):
        raise ApiError(403, f"wrong token for job {job_id}")
    return job


def current_user() -> User | None:
    return request.environ.get("dutlab.user")


def current_worker() -> Worker:
    return request.environ["dutlab.worker"]


def current_job() -> TestJob:
    return request.environ["dutlab.job"]


def json_body() -> dict:
    """The request body as a JSON object, or a 400 that says so."""
    raw = request.body.read()
    if not raw:
        return {}
    data = limits.loads(raw)
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


#: HTML pages load their style and their one script (the log viewer) from this server and fetch
#: only from it: nothing inline, no frames, no other origin
HTML_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def security_headers() -> None:
    """The after_request hook: headers every answer carries, and the CSP of HTML pages."""
    response.set_header("X-Content-Type-Options", "nosniff")
    response.set_header("X-Frame-Options", "DENY")
    response.set_header("Referrer-Policy", "no-referrer")
    if (response.content_type or "").startswith("text/html"):
        response.set_header("Content-Security-Policy", HTML_CSP)


def set_no_cache() -> None:
    response.set_header("Cache-Control", "no-store")
