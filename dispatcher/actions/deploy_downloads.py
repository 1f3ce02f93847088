"""deploy to: downloads: fetch, verify and unpack images on the worker for later actions.

The same children as ``to: tmpfs`` (images.py); LAVA's ``uniquify`` is accepted (each job has
its own scratch directory, so names never collide).
"""

from __future__ import annotations

from typing import Any

from ..context import JobContext
from ..pipeline import Action
from ..schema.common import ACTION_FIELDS, boolean, mapping, string
from .common import selected
from .images import IMAGES, ImagesDeploy, with_images

KIND, METHOD = "deploy", "downloads"
SCHEMA = mapping({"to": string(), "images": IMAGES, "uniquify": boolean, "os": string(), **ACTION_FIELDS},
                 ("images",))


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    return selected(device, params, KIND, "to", METHOD)


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    return with_images(ctx, params, DeployDownloads(params))


class DeployDownloads(ImagesDeploy):
    name = "downloads"
    description = "download images to the worker for later actions"
    summary = "download images"
