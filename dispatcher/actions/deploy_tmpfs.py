"""deploy to: tmpfs: fetch, verify and unpack the images a QEMU boot uses; build the test overlay.

Children: one ``http-download``/``file-download`` per image, then (when the job has test
actions) ``lava-overlay`` and its packing action (images.py).
"""

from __future__ import annotations

from typing import Any

from ..context import JobContext
from ..pipeline import Action
from ..schema.common import ACTION_FIELDS, mapping, string
from .common import selected
from .images import IMAGES, ImagesDeploy, with_images

KIND, METHOD = "deploy", "tmpfs"
SCHEMA = mapping({"to": string(), "images": IMAGES, "os": string(), **ACTION_FIELDS}, ("images",))


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    return selected(device, params, KIND, "to", METHOD)


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    return with_images(ctx, params, DeployImages(params))


class DeployImages(ImagesDeploy):
    name = "deployimages"
    description = "download the images QEMU boots and prepare the test overlay"
    summary = "deploy images to tmpfs"
