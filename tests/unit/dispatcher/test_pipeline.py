"""The pipeline runner: timeouts, retries, classification, cancel, finalize-always."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from dutlab.dispatcher.context import JobContext
from dutlab.dispatcher.errors import InfrastructureError, JobError
from dutlab.dispatcher.log import JobLogger, read_log
from dutlab.dispatcher.pipeline import Action, Pipeline
from dutlab.dispatcher.protocol import JobResult


class Recorder(Action):
    name = "recorder"

    def __init__(self, params: dict[str, Any] | None = None, behaviour: Any = None) -> None:
        super().__init__(params)
        self.behaviour = behaviour
        self.calls = 0
        self.cleanups = 0

    def run(self, ctx: JobContext) -> None:
        self.calls += 1
        if self.behaviour is not None:
            self.behaviour(self, ctx)

    def cleanup(self, ctx: JobContext) -> None:
        self.cleanups += 1


class Final(Action):
    name = "finalize"

    def __init__(self) -> None:
        super().__init__()
        self.ran = False

    def run(self, ctx: JobContext) -> None:
        self.ran = True


def make_ctx(tmp_path: Path, job: dict[str, Any] | None = None, device: dict[str, Any] | None = None) -> JobContext:
    job = job or {"timeouts": {"job": {"minutes": 1}}}
    return JobContext(job_id=1, job=job, device=device or {}, logger=JobLogger(tmp_path / "output.yaml"),
                      output_dir=tmp_path, work_dir=tmp_path, tmp_dir=tmp_path / "tmp")


def messages(tmp_path: Path, lvl: str) -> list[Any]:
    return [r["msg"] for r in read_log(tmp_path / "output.yaml") if r["lvl"] == lvl]


def job_result(tmp_path: Path) -> dict[str, Any]:
    return messages(tmp_path, "results")[-1]


def test_pass_logs_start_end_and_job_result(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    action, final = Recorder({}), Final()
    action.children = [Recorder({})]
    result = Pipeline(ctx, [action], final).run()
    assert result == JobResult("pass")
    assert final.ran and action.calls == 1 and action.children[0].calls == 1
    infos = messages(tmp_path, "info")
    assert infos[0] == "start: 1 recorder (timeout 00:00:30)"
    assert "start: 1.1 recorder (timeout 00:00:30)" in infos
    assert any(m.startswith("end: 1 recorder (duration ") for m in infos)
    assert job_result(tmp_path) == {"definition": "lava", "case": "job", "result": "pass"}


def test_timeout_precedence_follows_lava(tmp_path: Path) -> None:
    job = {"timeouts": {"job": {"minutes": 10}, "action": {"seconds": 40},
                        "actions": {"named": {"seconds": 70}}}}
    device = {"timeouts": {"actions": {"recorder": {"seconds": 50}, "named": {"seconds": 55}}}}
    ctx = make_ctx(tmp_path, job, device)

    class Named(Recorder):
        name = "named"

    plain, from_block, named = Recorder({}), Recorder({"timeout": {"seconds": 60}}), Named({"timeout": {"seconds": 60}})
    other = Recorder({"timeout": {"seconds": 60}, "timeouts": {"recorder": {"seconds": 80}}})
    Pipeline(ctx, [plain, from_block, named, other], Final())
    assert plain.timeout == 50  # device beats the job's default action timeout
    assert from_block.timeout == 60  # the block beats the device
    assert named.timeout == 70  # the job's named timeout beats the block
    assert other.timeout == 80  # the block's named timeout beats everything


def test_failure_retry_repeats_with_cleanup_and_shares_the_timeout(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)

    def flaky(action: Recorder, ctx: JobContext) -> None:
        if action.calls < 3:
            raise InfrastructureError(f"attempt {action.calls} failed")

    action = Recorder({"failure_retry": 3, "timeout": {"seconds": 30}}, flaky)
    pipeline = Pipeline(ctx, [action], Final())
    assert action.timeout == 10
    assert pipeline.run().passed
    assert action.calls == 3 and action.cleanups == 2
    assert "recorder failed (attempt 1 of 3): attempt 1 failed; retrying" in messages(tmp_path, "error")


def test_action_timeout_becomes_timeout_error_and_finalize_runs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    final = Final()
    action = Recorder({"timeout": {"seconds": 1}}, lambda a, c: time.sleep(10))
    started = time.monotonic()
    result = Pipeline(ctx, [action], final).run()
    assert time.monotonic() - started < 5
    assert result.result == "fail" and result.error_type == "Timeout"
    assert result.error_msg == "recorder timed out after 00:00:01"
    assert final.ran


def test_child_timeout_names_the_running_child(tmp_path: Path) -> None:
    job = {"timeouts": {"job": {"seconds": 1}}}
    ctx = make_ctx(tmp_path, job)
    top = Recorder({})
    top.children = [Recorder({}, lambda a, c: time.sleep(10))]
    result = Pipeline(ctx, [top], Final()).run()
    assert result.error_type == "Timeout"
    assert result.error_msg == "the job timed out after 00:00:01 (timeouts.job), in recorder"


def test_skip_timeout_goes_on_with_the_next_action(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    slow = Recorder({"timeout": {"seconds": 1, "skip": True}}, lambda a, c: time.sleep(10))
    after = Recorder({})
    assert Pipeline(ctx, [slow, after], Final()).run().passed
    assert after.calls == 1


def test_unexpected_exception_is_a_bug_with_traceback(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)

    def broken(action: Recorder, ctx: JobContext) -> None:
        raise KeyError("oops")

    result = Pipeline(ctx, [Recorder({}, broken)], Final()).run()
    assert result.error_type == "Bug" and "KeyError" in result.error_msg
    assert "Traceback" in messages(tmp_path, "exception")[0]


def test_sigterm_cancels_and_finalize_still_runs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    final = Final()

    def wait_for_cancel(action: Recorder, ctx: JobContext) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    after = Recorder({})
    result = Pipeline(ctx, [Recorder({}, wait_for_cancel), after], final).run()
    assert result.error_type == "Canceled"
    assert result.error_msg == "the job was canceled (SIGTERM received)"
    assert final.ran and after.calls == 0
    assert signal.getsignal(signal.SIGTERM) is not None


def test_job_errors_pass_through_with_their_type(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)

    def bad(action: Recorder, ctx: JobContext) -> None:
        raise JobError("checksum mismatch for http://x/y")

    result = Pipeline(ctx, [Recorder({}, bad)], Final()).run()
    assert result == JobResult.failed("Job", "checksum mismatch for http://x/y")
    assert job_result(tmp_path) == {"definition": "lava", "case": "job", "result": "fail", "error_type": "Job",
                                    "error_msg": "checksum mismatch for http://x/y"}
    assert "Job error: checksum mismatch for http://x/y" in messages(tmp_path, "error")


def test_validate_collects_every_problem(tmp_path: Path) -> None:
    class Picky(Recorder):
        def validate(self, ctx: JobContext) -> list[str]:
            return ["first problem", "second problem"]

    ctx = make_ctx(tmp_path)
    top = Picky({})
    top.children = [Picky({})]
    with pytest.raises(JobError) as err:
        Pipeline(ctx, [top], Final()).validate()
    assert str(err.value) == ("invalid job: 1 recorder: first problem; 1 recorder: second problem; "
                              "1.1 recorder: first problem; 1.1 recorder: second problem")


def test_describe_has_levels_timeouts_and_children(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    top = Recorder({"failure_retry": 2, "timeout": {"minutes": 2}})
    top.children = [Recorder({})]
    described = Pipeline(ctx, [top], Final()).describe()
    assert [d["level"] for d in described] == ["1", "2"]
    assert described[0]["timeout"] == 60 and described[0]["failure_retry"] == 2
    assert described[0]["pipeline"][0]["level"] == "1.1"
    assert described[1]["name"] == "finalize" and described[1]["timeout"] == 30
