"""What every deploy method that fetches images shares: the ``images:`` check and the downloads.

A deploy block lists named images (``kernel``, ``initrd``, ``rootfs``...); each becomes one
``http-download`` or ``file-download`` child of the deploy action, which fetches, verifies and
unpacks it into the job's scratch space (download.py). The deploy block that comes last before
the first test also builds the test overlay (overlay.py).
"""

from __future__ import annotations

from typing import Any

from .. import download
from ..context import JobContext
from ..pipeline import Action
from ..schema.common import COMPRESSION, HEADERS, Check, boolean, choice, dict_of, hexdigits, mapping, string, url
from .overlay import overlay_actions

#: the keys of one image resource (LAVA's ``url()``), for methods that name their images
IMAGE_FIELDS: dict[str, Check] = {
    "url": url(), "headers": HEADERS, "compression": COMPRESSION,
    "md5sum": hexdigits(32), "sha256sum": hexdigits(64), "sha512sum": hexdigits(128),
}
_IMAGE = mapping(
    {**IMAGE_FIELDS, "image_arg": string(), "format": choice("cpio.newc", "ext4", "tar"),
     "overlays": mapping({"lava": boolean})},
    required=("url",),
)
#: the check of a deploy block's ``images:``
IMAGES = dict_of(_IMAGE, min_items=1, key_pattern=r"[A-Za-z0-9_-]+",
                 key_hint="image names are used as {name} in image_arg (letters, digits, '-', '_')")


def with_images(ctx: JobContext, params: dict[str, Any], top: Action) -> Action:
    """``top`` with one download child per image, then the overlay actions when it carries them."""
    for name, image in (params.get("images") or {}).items():
        top.children.append(download_action(params, name, image))
    if carries_overlay(ctx, params):
        top.children += overlay_actions(ctx, params)
    return top


def download_action(params: dict[str, Any], name: str, image: dict[str, Any]) -> HttpDownload:
    """The download child for one image resource of the block ``params``."""
    scheme = download.ImageSpec.from_job(name, image).scheme
    return FileDownload(params, name, image) if scheme == "file" else HttpDownload(params, name, image)


def carries_overlay(ctx: JobContext, params: dict[str, Any]) -> bool:
    """Whether the deploy block ``params`` is the one that builds the test overlay."""
    return params is _overlay_deploy(ctx)


def _overlay_deploy(ctx: JobContext) -> dict[str, Any] | None:
    """The deploy block that carries the overlay: the last one before the first test."""
    chosen = None
    for item in ctx.job.get("actions") or []:
        if "test" in item:
            break
        if "deploy" in item:
            chosen = item["deploy"]
    return chosen


class ImagesDeploy(Action):
    """The top action of a deploy that fetches images; a subclass names the method."""

    def run(self, ctx: JobContext) -> None:
        # A retried deploy starts from scratch.
        ctx.images.clear()
        ctx.image_args.clear()
        ctx.overlay = None


class HttpDownload(Action):
    name = "http-download"
    description = "fetch one image over HTTP(S) (or from the worker cache), verify and unpack it"
    summary = "download an image"

    def __init__(self, params: dict[str, Any], image: str, resource: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.image = image
        #: the image's mapping in the job (``images.<name>``, or a method's own key such as ``kernel``)
        self.resource = resource if resource is not None else params["images"][image]
        self.spec = download.ImageSpec.from_job(image, self.resource)

    def validate(self, ctx: JobContext) -> list[str]:
        return download.validate_image(self.spec)

    def run(self, ctx: JobContext) -> None:
        source = download.fetch(self.spec, ctx.work_dir / "cache", ctx.tmp_dir, ctx.logger.info, ctx.remaining,
                                ctx.file_roots)
        path = download.unpack(self.spec, source, ctx.tmp_dir / "images")
        ctx.images[self.image] = path
        image_arg = self.resource.get("image_arg")
        if image_arg:
            ctx.image_args.append(str(image_arg))
        ctx.logger.info(f"{self.image}: {path} ({path.stat().st_size} bytes)")
        self.results = {"label": self.image, "url": self.spec.url, "size": path.stat().st_size}


class FileDownload(HttpDownload):
    name = "file-download"
    description = "copy one image from a file on the worker, verify and unpack it"
