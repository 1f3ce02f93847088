"""scheduler.tags.*: device tags, over lab/tags.py."""

from __future__ import annotations

from ..errors import ApiError
from ..lab import tags
from . import BAD_REQUEST, CONFLICT, Call, Fault, exposed, string


@exposed("scheduler.tags.list")
def list_tags(call: Call) -> list:
    """[{name, description}] of every tag."""
    return [tags.tag_json(t) for t in tags.list_tags()]


@exposed("scheduler.tags.show")
def show(call: Call, name: str) -> dict:
    """{name, description, devices} of one tag."""
    return tags.tag_json(tags.get_tag(string(name, "name")), devices=True)


@exposed("scheduler.tags.add")
def add(call: Call, name: str, description: str | None = None) -> None:
    """Create a tag."""
    call.require("lava_scheduler_app.add_tag")
    try:
        tags.create_tag({"name": string(name, "name"), "description": description})
    except ApiError as exc:
        if exc.status == CONFLICT:  # LAVA answers a duplicate with a 400
            raise Fault(BAD_REQUEST, f"Bad request: {exc.message}") from None
        raise


@exposed("scheduler.tags.delete")
def delete(call: Call, name: str) -> None:
    """Delete a tag (devices and jobs lose it)."""
    call.require("lava_scheduler_app.delete_tag")
    tags.delete_tag(string(name, "name"))
