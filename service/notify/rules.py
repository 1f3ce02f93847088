"""What the server checks in a `notify` block at submission, beyond the job schema's shape.

The schema (dispatcher/schema/job.py) accepts LAVA's whole block; the server refuses what it
cannot honour, with the path and what to do instead, so a job is not accepted for a notification
that would never be sent.
"""

from __future__ import annotations

from typing import Any

from ..errors import bad_request
from ..models import User


def check_notify(block: Any) -> None:
    """Refuse LAVA query features dutlab has no queries for, unknown users and IRC without a server."""
    if not isinstance(block, dict):
        return
    criteria = block.get("criteria") or {}
    if "dependency_query" in criteria:
        raise bad_request("dutlab has no stored queries, so dependency_query is not supported; "
                          "remove it (or notify on each job)", "notify.criteria.dependency_query")
    if "query" in (block.get("compare") or {}):
        raise bad_request("dutlab has no stored queries, so compare.query is not supported; a regression is "
                          "judged against the previous job with the same name and device type",
                          "notify.compare.query")
    for i, recipient in enumerate(block.get("recipients") or []):
        to = recipient.get("to") or {}
        path = f"notify.recipients[{i}].to"
        username = to.get("user")
        if username and User.get_or_none(User.username == username) is None:
            raise bad_request(f"user '{username}' does not exist", f"{path}.user")
        if to.get("method") == "irc" and not to.get("server"):
            raise bad_request("an IRC recipient needs 'server' (host or host:port): dutlab keeps no IRC "
                              "settings per user", f"{path}.server")
