"""REST: users, groups and API tokens (secrets appear once, when a token is created)."""

from __future__ import annotations

from bottle import HTTPResponse, request

from .. import auth, throttle
from ..errors import ApiError, forbidden
from ..lab import logins, tokens, users
from ..lab.checks import page
from ..plugins import current_user, json_body, json_response, parse_authorization
from . import Routes

routes = Routes("/api/v1")


def _no_content() -> HTTPResponse:
    return HTTPResponse(status=204)


# Users ############################################################################


SELF = "themselves, or an admin; only a superuser acts on a superuser"


@routes.get("/users", auth="user", access="admins see every user, others themselves")
def list_users() -> dict:
    user = current_user()
    rows = users.list_users() if auth.is_admin(user) else [user]
    return page(rows, request.query.get("limit"), request.query.get("offset"), many=users.users_json)


@routes.post("/users", auth="admin")
def create_user() -> HTTPResponse:
    user, _ = users.create_user(json_body(), current_user())
    return json_response(201, users.user_json(user))


@routes.get("/users/<name>", auth="user", access=SELF)
def show_user(name: str) -> dict:
    caller = current_user()
    if caller.username != name and not auth.is_admin(caller):
        raise forbidden(f"user '{caller.username}' may not see user '{name}'")
    return users.user_json(users.get_user(name))


@routes.patch("/users/<name>", auth="user", access=SELF + " (others change only their email and password)")
def update_user(name: str) -> dict:
    return users.user_json(users.update_user(name, json_body(), current_user()))


@routes.delete("/users/<name>", auth="admin", access="only a superuser deletes a superuser")
def delete_user(name: str) -> HTTPResponse:
    users.delete_user(name, current_user())
    return _no_content()


# Groups ###########################################################################


@routes.get("/groups", auth="user")
def list_groups() -> dict:
    return page(users.list_groups(), request.query.get("limit"), request.query.get("offset"),
                many=users.groups_json)


@routes.post("/groups", auth="admin")
def create_group() -> HTTPResponse:
    return json_response(201, users.group_json(users.create_group(json_body())))


@routes.get("/groups/<name>", auth="user")
def show_group(name: str) -> dict:
    return users.group_json(users.get_group(name))


@routes.patch("/groups/<name>", auth="admin")
def update_group(name: str) -> dict:
    return users.group_json(users.update_group(name, json_body()))


@routes.delete("/groups/<name>", auth="admin")
def delete_group(name: str) -> HTTPResponse:
    users.delete_group(name)
    return _no_content()


# Tokens ###########################################################################


@routes.get("/tokens", auth="user", access="their own tokens; admins may ask for another user's")
def list_tokens() -> dict:
    caller = current_user()
    username = request.query.get("user") or caller.username
    if username != caller.username and not auth.is_admin(caller):
        raise forbidden(f"user '{caller.username}' may not list the tokens of '{username}'")
    rows = tokens.list_tokens(username)
    return page(rows, request.query.get("limit"), request.query.get("offset"), tokens.token_json)


@routes.post("/tokens", auth="public", skip=["dutlab-auth"],
             access="credentials in the request; a token for another user needs an admin, for a superuser a superuser")
def create_token() -> HTTPResponse:
    """A new token for the caller, who proves who they are with an API token, HTTP Basic
    `username:password` (or `username:token`), or `{"username", "password"}` in the body."""
    body = json_body()
    username, password = body.pop("username", None), body.pop("password", None)
    caller = _token_caller(username, password)
    token, secret = tokens.create_token(body, caller)
    return json_response(201, tokens.token_json(token, secret))


def _token_caller(username: object, password: object):
    scheme, secret, basic_user = parse_authorization()
    if scheme == "basic":
        # the token first: a lookup by hash, whose cost does not depend on the user name
        user = auth.user_for_token(secret, basic_user) or _login(basic_user, secret)
    elif scheme in ("token", "bearer"):
        user = auth.user_for_token(secret)
    elif scheme:
        raise forbidden(f"a {scheme} token cannot act as a user; use 'Authorization: Token <secret>'")
    elif isinstance(username, str) and isinstance(password, str):
        user = _login(username, password)
    else:
        raise ApiError(401, "authentication required: send a token, HTTP Basic username:password, "
                            "or {\"username\": ..., \"password\": ...}")
    if user is None:
        raise ApiError(401, "wrong username, password or token")
    return user


def _login(username: str, password: str):
    """A password login (local, or LDAP when configured) with this app's throttle."""
    config = request.app.config
    settings = config["dutlab.settings"]
    # REMOTE_ADDR, not X-Forwarded-For: a client sets that header to whatever it likes
    return logins.login(username, password, settings, throttle.for_app(config, settings),
                        request.environ.get("REMOTE_ADDR", ""))


@routes.delete("/tokens/<token_id>", auth="user", access=SELF.replace("themselves", "their own tokens"))
def delete_token(token_id: str) -> HTTPResponse:
    tokens.delete_token(token_id, current_user())
    return _no_content()
