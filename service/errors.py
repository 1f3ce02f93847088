"""Errors the API turns into 4xx answers: a path into the document and one sentence."""

from __future__ import annotations

import logging
import secrets
import traceback


class ApiError(Exception):
    """A client error: `status` (4xx), `message` (what to fix), `path` (where, if anywhere)."""

    def __init__(self, status: int, message: str, path: str = "", **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path
        self.extra = extra

    def body(self) -> dict:
        out: dict = {"error": self.message, "path": self.path}
        out.update(self.extra)
        return out


def bad_request(message: str, path: str = "") -> ApiError:
    return ApiError(400, message, path)


def not_found(what: str, name: object) -> ApiError:
    return ApiError(404, f"{what} '{name}' does not exist")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def conflict(message: str, path: str = "", **extra: object) -> ApiError:
    return ApiError(409, message, path, **extra)


def refused_items(field: str, problems: list[tuple[int, ApiError]], total: int) -> ApiError:
    """One 4xx for a list refused as a whole: the first problem's sentence and path, and all of them.

    Paths name the item (`definitions[3].actions[0].boot`); the status is the first problem's
    (400 for bad input, 403 for something the caller may not do); nothing was stored.
    """
    def where(i: int, path: str) -> str:
        return f"{field}[{i}]" + (f".{path}" if path and not path.startswith("[") else path)

    first_i, first = problems[0]
    listed = [{"index": i, "status": exc.status, "error": exc.message, "path": where(i, exc.path)}
              for i, exc in problems]
    return ApiError(first.status, f"{first.message} ({len(problems)} of {total} {field} refused; nothing was "
                    "stored)", where(first_i, first.path), errors=listed)


def log_incident(log: logging.Logger, what: str, trace: str | None = None) -> str:
    """Log `trace` (default: the exception being handled) under a new incident id; return the id.

    The client gets the id (never the traceback), the admin finds it in the server log.
    """
    incident = secrets.token_hex(6)
    log.error("incident %s: %s failed:\n%s", incident, what, trace or traceback.format_exc())
    return incident
