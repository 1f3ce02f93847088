"""test with definitions: run the overlay's tests on the DUT's shell and read the results.

The deploy built the overlay from the definitions (actions/overlay.py); the block check here
covers the definitions themselves (``from: inline | git | url``) and the inline test
definition documents.

On the DUT: make sure /lava-<id> is there (already in the initramfs, or mount the overlay
drive found by its label, or, for a shell without block devices, send it as base64 over
the console), then run ``lava-test-runner /lava-<id>/<stage>`` and read the console until
``<LAVA_TEST_RUNNER EXIT>``.
"""

from __future__ import annotations

import base64
import io
import re
import shlex
import tarfile
from pathlib import Path
from typing import Any

from ..console import ConsoleEOF
from ..context import JobContext
from ..errors import InfrastructureError, JobTimeout
from ..multinode import parse_request
from ..pipeline import Action, hms
from ..schema.common import (
    ACTION_FIELDS,
    ANY_MAPPING,
    COMPRESSION,
    HEADERS,
    NAME,
    PARAMETERS,
    STRINGS,
    boolean,
    choice,
    dict_of,
    fail,
    join,
    kind_of,
    list_of,
    mapping,
    one_of,
    regex,
    string,
    url,
)
from .common import shell_command, wait_for_prompt
from .multinode import answer
from .signals import SignalReader

OVERLAY_READY = r"DUTLAB_OVERLAY=(ok|missing)"
B64_LINE = 76
HEREDOC_END = "DUTLAB_OVERLAY_END"

# -- the block check --------------------------------------------------------------------------


def _testdef_name(value: Any, path: str) -> None:
    NAME(value, path)
    if value == "lava":
        fail(path, "The name 'lava' is reserved for the job's own results; choose another.")


_TESTDEF = mapping(
    {"metadata": mapping({"format": choice("Lava-Test Test Definition 1.0"), "name": string(),
                          "description": string(), "maintainer": STRINGS, "os": STRINGS,
                          "scope": STRINGS, "devices": STRINGS, "environment": STRINGS},
                         required=("format", "name")),
     "install": ANY_MAPPING, "run": mapping({"steps": list_of(string())}, required=("steps",)),
     "parse": mapping({"pattern": regex, "fixupdict": dict_of(string())}),
     "params": PARAMETERS, "parameters": PARAMETERS, "expected": STRINGS},
    required=("metadata",),
)
_DEFINITION_COMMON = {
    "from": string(), "name": _testdef_name, "path": string(), "parameters": PARAMETERS,
    "params": PARAMETERS, "expected": STRINGS, "lava-signal": choice("kmsg", "stdout"),
    "skip_install": list_of(choice("keys", "sources", "deps", "steps", "git-repos", "all")),
}
_DEFINITION_REQUIRED = ("repository", "name", "path")
_SOURCES = {
    "git": mapping({**_DEFINITION_COMMON, "repository": string(), "branch": string(),
                    "revision": string(), "history": boolean, "recursive": boolean},
                   _DEFINITION_REQUIRED),
    "url": mapping({**_DEFINITION_COMMON, "repository": url(), "headers": HEADERS, "compression": COMPRESSION},
                   _DEFINITION_REQUIRED),
    "inline": mapping({**_DEFINITION_COMMON, "repository": _TESTDEF}, _DEFINITION_REQUIRED),
}


