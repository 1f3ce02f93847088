"""deploy to: tmpfs | downloads: fetch, verify and unpack images; build the test overlay.

Children of the deploy action: one ``http-download``/``file-download`` per image, then
(when the job has test actions) ``lava-overlay`` and its packing action.
"""

from __future__ import annotations

from typing import Any

from .. import download
from ..context import JobContext
from ..pipeline import Action
from .common import method_offered
from .overlay import overlay_actions

DEPLOY_METHODS = ("tmpfs", "downloads")


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    to = params.get("to")
    if to not in DEPLOY_METHODS:
        return False, f"deploy to: {to!r} is not supported by dutlab-run (it supports {', '.join(DEPLOY_METHODS)})"
    return method_offered(device, "deploy", to)


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    top: Action = DeployImages(params) if params.get("to") == "tmpfs" else DeployDownloads(params)
    for name, image in (params.get("images") or {}).items():
        scheme = download.ImageSpec.from_job(name, image).scheme
        top.children.append(FileDownload(params, name) if scheme == "file" else HttpDownload(params, name))
    if params is _overlay_deploy(ctx):
        top.children += overlay_actions(ctx, params)
    return top


def _overlay_deploy(ctx: JobContext) -> dict[str, Any] | None:
    """The deploy block that carries the overlay: the last one before the first test."""
    chosen = None
    for item in ctx.job.get("actions") or []:
        if "test" in item:
            break
        if "deploy" in item:
            chosen = item["deploy"]
    return chosen


class DeployImages(Action):
    name = "deployimages"
    description = "download the images QEMU boots and prepare the test overlay"
    summary = "deploy images to tmpfs"

    def run(self, ctx: JobContext) -> None:
        # A retried deploy starts from scratch.
        ctx.images.clear()
        ctx.image_args.clear()
        ctx.overlay = None


class DeployDownloads(DeployImages):
    name = "downloads"
    description = "download images to the worker for later actions"
    summary = "download images"


class HttpDownload(Action):
    name = "http-download"
    description = "fetch one image over HTTP(S) (or from the worker cache), verify and unpack it"
    summary = "download an image"

    def __init__(self, params: dict[str, Any], image: str) -> None:
        super().__init__(params)
        self.image = image
        self.spec = download.ImageSpec.from_job(image, params["images"][image])

    def validate(self, ctx: JobContext) -> list[str]:
        return download.validate_image(self.spec)

    def run(self, ctx: JobContext) -> None:
        source = download.fetch(self.spec, ctx.work_dir / "cache", ctx.tmp_dir, ctx.logger.info, ctx.remaining)
        path = download.unpack(self.spec, source, ctx.tmp_dir / "images")
        ctx.images[self.image] = path
        image_arg = self.params["images"][self.image].get("image_arg")
        if image_arg:
            ctx.image_args.append(str(image_arg))
        ctx.logger.info(f"{self.image}: {path} ({path.stat().st_size} bytes)")
        self.results = {"label": self.image, "url": self.spec.url, "size": path.stat().st_size}


class FileDownload(HttpDownload):
    name = "file-download"
    description = "copy one image from a file on the worker, verify and unpack it"
