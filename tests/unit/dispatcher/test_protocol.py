"""The worker protocol's definitions: error types, the job result's shapes, paths, the finish marker."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from dutlab.dispatcher import errors
from dutlab.dispatcher.protocol import (
    ERROR_TYPES,
    INFRASTRUCTURE_ERRORS,
    ErrorType,
    JobResult,
    job_path,
    poll_path,
)
from dutlab.dispatcher.upload import REPORTED, reported, sync_finished_job
from dutlab.dispatcher.worker.runs import final_result


def test_every_failure_class_carries_a_protocol_error_type():
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.DutlabError)]
    assert len(classes) >= 8
    for cls in classes:
        assert cls.error_type in ERROR_TYPES, cls
    assert set(INFRASTRUCTURE_ERRORS) <= set(ERROR_TYPES)
    assert {value for name, value in vars(ErrorType).items() if name.isupper()} == set(ERROR_TYPES)


def test_result_shapes():
    failed = JobResult.failed(ErrorType.JOB, "checksum mismatch")
    assert failed.to_mapping() == {"result": "fail", "error_type": "Job", "error_msg": "checksum mismatch"}
    assert JobResult("pass").to_mapping() == {"result": "pass"}
    assert failed.results_record() == {"definition": "lava", "case": "job", "result": "fail",
                                       "error_type": "Job", "error_msg": "checksum mismatch"}
    assert JobResult("pass").results_record() == {"definition": "lava", "case": "job", "result": "pass"}
    assert failed.finish_body("pipeline: []\n", 12) == {
        "result": "fail", "error_type": "Job", "error_msg": "checksum mismatch",
        "description": "pipeline: []\n", "log_line_count": 12}
    # result.yaml is plain YAML: the strings are str, not a subclass a safe dumper refuses
    assert yaml.safe_load(yaml.safe_dump(failed.to_mapping())) == failed.to_mapping()
    assert JobResult.from_mapping(failed.to_mapping()) == failed
    assert JobResult.from_mapping({"result": "maybe"}).result == "fail"


def test_paths():
    assert poll_path("w1") == "/internal/v1/workers/w1/poll"
    assert job_path(14) == "/internal/v1/jobs/14"
    assert job_path(14, "finish") == "/internal/v1/jobs/14/finish"


def test_result_the_worker_reports(tmp_path: Path):
    (tmp_path / "output").mkdir()
    (tmp_path / "run.log").write_text("Traceback: boom\n")
    lost = final_result(tmp_path, -9)
    assert (lost.result, lost.error_type) == ("fail", ErrorType.INFRASTRUCTURE)
    assert lost.error_msg == ("dutlab-run exited with status -9 (killed by SIGKILL) without a result; "
                              "end of run.log:\nTraceback: boom")
    (tmp_path / "output" / "result.yaml").write_text(yaml.safe_dump({"result": "pass"}))
    assert final_result(tmp_path, 0) == JobResult("pass")


@pytest.mark.timeout(10)
def test_a_reported_run_is_not_reported_again(tmp_path: Path):
    # Nothing listens on loopback port 9: a run that needs reporting cannot be reported there...
    assert not reported(tmp_path)
    assert not sync_finished_job("http://127.0.0.1:9", 5, "token", tmp_path, JobResult("pass"), timeout=0.5)
    # ...but one whose own finish was acknowledged needs no request at all.
    (tmp_path / REPORTED).touch()
    assert reported(tmp_path)
    assert sync_finished_job("http://127.0.0.1:9", 5, "token", tmp_path, JobResult("pass"), timeout=0.5)
