"""The method registry: what the schema accepts is exactly what dutlab-run can build.

A new deploy/boot/test method is one module in dispatcher/actions/ plus its line in
registry.MODULES, and one sample block in SAMPLES below (docs/recipes-dispatcher.md).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from dutlab.dispatcher.actions import registry
from dutlab.dispatcher.context import JobContext
from dutlab.dispatcher.errors import JobError
from dutlab.dispatcher.log import JobLogger
from dutlab.dispatcher.pipeline import Action
from dutlab.dispatcher.schema.common import JobDefinitionError
from dutlab.dispatcher.schema.job import (
    LAVA_BOOT_METHODS,
    LAVA_DEPLOY_METHODS,
    LAVA_TEST_KINDS,
    SUPPORTED,
    validate_job,
)

INLINE = {"from": "inline", "name": "smoke", "path": "inline/smoke.yaml",
          "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
                         "run": {"steps": ["lava-test-case smoke --shell true"]}}}
IMAGES = {"kernel": {"url": "file:///srv/images/vmlinuz", "image_arg": "-kernel {kernel}"}}
#: one valid block per registered method: (kind, method) -> block
SAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("deploy", "tmpfs"): {"to": "tmpfs", "images": IMAGES},
    ("deploy", "downloads"): {"to": "downloads", "images": IMAGES},
    ("boot", "qemu"): {"method": "qemu", "media": "tmpfs", "prompts": ["# "]},
    ("boot", "minimal"): {"method": "minimal", "prompts": ["# "]},
    ("deploy", "tftp"): {"to": "tftp", "kernel": {"url": "file:///srv/images/Image", "type": "image"},
                         "ramdisk": {"url": "file:///srv/images/initramfs.cpio.gz", "compression": "gz"}},
    ("boot", "u-boot"): {"method": "u-boot", "commands": "ramdisk", "prompts": ["# "]},
    ("test", "definitions"): {"definitions": [INLINE]},
    ("command", "command"): {"name": "relay_on"},
}
#: where the schema names the method of a block, for the probes below
SELECTOR = {"deploy": "to", "boot": "method"}


def job_with(kind: str, block: dict[str, Any]) -> dict[str, Any]:
    return {"job_name": "probe", "device_type": "qemu", "timeouts": {"job": {"minutes": 5}},
            "actions": [{kind: block}]}


def registered() -> set[tuple[str, str]]:
    return {(module.KIND, module.METHOD) for module in registry.MODULES}


def first_error(job: dict[str, Any]) -> JobDefinitionError | None:
    try:
        validate_job(job)
    except JobDefinitionError as exc:
        return exc
    return None


@pytest.mark.parametrize("module", registry.MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_method_module_has_its_parts(module):
    assert module.KIND in registry.KINDS
    assert isinstance(module.METHOD, str) and module.METHOD
    assert callable(module.SCHEMA), "SCHEMA: the check of the method's job block"
    for name, params in (("accepts", ["device", "params"]), ("build", ["ctx", "params"])):
        function = getattr(module, name)
        assert list(inspect.signature(function).parameters) == params, f"{name}{params}"
    own_actions = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                   if issubclass(cls, Action) and cls.__module__ == module.__name__]
    assert own_actions, "a method module defines the Action classes it builds"


def test_methods_are_registered_once():
    pairs = [(module.KIND, module.METHOD) for module in registry.MODULES]
    assert len(pairs) == len(set(pairs))
    assert len(registry.METHODS["command"]) == 1  # a command block has one form


def test_schema_tables_are_the_registry():
    assert {kind: tuple(m.METHOD for m in registry.MODULES if kind == m.KIND)
                         for kind in registry.KINDS} == SUPPORTED


@pytest.mark.parametrize("kind", sorted(SELECTOR))
def test_schema_accepts_exactly_the_registered_methods(kind):
    """Probe every LAVA name (and a typo): the schema refuses at the method key unless registered."""
    lava = LAVA_DEPLOY_METHODS if kind == "deploy" else LAVA_BOOT_METHODS
    accepted = set()
    for name in sorted(lava | {m for k, m in registered() if k == kind} | {"no-such-method"}):
        error = first_error(job_with(kind, {SELECTOR[kind]: name}))
        method_path = f"actions[0].{kind}.{SELECTOR[kind]}"
        if error is not None and error.path == method_path:
            what = "a LAVA method dutlab does not support yet" if name in lava else "unknown"
            assert f"The {kind} method {name!r} is {what}; use one of: " in error.message
        else:
            accepted.add(name)
    assert accepted == {m for k, m in registered() if k == kind}


def test_schema_accepts_exactly_the_registered_test_kinds():
    accepted = set()
    for name in sorted(LAVA_TEST_KINDS | {"no-such-kind"}):
        error = first_error(job_with("test", {name: [{}]}))
        if error is not None and error.path == f"actions[0].test.{name}":
            if name in LAVA_TEST_KINDS:
                assert error.message == (f"The LAVA test kind {name!r} is not supported by dutlab yet; "
                                         f"use {', '.join(SUPPORTED['test'])}.")
        else:
            accepted.add(name)
    assert accepted == {m for k, m in registered() if k == "test"}


def test_every_registered_method_has_a_sample():
    assert set(SAMPLES) == registered()


@pytest.mark.parametrize(("kind", "method"), sorted(SAMPLES))
def test_sample_validates_and_builds_with_its_module(kind, method, tmp_path: Path):
    job = job_with(kind, SAMPLES[kind, method])
    if kind == "test":  # a test action runs after a deploy and a boot
        job["actions"][:0] = [{"deploy": SAMPLES["deploy", "tmpfs"]}, {"boot": SAMPLES["boot", "qemu"]}]
    assert validate_job(job) is job
    ctx = JobContext(job_id=1, job=job, device={"hostname": "dut01"}, logger=JobLogger(tmp_path / "output.yaml"),
                     output_dir=tmp_path, work_dir=tmp_path, tmp_dir=tmp_path / "tmp")
    action = registry.build_actions(ctx)[-1]
    module = next(m for m in registry.MODULES if (kind, method) == (m.KIND, m.METHOD))
    assert type(action).__module__ == module.__name__


def test_a_device_that_does_not_offer_a_method_is_refused_with_every_reason(tmp_path: Path):
    job = job_with("boot", SAMPLES["boot", "qemu"])
    device = {"hostname": "board01", "actions": {"boot": {"methods": {"minimal": {}}}}}
    ctx = JobContext(job_id=1, job=job, device=device, logger=JobLogger(tmp_path / "output.yaml"),
                     output_dir=tmp_path, work_dir=tmp_path, tmp_dir=tmp_path / "tmp")
    with pytest.raises(JobError, match="board01 does not offer boot method 'qemu' .*; minimal: not method 'qemu'"):
        registry.build_actions(ctx)
