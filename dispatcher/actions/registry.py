"""The deploy, boot, test and command methods dutlab runs: one module each, listed here once.

A method module has five parts:

* ``KIND`` and ``METHOD``: the job blocks it runs (``"boot"``, ``"qemu"`` for
  ``boot: {method: qemu}``; deploy is selected by ``to:``, test by the key of its list, and a
  command block has one form);
* ``SCHEMA``: the check of such a block, built from ``dispatcher/schema/common.py``;
* ``accepts(device, params) -> (ok, reason)``: whether it runs this block on this device;
* ``build(ctx, params) -> Action``: the block's action with its children;
* the Action classes themselves.

``dispatcher/schema/job.py`` builds its method tables from ``METHODS``, so the server accepts
exactly what dutlab-run can build. Adding a method is a new module, its import and its line in MODULES.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..context import JobContext
from ..errors import InvalidJob
from ..pipeline import Action
from . import (
    boot_minimal,
    boot_qemu,
    boot_uboot,
    command,
    deploy_downloads,
    deploy_tftp,
    deploy_tmpfs,
    test_definitions,
)

#: the job's action kinds, in the order errors list them
KINDS = ("deploy", "boot", "test", "command")
#: every method module; within a kind, the order is the order of "use one of: ..." in errors
MODULES: tuple[ModuleType, ...] = (
    deploy_tmpfs,
    deploy_downloads,
    deploy_tftp,
    boot_qemu,
    boot_minimal,
    boot_uboot,
    test_definitions,
    command,
)
METHODS: dict[str, tuple[ModuleType, ...]] = {
    kind: tuple(module for module in MODULES if kind == module.KIND) for kind in KINDS
}


def build_actions(ctx: JobContext) -> list[Action]:
    """One top-level action per job block, in job order; JobError naming every refusal.

    When no module accepts a block, the error lists every module's reason, so "why not" is
    never a guess.
    """
    actions: list[Action] = []
    problems: list[str] = []
    first = ""
    for index, item in enumerate(ctx.job.get("actions") or []):
        (kind, params), = item.items()
        path = f"actions[{index}].{kind}"
        modules = METHODS.get(kind)
        if modules is None:
            problems.append(f"{path}: unknown action; dutlab-run runs {', '.join(METHODS)}")
            first = first or path
            continue
        action, reasons = _select(modules, ctx, params)
        if action is None:
            problems.append(f"{path}: no method accepts it: {'; '.join(reasons)}")
            first = first or path
        else:
            actions.append(action)
    if problems:
        raise InvalidJob("invalid job: " + "; ".join(problems), first)
    return actions


def _select(modules: tuple[ModuleType, ...], ctx: JobContext,
            params: dict[str, Any]) -> tuple[Action | None, list[str]]:
    reasons = []
    for module in modules:
        ok, reason = module.accepts(ctx.device, params)
        if ok:
            return module.build(ctx, params), []
        reasons.append(reason)
    return None, reasons
