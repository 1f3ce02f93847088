"""The OpenAPI 3 document of /api/v1, generated from the installed routes.

Paths, methods, path parameters and who may call each come from the route table itself, so the
document cannot drift from what the server serves.
"""

from __future__ import annotations

import inspect
import re

from bottle import request

from .. import __version__
from . import Routes

routes = Routes("/api/v1")
WILDCARD = re.compile(r"<([a-zA-Z_][a-zA-Z_0-9]*)(?::([a-z]+))?>")
SECURITY = {"user": [{"token": []}], "owner": [{"token": []}], "admin": [{"token": []}],
            "public": [{"token": []}, {}]}
#: what each kind means, as the operation's description says it
MEANING = {"public": "Anyone; a token only identifies the caller.", "user": "Any user with a token.",
           "owner": "A user who owns the object (its owner user or a member of its owner group), or an admin.",
           "admin": "A superuser or a member of a group with the admin permission."}


def _operation(route) -> dict:
    kind = route.config.get("auth", "public")
    doc = inspect.getdoc(route.callback) or route.callback.__name__.replace("_", " ")
    params = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "integer" if flt == "int" else "string"}}
        for name, flt in WILDCARD.findall(route.rule)
    ]
    op = {
        "operationId": f"{route.method.lower()}_{route.callback.__name__}",
        "summary": doc.splitlines()[0],
        "parameters": params,
        "security": SECURITY.get(kind, []),
        "responses": {
            "200": {"description": "OK"},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
        },
    }
    if route.method in ("POST", "PUT", "PATCH"):
        op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    op["x-dutlab-auth"] = kind
    op["description"] = MEANING.get(kind, "")
    if route.config.get("access"):
        op["x-dutlab-access"] = route.config["access"]
        op["description"] += f" Narrowed by the handler: {route.config['access']}."
    return op


@routes.get("/openapi.json")
def openapi() -> dict:
    """This document."""
    paths: dict = {}
    for route in request.app.routes:
        if not route.rule.startswith("/api/v1"):
            continue
        path = WILDCARD.sub(lambda m: "{" + m.group(1) + "}", route.rule)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "dutlab REST API", "version": __version__,
                 "description": "Lab server API. Errors are JSON {error, path}. Workers use /internal/v1 "
                                "(docs/worker-api.md), lavacli uses /RPC2."},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "Authorization",
                                          "description": "Token <secret>"}},
            "responses": {"Error": {"description": "A client error", "content": {"application/json": {
                "schema": {"type": "object", "required": ["error", "path"],
                           "properties": {"error": {"type": "string"}, "path": {"type": "string"}}}}}}},
        },
    }
