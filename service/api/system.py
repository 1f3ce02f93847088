"""System information: version, who am I."""

from __future__ import annotations

from dutlab.dispatcher.protocol import PROTOCOL

from .. import __version__
from ..plugins import current_user
from . import Routes

routes = Routes("/api/v1/system")


@routes.get("/version")
def version() -> dict:
    return {"version": __version__, "api_version": 1, "worker_protocol": PROTOCOL}


@routes.get("/whoami")
def whoami() -> dict:
    user = current_user()
    return {"username": user.username if user else None}
