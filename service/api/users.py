"""REST: users, groups and API tokens (secrets appear once, when a token is created)."""

from __future__ import annotations

from bottle import HTTPResponse, request

from .. import auth, lab, lab_users
from ..app import json_ok
from ..errors import ApiError, forbidden
from ..plugins import current_user, json_body, parse_authorization
from . import Routes

routes = Routes("/api/v1")


def _no_content() -> HTTPResponse:
    return HTTPResponse(status=204)


# Users ############################################################################


@routes.get("/users", auth="user")
def list_users() -> dict:
    user = current_user()
    rows = lab_users.list_users() if auth.is_admin(user) else [user]
    return lab.page(rows, request.query.get("limit"), request.query.get("offset"), lab_users.user_json)


@routes.post("/users", auth="admin")
def create_user() -> HTTPResponse:
    user, _ = lab_users.create_user(json_body(), current_user())
    return json_ok(lab_users.user_json(user), 201)


@routes.get("/users/<name>", auth="user")
def show_user(name: str) -> dict:
    caller = current_user()
    if caller.username != name and not auth.is_admin(caller):
        raise forbidden(f"user '{caller.username}' may not see user '{name}'")
    return lab_users.user_json(lab_users.get_user(name))


@routes.patch("/users/<name>", auth="user")
def update_user(name: str) -> dict:
    return lab_users.user_json(lab_users.update_user(name, json_body(), current_user()))


@routes.delete("/users/<name>", auth="admin")
def delete_user(name: str) -> HTTPResponse:
    lab_users.delete_user(name)
    return _no_content()


# Groups ###########################################################################


@routes.get("/groups", auth="user")
def list_groups() -> dict:
    return lab.page(lab_users.list_groups(), request.query.get("limit"), request.query.get("offset"),
                    lab_users.group_json)


@routes.post("/groups", auth="admin")
def create_group() -> HTTPResponse:
    return json_ok(lab_users.group_json(lab_users.create_group(json_body())), 201)


@routes.get("/groups/<name>", auth="user")
def show_group(name: str) -> dict:
    return lab_users.group_json(lab_users.get_group(name))


@routes.patch("/groups/<name>", auth="admin")
def update_group(name: str) -> dict:
    return lab_users.group_json(lab_users.update_group(name, json_body()))


@routes.delete("/groups/<name>", auth="admin")
def delete_group(name: str) -> HTTPResponse:
    lab_users.delete_group(name)
    return _no_content()


# Tokens ###########################################################################


@routes.get("/tokens", auth="user")
def list_tokens() -> dict:
    caller = current_user()
    username = request.query.get("user") or caller.username
    if username != caller.username and not auth.is_admin(caller):
        raise forbidden(f"user '{caller.username}' may not list the tokens of '{username}'")
    rows = lab_users.list_tokens(username)
    return lab.page(rows, request.query.get("limit"), request.query.get("offset"), lab_users.token_json)


@routes.post("/tokens", auth="public", skip=["dutlab-auth"])
def create_token() -> HTTPResponse:
    """A new token for the caller, who proves who they are with an API token, HTTP Basic
    `username:password` (or `username:token`), or `{"username", "password"}` in the body."""
    body = json_body()
    username, password = body.pop("username", None), body.pop("password", None)
    caller = _token_caller(username, password)
    token, secret = lab_users.create_token(body, caller)
    return json_ok(lab_users.token_json(token, secret), 201)


def _token_caller(username: object, password: object):
    scheme, secret, basic_user = parse_authorization()
    if scheme == "basic":
        user = lab_users.login(basic_user, secret) or auth.user_for_token(secret, basic_user)
    elif scheme in ("token", "bearer"):
        user = auth.user_for_token(secret)
    elif scheme:
        raise forbidden(f"a {scheme} token cannot act as a user; use 'Authorization: Token <secret>'")
    elif isinstance(username, str) and isinstance(password, str):
        user = lab_users.login(username, password)
    else:
        raise ApiError(401, "authentication required: send a token, HTTP Basic username:password, "
                            "or {\"username\": ..., \"password\": ...}")
    if user is None:
        raise ApiError(401, "wrong username, password or token")
    return user


@routes.delete("/tokens/<token_id>", auth="user")
def delete_token(token_id: str) -> HTTPResponse:
    lab_users.delete_token(token_id, current_user())
    return _no_content()
