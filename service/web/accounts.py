"""/accounts/login/ and /accounts/logout/ (LAVA's addresses): a session for a password login.

Local and LDAP passwords go through `lab.logins.login`, with the same throttle as API logins
(too many failures: a 429 page with Retry-After). API tokens stay the way for scripts.
"""

from __future__ import annotations

from bottle import HTTPResponse, request

from .. import throttle
from ..errors import ApiError
from ..lab import logins
from . import sessions
from .plugin import WebRoutes, form, redirect, render, settings

routes = WebRoutes("/accounts")


def _next_page(value: str) -> str:
    """Where to go after a login: a path on this site only (never '//host' or a URL)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@routes.get("/login/")
def login_page() -> HTTPResponse:
    """The login form."""
    return render("login.html", title="Log in", next_page=_next_page(request.query.get("next") or "/"),
                  username="", failed=False)


@routes.post("/login/")
def login() -> HTTPResponse:
    """Check the password; on success a session, then the page the user came from."""
    fields = form("username", "password", "next")
    config = request.app.config
    user = logins.login(fields["username"], fields["password"], settings(), throttle.for_app(config, settings()),
                        request.environ.get("REMOTE_ADDR", ""))
    if user is None:
        return render("login.html", 401, title="Log in", next_page=_next_page(fields["next"]),
                      username=fields["username"], failed=True)
    sessions.end(settings(), clear_cookie=False)  # a new key at every login: a planted cookie is worth nothing
    sessions.start(user, settings())
    return redirect(_next_page(fields["next"]))


@routes.post("/logout/")
def logout() -> HTTPResponse:
    """End the session."""
    if sessions.session() is None and request.environ.get("dutlab.user") is None:
        raise ApiError(401, "you are not logged in")
    sessions.end(settings())
    return redirect("/")
