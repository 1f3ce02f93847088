"""API tokens: made for a user (the secret shown once, stored hashed), listed, deleted, pruned."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from .. import auth
from ..errors import ApiError, bad_request, conflict, forbidden
from ..models import Token, User, utcnow
from .checks import check_fields, iso, text
from .users import check_may_manage, get_user

SECRET_RE = re.compile(r"^[A-Za-z0-9._~-]{8,128}$")


def token_json(token: Token, secret: str | None = None) -> dict:
    """The one JSON shape of a token; the secret only when it was just made (it is stored hashed)."""
    out = {
        "id": token.id,
        "user": token.user.username,
        "description": token.description,
        "prefix": token.prefix,
        "created": iso(token.created),
        "last_used": iso(token.last_used),
    }
    if secret is not None:
        out["secret"] = secret
    return out


def list_tokens(username: str | None = None) -> list[Token]:
    query = Token.select(Token, User).join(User).order_by(Token.id)
    if username is not None:
        query = query.where(Token.user == get_user(username, "user"))
    return list(query)


def create_token(data: Mapping[str, Any], caller: User | None = None) -> tuple[Token, str]:
    """A new API token for `data['user']` (default: the caller); return it and its secret.

    Only admins create tokens for other users, and only superusers for a superuser.
    """
    check_fields(data, ("user", "description", "secret"))
    username = data.get("user") or (caller.username if caller else None)
    if not username:
        raise bad_request("'user' is required", "user")
    user = get_user(username, "user")
    if caller is not None and caller.id != user.id and not auth.is_admin(caller):
        raise forbidden(f"user '{caller.username}' may not create tokens for '{username}'")
    check_may_manage(caller, user, "create tokens for")
    secret = data.get("secret")
    if secret is not None:
        if not isinstance(secret, str) or not SECRET_RE.match(secret):
            raise bad_request("a token secret needs 8 to 128 letters, digits or . _ ~ -", "secret")
        if Token.get_or_none(Token.secret_hash == auth.hash_secret(secret)):
            raise conflict("this secret is already a token; choose another", "secret")
    description = text(data.get("description"), "description", 200)
    return auth.create_token(user, description, secret)


def delete_token(token_id: Any, caller: User | None = None) -> None:
    token = Token.get_or_none(Token.id == token_id) if str(token_id).isdigit() else None
    if token is None or (caller is not None and token.user_id != caller.id and not auth.is_admin(caller)):
        raise ApiError(404, f"token {token_id} does not exist")
    check_may_manage(caller, token.user, "delete tokens of")
    token.delete_instance()


def delete_token_secret(secret: str) -> None:
    deleted = Token.delete().where(Token.secret_hash == auth.hash_secret(secret)).execute()
    if not deleted:
        raise ApiError(404, "no token has this secret")


def prune_tokens(days: int) -> int:
    """Delete tokens unused for `days` days (never-used ones count from their creation)."""
    cutoff = utcnow() - dt.timedelta(days=days)
    stale = ((Token.last_used.is_null(False) & (Token.last_used < cutoff)) |
             (Token.last_used.is_null(True) & (Token.created < cutoff)))
    return Token.delete().where(stale).execute()