def _definition(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        fail(path, f"A test definition is a mapping, got {kind_of(value)}.")
    if "from" not in value:
        fail(join(path, "from"), f"The required key 'from' is missing; use one of: {one_of(_SOURCES)}.")
    source = value["from"]
    if not isinstance(source, str) or source not in _SOURCES:
        fail(join(path, "from"), f"Test definitions come from {one_of(_SOURCES)}; got {source!r}.")
    _SOURCES[source](value, path)


def _unique_names(items: list[dict[str, Any]], path: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item["name"] in seen:
            fail(f"{path}[{index}].name", f"The name {item['name']!r} is used twice in this test action; "
                                          "names must be unique.")
        seen.add(item["name"])


def _definitions(value: Any, path: str) -> None:
    list_of(_definition, min_items=1)(value, path)
    _unique_names(value, path)


KIND, METHOD = "test", "definitions"
SCHEMA = mapping({**ACTION_FIELDS, METHOD: _definitions}, required=(METHOD,))


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    if METHOD not in params:
        return False, f"{METHOD}: the test block has no {METHOD} list"
    return True, ""


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    return TestShell(params)


class TestShell(Action):
    __test__ = False  # not a pytest test class
    name = "lava-test-shell"
    description = "run the test definitions of one test action on the DUT's shell"
    summary = "test shell"

    def validate(self, ctx: JobContext) -> list[str]:
        kinds = [next(iter(item)) for item in ctx.job.get("actions") or []]
        before = kinds[:kinds.index("test")] if "test" in kinds else kinds
        problems = []
        if "deploy" not in before:
            problems.append("a test action needs a deploy action before it (deploy builds the test overlay)")
        if "boot" not in before:
            problems.append("a test action needs a boot action before it to reach a shell")
        return problems

    def run(self, ctx: JobContext) -> None:
        if ctx.overlay is None or ctx.console is None:
            raise InfrastructureError("lava-test-shell: no overlay or no console (deploy and boot must run first)")
        stage = ctx.test_stage
        ctx.test_stage += 1
        delay = (ctx.device.get("character_delays") or {}).get("test")
        ctx.console.character_delay = float(delay) / 1000 if delay else 0.0
        ensure_overlay(ctx)
        lava = ctx.overlay.dut_path
        shell = ctx.constant("posix", "lava_test_sh_cmd", default="/bin/sh")
        ctx.console.sendline(f"export SHELL={shell}; . {lava}/environment; {lava}/bin/lava-test-runner {lava}/{stage}")
        reader = SignalReader(ctx.logger, ctx.overlay.runs, stage)
        self._read(ctx, reader)
        wait_for_prompt(ctx, self.name)

    def _read(self, ctx: JobContext, reader: SignalReader) -> None:
        console = ctx.console
        while True:
            if ctx.remaining() <= 0:
                running = reader.current or "no test run started"
                raise JobTimeout(f"lava-test-shell timed out after {hms(self.timeout)} ({running}; last console "
                                 f"lines: {' | '.join(console.tail(3))})")
            try:
                line = console.readline(timeout=ctx.wait_timeout())
            except ConsoleEOF:
                reader.close_run()
                raise console.closed_error(f"during the test shell ({reader.current or 'between runs'})") from None
            request = parse_request(line) if line is not None and ctx.multinode is not None else None
            if request is not None:  # lava-send, lava-wait...: the coordinator answers, we type it
                answer(ctx, request, reader.current)
            elif line is not None and reader.feed(line):
                return


def ensure_overlay(ctx: JobContext) -> None:
    """Make /lava-<id> exist on the DUT: in the initramfs, on the overlay drive, or sent over."""
    overlay = ctx.overlay
    lava = overlay.dut_path
    probe = f"[ -x {lava}/bin/lava-test-runner ] && echo DUTLAB_OVERLAY''=ok || echo DUTLAB_OVERLAY''=missing"
    if overlay.image is not None and not overlay.in_ramdisk:
        probe = f"{_mount_command(lava, overlay.label)}; {probe}"
    found = shell_command(ctx, probe, OVERLAY_READY, "finding the test overlay").group(1)
    wait_for_prompt(ctx, "finding the test overlay")
    if found == "ok":
        return
    ctx.logger.info(f"no overlay drive on the DUT: sending {lava} over the serial console")
    _send_over_console(ctx)


def _mount_command(lava: str, label: str) -> str:
    # The drive is found by its filesystem label (findfs), else by trying each disk for our tree.
    candidates = "/dev/vd? /dev/sd? /dev/hd? /dev/xvd?"
    return (f"mkdir -p {lava}; d=$(findfs LABEL={label} 2>/dev/null); "
            f"for b in $d {candidates}; do [ -x {lava}/bin/lava-test-runner ] && break; "
            f"[ -b \"$b\" ] || continue; mount -t ext2 \"$b\" {lava} 2>/dev/null || continue; "
            f"[ -x {lava}/bin/lava-test-runner ] || umount {lava}; done")


def _send_over_console(ctx: JobContext) -> None:
    """Fallback for shells without a block device: a base64 tarball typed into a heredoc."""
    overlay, console = ctx.overlay, ctx.console
    lava = overlay.dut_path
    encoded = base64.b64encode(_tarball(overlay.root)).decode()
    console.sendline(f"mkdir -p {lava} && base64 -d > /tmp/dutlab-overlay.tgz << '{HEREDOC_END}'")
    for start in range(0, len(encoded), B64_LINE):
        chunk = encoded[start:start + B64_LINE]
        console.sendline(chunk, log=False)
        # Wait for the echo so neither side's tty buffer fills up while we type.
        console.expect([_echo_pattern(chunk)], timeout=ctx.wait_timeout())
    ctx.logger.input(f"[{len(encoded)} characters of base64 overlay]")
    command = (f"{HEREDOC_END}\ntar -xzf /tmp/dutlab-overlay.tgz -C {shlex.quote(lava)} && rm /tmp/dutlab-overlay.tgz"
               f" && echo DUTLAB_OVERLAY''=ok || echo DUTLAB_OVERLAY''=missing")
    if shell_command(ctx, command, OVERLAY_READY, "unpacking the test overlay").group(1) != "ok":
        raise InfrastructureError(f"the test overlay could not be unpacked in {lava} on the DUT "
                                  "(needs base64 and tar -z on the DUT)")
    wait_for_prompt(ctx, "unpacking the test overlay")


def _echo_pattern(chunk: str) -> str:
    return re.escape(chunk[-16:])


def _tarball(root: Path) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        archive.add(root, arcname=".")
    return data.getvalue()
