"""Deploy-side test shell work: fetch test definitions, write run.sh, pack the overlay.

Test definitions are numbered across the whole job (``<index>_<name>``, LAVA's TESTRUN_ID)
and grouped in one stage per test action (``/lava-<id>/<stage>``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import download, overlay
from ..context import JobContext, Overlay
from ..errors import InfrastructureError, JobError
from ..pipeline import Action

TESTDEF_FORMAT = "Lava-Test Test Definition 1.0"


@dataclass
class PlannedTest:
    stage: int
    index: int
    definition: dict[str, Any]

    @property
    def run_id(self) -> str:
        return f"{self.index}_{self.definition['name']}"

    def relative_dir(self) -> str:
        return f"{self.stage}/tests/{self.run_id}"


def plan_tests(ctx: JobContext) -> list[PlannedTest]:
    planned, index = [], 0
    for stage, block in enumerate(ctx.test_actions()):
        for definition in block.get("definitions") or []:
            planned.append(PlannedTest(stage, index, definition))
            index += 1
    return planned


def overlay_actions(ctx: JobContext, deploy: dict[str, Any]) -> list[Action]:
    """``lava-overlay`` (with one fetch action per definition) and the packing action."""
    top = lava_overlay(ctx, deploy)
    if top is None:
        return []
    ramdisk = next((name for name, image in (deploy.get("images") or {}).items()
                    if (image.get("overlays") or {}).get("lava")), None)
    return [top, ApplyOverlayRamdisk(deploy, ramdisk) if ramdisk else ApplyOverlayImage(deploy)]


def lava_overlay(ctx: JobContext, deploy: dict[str, Any]) -> LavaOverlay | None:
    """``lava-overlay`` with one fetch action per definition (None: the job has no tests).

    A deploy method that packs the overlay its own way adds its packing action after it.
    """
    if not ctx.test_actions():
        return None
    planned = plan_tests(ctx)
    top = LavaOverlay(deploy, planned)
    kinds = {"inline": InlineRepo, "git": GitRepo, "url": UrlRepo}
    top.children = [kinds[p.definition.get("from", "inline")](deploy, p) for p in planned]
    return top


class LavaOverlay(Action):
    name = "lava-overlay"
    description = "build the /lava-<id> tree: helper scripts, environment, one stage per test action"
    summary = "test shell overlay"

    def __init__(self, params: dict[str, Any], planned: list[PlannedTest]) -> None:
        super().__init__(params)
        self.planned = planned

    def run(self, ctx: JobContext) -> None:
        root = ctx.tmp_dir / "overlay" / "root"
        shutil.rmtree(root, ignore_errors=True)
        shell = ctx.constant("posix", "lava_test_sh_cmd", default="/bin/sh")
        overlay.write_scripts(root, shell)
        group = ctx.multinode
        if group is not None:  # a MultiNode job: the API scripts and its group, as group_data answered
            overlay.write_scripts(root, shell, overlay.MULTINODE_SCRIPT_NAMES)
            overlay.write_group(root, str(ctx.job_id), group.role, group.roles)
        overlay.write_environment(root, _environment(ctx), ctx.job.get("secrets") or {},
                                  unset=ctx.env_dut.get("removes") or [])
        ctx.overlay = Overlay(root=root, dut_path=ctx.results_dir, label=f"lava-{ctx.job_id}")
        for stage in range(len(ctx.test_actions())):
            dirs = [f"{ctx.results_dir}/{p.relative_dir()}" for p in self.planned if p.stage == stage]
            ctx.overlay.stages.append(dirs)
            (root / str(stage)).mkdir(parents=True)
            (root / str(stage) / "lava-test-runner.conf").write_text("".join(d + "\n" for d in dirs))


def _environment(ctx: JobContext) -> dict[str, Any]:
    variables: dict[str, Any] = {
        "LAVA_JOB_ID": ctx.job_id,
        "LAVA_DEVICE_HOSTNAME": ctx.device.get("hostname", ""),
        "LAVA_DEVICE_TYPE": ctx.device.get("devicetype") or ctx.job.get("device_type", ""),
        "LAVA_JOB_TAGS": " ".join(map(str, ctx.job.get("tags") or [])),
    }
    variables.update(ctx.device.get("environment") or {})
    # the worker's env-dut.yaml (the server sends it), then the job's own environment
    for name in ctx.env_dut.get("removes") or []:
        variables.pop(name, None)
    variables.update(ctx.env_dut.get("overrides") or {})
    variables.update(ctx.job.get("environment") or {})
    return variables


# -- one action per test definition ----------------------------------------------------------

class InlineRepo(Action):
    name = "inline-repo-action"
    description = "write a test definition given inline in the job"
    summary = "inline test definition"

    def __init__(self, params: dict[str, Any], planned: PlannedTest) -> None:
        super().__init__(params)
        self.planned = planned

    def run(self, ctx: JobContext) -> None:
        if ctx.overlay is None:
            raise InfrastructureError(f"{self.name}: lava-overlay did not run")
        dest = ctx.overlay.root / self.planned.relative_dir()
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        testdef, meta = self.fetch(ctx, dest)
        _check_testdef(testdef, self.planned)
        self.write(ctx, dest, testdef, meta)
        ctx.logger.info(f"{self.planned.run_id}: {meta['repository']} {meta['path']} "
                        f"(revision {meta['revision']})")

    def fetch(self, ctx: JobContext, dest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        definition = self.planned.definition
        return definition["repository"], {"repository": "inline", "path": definition.get("path", ""),
                                          "revision": "unspecified"}

    def write(self, ctx: JobContext, dest: Path, testdef: dict[str, Any], meta: dict[str, Any]) -> None:
        definition = self.planned.definition
        dut_dir = f"{ctx.results_dir}/{self.planned.relative_dir()}"
        uuid = f"{ctx.job_id}_{self.level}"
        preamble = overlay.shell_assignments(testdef.get("params"), testdef.get("parameters"),
                                             definition.get("parameters"), definition.get("params"))
        preamble += _signal_settings(ctx, definition)
        steps = (testdef.get("run") or {}).get("steps") or []
        (dest / "uuid").write_text(uuid + "\n")
        (dest / "testdef.yaml").write_text(yaml.safe_dump(testdef, sort_keys=False))
        (dest / "run.sh").write_text(overlay.run_script(self.planned.run_id, dut_dir, f"{ctx.results_dir}/bin",
                                                        steps, preamble))
        install = _install_steps(ctx, testdef, definition.get("skip_install") or [])
        if install:
            (dest / "install.sh").write_text(overlay.install_script(install, preamble))
        ctx.overlay.runs[self.planned.run_id] = {
            **meta, "uuid": uuid, "parse": testdef.get("parse") or {},
            "expected": list(definition.get("expected") or testdef.get("expected") or []),
        }


class GitRepo(InlineRepo):
    name = "git-repo-action"
    description = "clone a test definition repository at the requested revision"
    summary = "git test definition"

    def fetch(self, ctx: JobContext, dest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        definition = self.planned.definition
        url = str(definition["repository"])
        argv = ["git", "clone", "-q"]
        if definition.get("branch"):
            argv += ["-b", str(definition["branch"])]
        _git(ctx, [*argv, url, str(dest)], InfrastructureError, f"git clone of {url} failed")
        revision = definition.get("revision")
        if revision:
            _git(ctx, ["git", "-C", str(dest), "checkout", "-q", str(revision)], JobError,
                 f"revision {revision} of {url} cannot be checked out")
        commit = _git(ctx, ["git", "-C", str(dest), "rev-parse", "HEAD"], InfrastructureError,
                      f"git rev-parse in the clone of {url} failed").strip()
        if definition.get("history") is False:
            shutil.rmtree(dest / ".git")
        meta = {"repository": url, "path": definition["path"], "revision": revision or commit,
                "commit_id": commit}
        if definition.get("branch"):
            meta["branch"] = definition["branch"]
        return _load_testdef(dest, definition["path"], url), meta


class UrlRepo(InlineRepo):
    name = "url-repo-action"
    description = "download and unpack a test definition tarball"
    summary = "url test definition"

    def fetch(self, ctx: JobContext, dest: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        definition = self.planned.definition
        spec = download.ImageSpec(name=self.planned.run_id, url=str(definition["repository"]),
                                  compression=definition.get("compression"),
                                  headers=dict(definition.get("headers") or {}))
        source = download.fetch(spec, ctx.work_dir / "cache", ctx.tmp_dir, ctx.logger.info, ctx.remaining,
                                ctx.file_roots)
        tarball = download.unpack(spec, source, ctx.tmp_dir / "testdefs")
        try:
            with tarfile.open(tarball, "r:*") as archive:
                archive.extractall(dest, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise JobError(f"{spec.url} is not a usable tar archive: {exc}") from None
        meta = {"repository": spec.url, "path": definition["path"], "revision": "unspecified"}
        return _load_testdef(dest, definition["path"], spec.url), meta


def _git(ctx: JobContext, argv: list[str], error: type[Exception], what: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=max(1.0, ctx.remaining()))
    except FileNotFoundError:
        raise InfrastructureError("git is missing on this worker: install git") from None
    if proc.returncode != 0:
        raise error(f"{what} (exit code {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _load_testdef(root: Path, path: str, source: str) -> dict[str, Any]:
    file = root / path
    if not file.is_file():
        raise JobError(f"the test definition {path} is not in {source}")
    try:
        testdef = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise JobError(f"the test definition {path} in {source} is not valid YAML: {exc}") from None
    if not isinstance(testdef, dict):
        raise JobError(f"the test definition {path} in {source} must be a mapping")
    return testdef


def _check_testdef(testdef: dict[str, Any], planned: PlannedTest) -> None:
    where = f"test definition {planned.definition['name']} ({planned.definition.get('path', '')})"
    metadata = testdef.get("metadata") or {}
    if metadata.get("format") != TESTDEF_FORMAT:
        raise JobError(f"{where}: metadata.format must be {TESTDEF_FORMAT!r}, not {metadata.get('format')!r}")
    if not metadata.get("name"):
        raise JobError(f"{where}: metadata.name is missing")
    steps = (testdef.get("run") or {}).get("steps")
    if steps is not None and not isinstance(steps, list):
        raise JobError(f"{where}: run.steps must be a list of shell commands")


def _install_steps(ctx: JobContext, testdef: dict[str, Any], skip: list[str]) -> list[str]:
    install = testdef.get("install") or {}
    if "all" in skip:
        return []
    unsupported = [key for key in ("deps", "git-repos", "keys", "sources") if install.get(key) and key not in skip]
    if unsupported:
        ctx.logger.warning(f"install {', '.join(unsupported)} of {testdef['metadata']['name']} are not run by "
                           "dutlab (install steps are); use skip_install to silence this")
    return [] if "steps" in skip else [str(step) for step in install.get("steps") or []]


def _signal_settings(ctx: JobContext, definition: dict[str, Any]) -> list[str]:
    lines = []
    if definition.get("lava-signal") == "kmsg":
        lines.append("export KMSG=1")
    delay_ms = (ctx.device.get("character_delays") or {}).get("test")
    if delay_ms:
        lines.append(f"export CHARACTER_DELAY={float(delay_ms) / 1000:g}")
    return lines


# -- packing -------------------------------------------------------------------------------

class ApplyOverlayImage(Action):
    name = "apply-overlay-image"
    description = "pack the overlay into an ext2 image QEMU attaches as an extra drive"
    summary = "overlay drive image"

    def run(self, ctx: JobContext) -> None:
        if ctx.overlay is None:
            raise InfrastructureError(f"{self.name}: lava-overlay did not run")
        image = ctx.tmp_dir / "overlay.ext2"
        image.unlink(missing_ok=True)
        overlay.make_ext2(ctx.overlay.root, image, ctx.overlay.label)
        ctx.overlay.image = image
        ctx.logger.info(f"overlay drive {image} (label {ctx.overlay.label}, {image.stat().st_size} bytes)")


class ApplyOverlayRamdisk(Action):
    name = "apply-overlay-ramdisk"
    description = "append the overlay to the initramfs (overlays: {lava: true})"
    summary = "overlay in the initramfs"

    def __init__(self, params: dict[str, Any], image: str) -> None:
        super().__init__(params)
        self.image = image

    def run(self, ctx: JobContext) -> None:
        if ctx.overlay is None or self.image not in ctx.images:
            raise InfrastructureError(f"{self.name}: the overlay or image {self.image} is missing")
        overlay.append_to_initramfs(ctx.images[self.image], ctx.overlay.root, ctx.overlay.dut_path)
        ctx.overlay.in_ramdisk = True
        ctx.logger.info(f"overlay appended to {self.image} as {ctx.overlay.dut_path}")
