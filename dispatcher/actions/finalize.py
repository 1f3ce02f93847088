"""finalize: always the last action. Undo user commands, switch a board off (``power_off``),
stop the DUT's console process (QEMU is killed with its process group), leave a MultiNode
group, remove the job's folder in the TFTP root and its scratch directory. Every step runs even when an earlier one
failed; a failed power-off is then the job's infrastructure error (the board may still be on)."""

from __future__ import annotations

import shutil

from ..context import JobContext
from ..errors import DutlabError
from ..pipeline import Action
from .command import run_host_command
from .multinode import leave
from .power import power_off


class Finalize(Action):
    name = "finalize"
    description = "stop QEMU or disconnect, undo user commands, remove temporary files"
    summary = "finalize"

    def run(self, ctx: JobContext) -> None:
        for command in reversed(ctx.undo_commands):
            try:
                run_host_command(ctx, command)
            except Exception as exc:  # noqa: BLE001 - every undo and the cleanup below must still run
                ctx.logger.error(f"undo failed: {exc}")
        ctx.undo_commands.clear()
        failed: DutlabError | None = None
        try:
            power_off(ctx)
        except DutlabError as exc:  # raised after the cleanup; the pipeline logs it
            failed = exc
        self._close_console(ctx)
        leave(ctx)
        if ctx.tftp is not None:
            shutil.rmtree(ctx.tftp.folder, ignore_errors=True)  # the job's files in the TFTP root
            ctx.logger.info(f"removed {ctx.tftp.folder}")
            ctx.tftp = None
        shutil.rmtree(ctx.tmp_dir, ignore_errors=True)
        ctx.logger.info(f"removed {ctx.tmp_dir}")
        if failed is not None:
            raise failed

    def _close_console(self, ctx: JobContext) -> None:
        console = ctx.console
        if console is None:
            return
        alive = console.alive()
        status = console.close()
        state = "stopped" if alive else "had already exited"
        ctx.logger.info(f"{console.name} (pid {console.pid}) {state}, exit status {status}")
        ctx.console = None
