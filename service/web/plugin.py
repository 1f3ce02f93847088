"""What every page route shares: WebRoutes installs WebPlugin on each, and `render` draws a page.

WebPlugin runs inside the app's plugins (the database connection is open, AuthPlugin has read any
API token), so a script with a token sees the pages as its user; a browser is its session's user.
A POST made by a browser must carry its CSRF token; a request with `Authorization: Token` cannot
be forged by another site (browsers never add that header), so it needs none. An ApiError below
becomes an HTML page with the same status and sentence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bottle import HTTPResponse, request, response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .. import auth
from ..api import Routes
from ..errors import ApiError
from ..models import User, utcnow
from ..plugins import parse_authorization
from . import sessions

TEMPLATES = Path(__file__).parent / "templates"
ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                  trim_blocks=True, lstrip_blocks=True)


def settings():
    return request.app.config["dutlab.settings"]


def web_user() -> User | None:
    return request.environ.get("dutlab.user")


def _token_caller() -> bool:
    scheme, _secret, _user = parse_authorization()
    return scheme in ("token", "bearer")


class WebPlugin:
    name = "dutlab-web"
    api = 2

    def apply(self, callback: Callable, route: Any) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                if request.environ.get("dutlab.user") is None:
                    found = sessions.session()
                    request.environ["dutlab.user"] = found.user if found is not None else None
                if route.method == "POST" and not _token_caller() and not sessions.csrf_ok(
                        request.forms.get("csrf")):
                    raise ApiError(403, "this form is out of date or was not sent from this site (CSRF check "
                                        "failed); reload the page and send it again")
                answer = callback(*args, **kwargs)
            except ApiError as exc:
                answer = render("error.html", exc.status, error=exc, title=f"{exc.status}")
                if "retry_after" in exc.extra:
                    answer.set_header("Retry-After", str(exc.extra["retry_after"]))
            if isinstance(answer, HTTPResponse):
                # bottle replaces its response's cookies by the returned answer's: carry ours over
                for header, value in response.headerlist:
                    if header == "Set-Cookie":
                        answer.add_header(header, value)
                answer.set_header("Cache-Control", "no-store")  # pages may show private jobs and devices
            return answer

        return wrapper


class WebRoutes(Routes):
    """A route table whose routes are pages: WebPlugin applies to each."""

    def route(self, path: str, method: str = "GET", **config: Any) -> Callable:
        return super().route(path, method, apply=[WebPlugin()], **config)


def render(template: str, status: int = 200, **context: Any) -> HTTPResponse:
    """The page `template` with the context every page has: who is logged in, the CSRF token."""
    user = web_user()
    body = ENV.get_template(template).render(
        me=user, is_admin=auth.is_admin(user), csrf=sessions.csrf_token(settings()), path=request.path,
        now=utcnow(), **context)
    return HTTPResponse(body, status=status, headers={"Content-Type": "text/html; charset=utf-8"})


def redirect(location: str) -> HTTPResponse:
    """After a form: see the page that shows what changed (303: the browser GETs it)."""
    return HTTPResponse(status=303, headers={"Location": location})


def need_user() -> User:
    user = web_user()
    if user is None:
        raise ApiError(401, "log in first: this action needs an account")
    return user


def need_admin() -> User:
    user = need_user()
    if not auth.is_admin(user):
        raise ApiError(403, f"user '{user.username}' is not an admin")
    return user


def form(*names: str) -> dict[str, str]:
    """The named fields of the posted form, as text ('' when absent)."""
    values = {name: request.forms.getunicode(name, default="") or "" for name in names}
    for name, value in values.items():
        if "\x00" in value:
            raise ApiError(400, f"the field '{name}' holds a NUL character; send text", name)
    return values


def health_changes() -> dict[str, str | None]:
    """The posted health form (health + optional reason) as changes for update_device/update_worker."""
    fields = form("health", "reason")
    changes: dict[str, str | None] = {"health": fields["health"] or None}
    if fields["reason"].strip():
        changes["reason"] = fields["reason"].strip()
    return changes


# Template filters ##################################################################


def ago(value: dt.datetime | None) -> str:
    """'3 min ago' for a stored (naive UTC) time."""
    if value is None:
        return "-"
    return f"{duration(max(0.0, (utcnow() - value).total_seconds()))} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


def span(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None:
        return "-"
    return duration(((end or utcnow()) - start).total_seconds())


def when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def short(iso_text: str | None) -> str:
    """An ISO time of a JSON shape ("2026-01-02T03:04:05.678Z") as "2026-01-02 03:04:05"."""
    return iso_text[:19].replace("T", " ") if iso_text else "-"


ENV.filters.update(ago=ago, duration=duration, span=span, when=when, short=short)
