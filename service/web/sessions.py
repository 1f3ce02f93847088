"""Browser logins: a session cookie signed with the server's secret key, and CSRF tokens.

The cookie holds a random key and its HMAC under the secret key; the database keeps only the
key's SHA-256 (`web_session`), so a stolen database holds no usable cookie and a logout ends
the session on the server, not only in the browser. Each session has its own CSRF token, which
every form carries; before a login, the login form's token is a cookie of its own (double submit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from bottle import request, response

from ..auth import hash_secret
from ..config import Settings
from ..models import User, WebSession, utcnow

COOKIE = "dutlab_session"
CSRF_COOKIE = "dutlab_csrf"


def _secret_key() -> bytes:
    config = request.app.config
    key = config.get("dutlab.secret_key")
    if key is None:
        key = config["dutlab.settings"].secret_key()
        config["dutlab.secret_key"] = key
    return key


def _sign(value: str) -> str:
    return hmac.new(_secret_key(), value.encode(), hashlib.sha256).hexdigest()[:32]


def _signed(value: str) -> str:
    return f"{value}.{_sign(value)}"


def _unsigned(cookie: str | None) -> str | None:
    """The value of a signed cookie, or None when it is missing or its signature is wrong."""
    if not cookie or "." not in cookie or not cookie.isascii():
        return None
    value, _, signature = cookie.rpartition(".")
    return value if hmac.compare_digest(signature, _sign(value)) else None


def _secure(settings: Settings) -> bool:
    # behind a TLS-terminating proxy the WSGI scheme is http: base_url says what browsers use
    return settings.base_url.startswith("https:") or request.urlparts.scheme == "https"


def _set_cookie(name: str, value: str, settings: Settings, max_age: int | None) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="lax", secure=_secure(settings),
                        max_age=max_age)


def session() -> WebSession | None:
    """This request's live session (its user joined), or None."""
    found = request.environ.get("dutlab.web.session", False)
    if found is not False:
        return found
    key = _unsigned(request.get_cookie(COOKIE))
    found = None
    if key is not None:
        found = (WebSession.select(WebSession, User).join(User)
                 .where(WebSession.key_hash == hash_secret(key), WebSession.expires > utcnow(), User.is_active)
                 .first())
    request.environ["dutlab.web.session"] = found
    return found


def start(user: User, settings: Settings) -> WebSession:
    """Log `user` in: a new session (expired ones are dropped) and its cookie."""
    now = utcnow()
    WebSession.delete().where(WebSession.expires <= now).execute()
    key = secrets.token_urlsafe(32)
    row = WebSession.create(key_hash=hash_secret(key), user=user, csrf=secrets.token_urlsafe(32), created=now,
                            expires=now + dt.timedelta(hours=settings.web_session_hours))
    _set_cookie(COOKIE, _signed(key), settings, settings.web_session_hours * 3600)
    request.environ["dutlab.web.session"] = row
    return row


def end(settings: Settings, clear_cookie: bool = True) -> None:
    """Log out: the session row goes, and so does the cookie (unless a new session replaces it)."""
    found = session()
    if found is not None:
        WebSession.delete().where(WebSession.id == found.id).execute()
    if clear_cookie:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(settings))
    request.environ["dutlab.web.session"] = None


def csrf_token(settings: Settings) -> str:
    """The token this page's forms carry: the session's, or before a login the CSRF cookie's."""
    found = session()
    if found is not None:
        return found.csrf
    token = _unsigned(request.get_cookie(CSRF_COOKIE))
    if token is None:
        token = request.environ.get("dutlab.web.new_csrf") or secrets.token_urlsafe(32)
        request.environ["dutlab.web.new_csrf"] = token
        _set_cookie(CSRF_COOKIE, _signed(token), settings, None)
    return token


def csrf_ok(sent: str | None) -> bool:
    """Whether a form's token is this browser's (the session's, or the pre-login cookie's)."""
    if not sent:
        return False
    found = session()
    expected = found.csrf if found is not None else _unsigned(request.get_cookie(CSRF_COOKIE))
    return expected is not None and hmac.compare_digest(sent, expected)
