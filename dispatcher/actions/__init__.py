"""Job blocks to actions: one module per method, each saying whether it takes a block.

Every method module has ``accepts(device, params) -> (ok, reason)`` and
``build(ctx, params) -> Action``. When no module accepts a block, the error lists every
module's reason, so "why not" is never a guess.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..context import JobContext
from ..errors import JobError
from ..pipeline import Action
from . import boot_minimal, boot_qemu, command, deploy, test_shell

METHODS: dict[str, tuple[ModuleType, ...]] = {
    "deploy": (deploy,),
    "boot": (boot_qemu, boot_minimal),
    "test": (test_shell,),
    "command": (command,),
}


def build_actions(ctx: JobContext) -> list[Action]:
    """One top-level action per job block, in job order; JobError naming every refusal."""
    actions: list[Action] = []
    problems: list[str] = []
    for index, item in enumerate(ctx.job.get("actions") or []):
        (kind, params), = item.items()
        path = f"actions[{index}].{kind}"
        modules = METHODS.get(kind)
        if modules is None:
            problems.append(f"{path}: unknown action; dutlab-run runs {', '.join(METHODS)}")
            continue
        action, reasons = _select(modules, ctx, params)
        if action is None:
            problems.append(f"{path}: no method accepts it: {'; '.join(reasons)}")
        else:
            actions.append(action)
    if problems:
        raise JobError("invalid job: " + "; ".join(problems))
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

