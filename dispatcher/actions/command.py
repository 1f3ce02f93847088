"""command: run one of the device's user commands on the worker (``commands.users.<name>``).

``do`` runs now; its ``undo`` runs in finalize, whatever happens to the job.
"""

from __future__ import annotations

import subprocess
from typing import Any

from ..context import JobContext
from ..errors import InfrastructureError
from ..pipeline import Action
from ..schema.common import ACTION_FIELDS, mapping, string

#: a command block has one form, so its method is the kind itself
KIND, METHOD = "command", "command"
SCHEMA = mapping({"name": string(), **ACTION_FIELDS}, required=("name",))


def accepts(device: dict[str, Any], params: dict[str, Any]) -> tuple[bool, str]:
    if "name" not in params:
        return False, "command: needs name"
    return True, ""


def build(ctx: JobContext, params: dict[str, Any]) -> Action:
    return UserCommand(params)


def user_commands(device: dict[str, Any]) -> dict[str, Any]:
    return ((device.get("commands") or {}).get("users")) or {}


class UserCommand(Action):
    name = "user-command"
    description = "run a command the device configuration defines under commands.users"
    summary = "user command"

    def validate(self, ctx: JobContext) -> list[str]:
        wanted = self.params.get("name")
        known = user_commands(ctx.device)
        if wanted not in known:
            return [f"the device has no user command {wanted!r} (it has: {', '.join(known) or 'none'})"]
        if not (known[wanted] or {}).get("do"):
            return [f"user command {wanted!r} has no 'do' command in the device configuration"]
        return []

    def run(self, ctx: JobContext) -> None:
        entry = user_commands(ctx.device)[self.params["name"]]
        if entry.get("undo"):
            ctx.undo_commands.append(str(entry["undo"]))
        run_host_command(ctx, str(entry["do"]))


def run_host_command(ctx: JobContext, command: str) -> None:
    """Run a shell command on the worker; a non-zero exit is an InfrastructureError."""
    ctx.logger.info(f"running on the worker: {command}")
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, text=True,  # noqa: S602 - admin's command
                              timeout=max(1.0, ctx.remaining()))
    except subprocess.TimeoutExpired:
        raise InfrastructureError(f"{command!r} did not finish within {ctx.remaining():.0f} s") from None
    for line in (proc.stdout + proc.stderr).splitlines():
        ctx.logger.debug(line)
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-300:] or proc.stdout.strip()[-300:]
        raise InfrastructureError(f"{command!r} failed with exit code {proc.returncode}"
                                  + (f": {tail}" if tail else " and printed nothing"))

