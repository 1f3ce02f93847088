"""Device tags: a job asks for tags, and only a device carrying all of them may run it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import bad_request, conflict
from ..models import Device, DeviceTag, Tag
from .checks import check_fields, insert, lookup, name, text


def tag_json(tag: Tag, devices: bool = False) -> dict:
    """The one JSON shape of a tag; `devices` adds the hostnames carrying it."""
    out = {"name": tag.name, "description": tag.description}
    if devices:
        rows = Device.select(Device.hostname).join(DeviceTag).where(DeviceTag.tag == tag).order_by(Device.hostname)
        out["devices"] = [d.hostname for d in rows]
    return out


def get_tag(tag_name: str, path: str | None = None) -> Tag:
    return lookup(Tag, "name", tag_name, "tag", path)


def list_tags() -> list[Tag]:
    return list(Tag.select().order_by(Tag.name))


def create_tag(data: Mapping[str, Any]) -> Tag:
    check_fields(data, ("name", "description"), required=("name",))
    tag_name = name(data["name"], "name", "tag name")
    if Tag.get_or_none(Tag.name == tag_name):
        raise conflict(f"tag '{tag_name}' already exists", "name")
    description = text(data.get("description"), "description")
    return insert(lambda: Tag.create(name=tag_name, description=description), f"tag '{tag_name}'", "name")


def ensure_tags(names: list[str], path: str) -> list[Tag]:
    """The named tags, created when missing (as LAVA's `devices add --tags` does)."""
    tags = []
    for i, tag_name in enumerate(names):
        name(tag_name, f"{path}[{i}]", "tag name")
        tags.append(Tag.get_or_none(Tag.name == tag_name) or
                    insert(lambda n=tag_name: Tag.create(name=n), f"tag '{tag_name}'", f"{path}[{i}]"))
    return tags


def update_tag(tag_name: str, changes: Mapping[str, Any]) -> Tag:
    tag = get_tag(tag_name)
    check_fields(changes, ("name", "description"))
    if "name" in changes and changes["name"] != tag_name:
        raise bad_request("a tag cannot be renamed", "name")
    if "description" in changes:
        Tag.update(description=text(changes["description"], "description")).where(Tag.id == tag.id).execute()
    return Tag.get_by_id(tag.id)


def delete_tag(tag_name: str) -> None:
    get_tag(tag_name).delete_instance()
