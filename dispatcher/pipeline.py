"""Actions and the one runner that owns timeouts, retries, error classification and finalize.

A job is a list of top-level actions (one per job block: deploy, boot, test, command), each
with child actions, then ``finalize``. The runner here is the only place that:

* arms deadlines (job timeout, per-action timeout) and turns an expired one into JobTimeout;
* turns SIGTERM/SIGINT into JobCanceled;
* logs ``start:``/``end:`` lines with levels and durations;
* repeats a block ``failure_retry`` times;
* classifies failures (a non-dutlab exception is a Bug) and always runs finalize.

Signals only raise inside action code (see interrupts.py): the runner's own bookkeeping is
never cut in half, so finalize always runs and the result is always written.
"""

from __future__ import annotations

import math
import signal
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import Bug, ConfigurationError, DutlabError, InfrastructureError, InvalidJob, JobCanceled, JobTimeout
from .interrupts import Expired, Interrupts
from .protocol import JobResult
from .schema.common import JobDefinitionError
from .schema.common import timeout_seconds as _mapping_seconds

if TYPE_CHECKING:
    from .context import JobContext

ACTION_TIMEOUT = 30.0  # seconds, when neither the job nor the device says otherwise
FINALIZE_TIMEOUT = 30.0


def timeout_seconds(value: Any, where: str) -> float | None:
    """Seconds in a timeout mapping (``{minutes: 5}``), None when absent."""
    if value is None:
        return None
    try:
        return float(_mapping_seconds(value, where))
    except JobDefinitionError as exc:
        # The job was validated already, so a bad value here comes from the device configuration.
        raise ConfigurationError(f"{where}: {exc.message}") from None


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Action:
    """One step of a job.

    Subclasses set ``name`` (LAVA's name wherever job ``timeouts:`` refer to it),
    ``description`` and ``summary``, and implement ``run``. The runner runs ``run`` and then
    the children, each under its own timeout.

    :param params: the job block this action was built from (shared by its children).
    """

    name: ClassVar[str] = "action"
    description: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = params if params is not None else {}
        self.children: list[Action] = []
        #: "1", "1.2", "1.2.1": position in the pipeline
        self.level = ""
        #: seconds this action may take (per attempt)
        self.timeout = ACTION_TIMEOUT
        #: seconds one wait for the DUT may take
        self.connection_timeout = math.inf
        self.failure_retry = 1
        self.failure_retry_interval = 0.0
        #: a timeout of this (test) block only skips to the next block (``timeout: {skip: true}``)
        self.skip_timeout = False
        #: extra fields for this action's result in the ``lava`` suite (None: no result line)
        self.results: dict[str, Any] | None = None

    def validate(self, ctx: JobContext) -> list[str]:
        """Problems with the job for this action, as sentences; nothing may run yet."""
        return []

    def run(self, ctx: JobContext) -> None:
        """Do the work; raise a DutlabError subclass with the evidence on failure."""

    def cleanup(self, ctx: JobContext) -> None:
        """Undo a failed attempt before a retry (finalize does the end-of-job cleanup)."""


