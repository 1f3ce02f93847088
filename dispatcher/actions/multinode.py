"""MultiNode actions of dutlab-run: join the group first, answer the test shell's API calls.

A sub-job's pipeline starts with ``multinode-setup`` (group_data at the coordinator: every member
waits until all joined; its timeout is the protocol's ``timeout``, else 90 s). While a test
action runs, each ``<LAVA_MULTI_NODE> ...`` request on the console becomes one coordinator call
(``answer``): its reply is typed back, and the call is recorded as test case
``multinode-<api>-<message id>`` of the running definition. A call that gets no answer within
the protocol timeout ends the job (MultinodeTimeout); a refused call (nack) only fails its case
and the DUT's script. Finalize leaves the group (``leave``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..context import JobContext
from ..coordinator_client import LAVA_CONFIG, CoordinatorError, CoordinatorTimeout, load_endpoint
from ..errors import InfrastructureError, MultinodeTimeout
from ..multinode import SETUP_TIMEOUT, Group, Request
from ..pipeline import Action, hms
from ..schema.common import timeout_seconds
from ..settings_file import SettingsError


def is_sub_job(job: dict[str, Any]) -> bool:
    proto = (job.get("protocols") or {}).get("lava-multinode")
    return isinstance(proto, dict) and "target_group" in proto


def group_actions(ctx: JobContext, actions: list[Action]) -> list[Action]:
    """The job's top-level actions, with multinode-setup first for a MultiNode sub-job."""
    if not is_sub_job(ctx.job):
        return actions
    proto = ctx.job["protocols"]["lava-multinode"]
    seconds = timeout_seconds(proto["timeout"]) if proto.get("timeout") else int(SETUP_TIMEOUT)
    return [MultinodeSetup({"timeout": {"seconds": seconds}}), *actions]


class MultinodeSetup(Action):
    name = "multinode-setup"
    description = "join the MultiNode group at the coordinator and wait until every member has joined"
    summary = "MultiNode group set-up"

    def run(self, ctx: JobContext) -> None:
        path = ctx.coordinator or Path(LAVA_CONFIG)
        if not path.exists():
            raise InfrastructureError(f"Missing coordinator configuration: {path} does not exist (dutlab-worker: "
                                      "set 'coordinator' in worker.yaml; dutlab-run: --coordinator FILE)")
        try:
            endpoint = load_endpoint(path)
        except SettingsError as exc:
            raise InfrastructureError(f"coordinator configuration: {exc}") from None
        group = Group.of_job(ctx.job, ctx.job_id, endpoint)
        assert group is not None  # group_actions adds this action to sub-jobs only
        ctx.multinode = group
        where = f"{endpoint.host}:{endpoint.port}"
        ctx.logger.info(f"MultiNode group {group.name}: joining as {ctx.job_id} ({group.role}), "
                        f"{group.size} members, coordinator {where}")
        try:
            group.join(ctx.remaining())
        except CoordinatorTimeout as exc:
            raise MultinodeTimeout(f"group {group.name} did not come together within {hms(self.timeout)} "
                                   f"(coordinator {where}): {exc}") from None
        except CoordinatorError as exc:
            raise InfrastructureError(f"the coordinator at {where} refused group {group.name}: {exc}") from None
        members = ", ".join(f"{member} ({role})" for member, role in group.roles.items())
        ctx.logger.info(f"MultiNode group {group.name} is complete: {members}")


def answer(ctx: JobContext, request: Request, definition: str | None) -> None:
    """Answer one API call of the DUT: ask the coordinator, type the reply, record the case."""
    group, console = ctx.multinode, ctx.console
    if group is None or console is None:
        raise InfrastructureError(f"LAVA_{request.api} {request.message_id}: this job is not part of a "
                                  "MultiNode group (no lava-multinode protocol)")
    ctx.logger.info(f"MultiNode {request.api.lower()} {request.message_id}"
                    + (f" {' '.join(request.args)}" if request.args else ""))
    result = group.call(request, ctx.remaining())
    if result.reply:
        console.sendline(result.reply)
    record: dict[str, Any] = {"definition": definition or "lava", "case": request.case,
                              "result": "pass" if result.passed else "fail"}
    if result.data:
        record["message"] = result.data
    if result.error:
        record["error"] = result.error
        ctx.logger.error(f"MultiNode {request.api.lower()} {request.message_id} failed: {result.error}")
    ctx.logger.results(record)
    if result.timed_out:
        raise MultinodeTimeout(f"lava-{request.api.lower().replace('_', '-')} {request.message_id} in group "
                               f"{group.name}: {result.error}")


def leave(ctx: JobContext) -> None:
    """Tell the coordinator this job is done with its group (finalize)."""
    group = ctx.multinode
    if group is None:
        return
    problem = group.leave()
    if problem:
        ctx.logger.warning(f"MultiNode group {group.name}: clear_group failed: {problem}")
    else:
        ctx.logger.info(f"MultiNode group {group.name}: left")