class Pipeline:
    """Builds levels and timeouts for the top-level actions, validates and runs them.

    :param actions: top-level actions, each with the job block it came from in ``params``.
    :param finalize: the action that always runs last, whatever happened.
    """

    def __init__(self, ctx: JobContext, actions: list[Action], finalize: Action) -> None:
        self.ctx = ctx
        self.actions = actions
        self.finalize = finalize
        job_timeouts = ctx.job.get("timeouts") or {}
        self.job_timeout = timeout_seconds(job_timeouts.get("job"), "timeouts.job") or math.inf
        self._interrupts = Interrupts()
        self._current: Action | None = None
        for index, action in enumerate(actions, start=1):
            self._assign(action, str(index), action.params, top=True)
        self._assign(finalize, str(len(actions) + 1), {}, top=True)
        finalize.timeout = FINALIZE_TIMEOUT

    # -- timeouts ---------------------------------------------------------------------------

    def _assign(self, action: Action, level: str, block: dict[str, Any], top: bool) -> None:
        action.level = level
        action.timeout = self._action_timeout(action.name, block)
        action.connection_timeout = self._connection_timeout(action.name, block)
        if top:
            action.failure_retry = int(block.get("failure_retry") or 1)
            action.failure_retry_interval = float(block.get("failure_retry_interval") or 0)
            # LAVA shares a block's timeout between its attempts.
            action.timeout /= action.failure_retry
            action.skip_timeout = bool((block.get("timeout") or {}).get("skip"))
        for index, child in enumerate(action.children, start=1):
            self._assign(child, f"{level}.{index}", block, top=False)

    def _action_timeout(self, name: str, block: dict[str, Any]) -> float:
        """LAVA's order, lowest first: job action, device action, block, job named, block named."""
        job = self.ctx.job.get("timeouts") or {}
        device = self.ctx.device.get("timeouts") or {}
        candidates = (
            ("timeouts.action", job.get("action")),
            (f"device timeouts.actions.{name}", (device.get("actions") or {}).get(name)),
            ("block timeout", block.get("timeout")),
            (f"timeouts.actions.{name}", (job.get("actions") or {}).get(name)),
            (f"block timeouts.{name}", (block.get("timeouts") or {}).get(name)),
        )
        return _last_set(candidates, ACTION_TIMEOUT)

    def _connection_timeout(self, name: str, block: dict[str, Any]) -> float:
        job = self.ctx.job.get("timeouts") or {}
        device = self.ctx.device.get("timeouts") or {}
        candidates = (
            ("timeouts.connection", job.get("connection")),
            (f"device timeouts.connections.{name}", (device.get("connections") or {}).get(name)),
            (f"timeouts.connections.{name}", (job.get("connections") or {}).get(name)),
        )
        return _last_set(candidates, math.inf)

    # -- validation and description ---------------------------------------------------------

    def validate(self, host_checks: bool = True) -> None:
        """Ask every action; raise one InvalidJob listing every problem, before anything runs
        (`host_checks`: see `problems`)."""
        problems = self.problems(host_checks)
        if problems:
            raise InvalidJob("invalid job: " + "; ".join(text for _, text in problems), self._path(problems[0][0]))

    def _path(self, action: Action) -> str:
        """The job block a (top-level or child) action was built from: ``actions[1].test``."""
        index = int(action.level.split(".")[0]) - 1
        blocks = self.ctx.job.get("actions") or []
        return f"actions[{index}].{next(iter(blocks[index]))}" if 0 <= index < len(blocks) else "actions"

    def problems(self, host_checks: bool = True) -> list[tuple[Action, str]]:
        """Each action's problems with the job, as (action, "<level> <name>: <sentence>").

        An action returns the job's problems and raises for the lab's (a program missing on the
        worker, a device configuration it cannot use). Without `host_checks` (the server, which
        is not the worker) those raised ones are left to the worker that runs the job.
        """
        problems: list[tuple[Action, str]] = []
        for action in self._walk(self.actions):
            try:
                found = action.validate(self.ctx)
            except (InfrastructureError, ConfigurationError):
                if host_checks:
                    raise
                continue
            problems += [(action, f"{action.level} {action.name}: {p}") for p in found]
        return problems

    def describe(self) -> list[dict[str, Any]]:
        return [_describe(a) for a in [*self.actions, self.finalize]]

    def _walk(self, actions: list[Action]) -> Iterator[Action]:
        for action in actions:
            yield action
            yield from self._walk(action.children)

    # -- running ----------------------------------------------------------------------------

    def run(self) -> JobResult:
        """Run every action, then finalize; return how the job ended (also logged as its result)."""
        error: BaseException | None = None
        self._interrupts.install()
        try:
            self._run_top_level()
        except BaseException as exc:  # noqa: BLE001 - the one place that classifies everything
            error = exc
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        failure = self._classify(error)
        if failure is None and self._interrupts.canceled:
            # SIGTERM arrived between two actions: nothing raised it, but the job was canceled.
            failure = JobCanceled(self._interrupts.canceled)
        finalize_error = self._run_finalize(failure)
        failure = failure or finalize_error
        self._interrupts.uninstall()
        return self._job_result(failure)

    def _run_top_level(self) -> None:
        deadline = time.monotonic() + self.job_timeout
        with self._interrupts.limit(deadline, self):
            for action in self.actions:
                try:
                    self._run_action(action, deadline)
                except JobTimeout as exc:
                    if not action.skip_timeout:
                        raise
                    self.ctx.logger.warning(f"{exc}; timeout has skip: true, going on with the next action")

    def _run_action(self, action: Action, parent_deadline: float) -> None:
        for attempt in range(1, action.failure_retry + 1):
            try:
                self._attempt(action, parent_deadline, attempt)
                return
            except JobCanceled:
                raise
            except DutlabError as exc:
                if attempt == action.failure_retry or time.monotonic() >= parent_deadline:
                    raise
                self.ctx.logger.error(f"{action.name} failed (attempt {attempt} of {action.failure_retry}): "
                                      f"{exc}; retrying")
                self._cleanup(action)
                time.sleep(action.failure_retry_interval)

    def _attempt(self, action: Action, parent_deadline: float, attempt: int) -> None:
        log = self.ctx.logger
        deadline = min(time.monotonic() + action.timeout, parent_deadline)
        retry = f" (attempt {attempt} of {action.failure_retry})" if action.failure_retry > 1 else ""
        log.info(f"start: {action.level} {action.name} (timeout {hms(action.timeout)}){retry}")
        started = time.monotonic()
        result = "fail"
        try:
            with self._interrupts.limit(deadline, action):
                self._run_body(action, deadline)
            result = "pass"
        finally:
            duration = time.monotonic() - started
            log.info(f"end: {action.level} {action.name} (duration {hms(duration)})")
            self._log_action_result(action, result, duration)

    def _run_body(self, action: Action, deadline: float) -> None:
        try:
            self._enter(action, deadline)
            with self._interrupts.interruptible():
                action.run(self.ctx)
            for child in action.children:
                self._run_action(child, deadline)
                self._enter(action, deadline)
        except Expired as exc:
            if exc.owner is not action:
                raise
            raise JobTimeout(self._timeout_message(action)) from None

    def _enter(self, action: Action, deadline: float) -> None:
        self._current = action
        self.ctx.deadline = deadline
        self.ctx.connection_timeout = action.connection_timeout

    def _timeout_message(self, action: Action) -> str:
        inner = self._current
        where = f" (in {inner.level} {inner.name})" if inner is not None and inner is not action else ""
        return f"{action.name} timed out after {hms(action.timeout)}{where}"

    def _cleanup(self, action: Action) -> None:
        for each in reversed(list(self._walk([action]))):
            try:
                each.cleanup(self.ctx)
            except Exception as exc:  # noqa: BLE001 - a failed cleanup must not hide the retry
                self.ctx.logger.warning(f"cleanup of {each.name} failed: {exc}")

    def _log_action_result(self, action: Action, result: str, duration: float) -> None:
        if "." in action.level and action.results is None:
            return  # children report only when they have something to say
        record = {"definition": "lava", "case": action.name, "level": action.level,
                  "duration": f"{duration:.2f}", "result": result}
        if action.results:
            record["extra"] = action.results
        self.ctx.logger.results(record)

    # -- the end ----------------------------------------------------------------------------

    def _classify(self, error: BaseException | None) -> DutlabError | None:
        if error is None:
            return None
        if isinstance(error, Expired):
            inner = self._current.name if self._current else "the job"
            return JobTimeout(f"the job timed out after {hms(self.job_timeout)} (timeouts.job), in {inner}")
        if isinstance(error, DutlabError):
            return error
        if isinstance(error, KeyboardInterrupt):
            return JobCanceled("the job was canceled (SIGINT received)")
        self.ctx.logger.exception("".join(traceback.format_exception(error)))
        return Bug(f"{type(error).__name__}: {error}")

    def _run_finalize(self, failure: DutlabError | None) -> DutlabError | None:
        """Run finalize; its own DutlabError (e.g. a failed power-off) when it raised one."""
        if failure is not None:
            self.ctx.logger.error(f"{failure.error_type} error: {failure}")
        self.ctx.deadline = time.monotonic() + self.finalize.timeout
        self.ctx.logger.info(f"start: {self.finalize.level} {self.finalize.name} "
                             f"(timeout {hms(self.finalize.timeout)})")
        started = time.monotonic()
        error: DutlabError | None = None
        try:
            self.finalize.run(self.ctx)
        except Exception as exc:  # noqa: BLE001 - finalize reports, it never hides the job's error
            self.ctx.logger.error(f"finalize failed: {exc}")
            if isinstance(exc, DutlabError):
                error = exc
        self.ctx.logger.info(f"end: {self.finalize.level} {self.finalize.name} "
                             f"(duration {hms(time.monotonic() - started)})")
        return error

    def _job_result(self, failure: DutlabError | None) -> JobResult:
        result = JobResult("pass") if failure is None else JobResult.failed(failure.error_type, str(failure))
        self.ctx.logger.results(result.results_record())
        return result


def _last_set(candidates: tuple[tuple[str, Any], ...], default: float) -> float:
    found = [seconds for where, value in candidates if (seconds := timeout_seconds(value, where))]
    return found[-1] if found else default


def _describe(action: Action) -> dict[str, Any]:
    data: dict[str, Any] = {
        "class": type(action).__name__,
        "name": action.name,
        "level": action.level,
        "description": action.description,
        "summary": action.summary,
        "timeout": action.timeout,
    }
    if math.isfinite(action.connection_timeout):
        data["connection_timeout"] = action.connection_timeout
    if action.failure_retry > 1:
        data["failure_retry"] = action.failure_retry
    if action.children:
        data["pipeline"] = [_describe(c) for c in action.children]
    return data
