"""results.*: test cases of a job as YAML or CSV strings (LAVA's export shape, lab/results.py)."""

from __future__ import annotations

import csv
import io
import json

import yaml

from ..lab import results
from ..models import TestCase, TestJob, TestSuite
from . import NOT_FOUND, Call, Fault, exposed
from .jobs import get_job

#: CSV columns, in the order of LAVA's export dict
CASE_FIELDS = ("name", "job", "suite", "result", "measurement", "unit", "level", "url", "id", "logged",
               "log_start_line", "log_end_line", "metadata")
SUITE_FIELDS = ("name", "job", "id")


def _job(call: Call, job_id: str) -> TestJob:
    call.login()  # LAVA's results API needs a user, even for public jobs
    return get_job(call, job_id)


def _suite(job: TestJob, name: str) -> str:
    if not TestSuite.select().where(TestSuite.job == job, TestSuite.name == str(name)).exists():
        raise Fault(NOT_FOUND, f"Test suite '{name}' was not found in job {job.id}.")
    return str(name)


def _cases(call: Call, job_id: str, suite: str | None = None, case: str | None = None) -> tuple[TestJob, list]:
    job = _job(call, job_id)
    rows = results.cases(job, _suite(job, suite) if suite is not None else None,
                         str(case) if case is not None else None)
    if case is not None and not rows:
        raise Fault(NOT_FOUND, f"Test case '{case}' was not found in suite '{suite}' of job {job.id}.")
    return job, rows


def _slice(rows: list[TestCase], limit: int | None, offset: int | None) -> list[TestCase]:
    first = int(offset or 0)
    return rows[first:first + int(limit)] if limit else rows[first:]


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        # metadata is a mapping: JSON keeps it machine-readable inside one cell
        writer.writerow({k: json.dumps(v, default=str) if isinstance(v, dict) else v for k, v in row.items()})
    return out.getvalue()


def _suites(call: Call, job_id: str) -> list[dict]:
    return results.suites_json(_job(call, job_id))


@exposed("results.get_testjob_results_yaml")
def testjob_yaml(call: Call, job_id: str) -> str:
    """Every test case of the job, as a YAML list."""
    job, rows = _cases(call, job_id)
    return results.as_yaml(job, rows)


@exposed("results.get_testjob_results_csv")
def testjob_csv(call: Call, job_id: str) -> str:
    """Every test case of the job, as CSV."""
    job, rows = _cases(call, job_id)
    return _csv(results.as_json(job, rows), CASE_FIELDS)


@exposed("results.get_testsuite_results_yaml")
def testsuite_yaml(call: Call, job_id: str, suite_name: str, limit: int | None = None,
                   offset: int | None = None) -> str:
    """The test cases of one suite, as a YAML list."""
    job, rows = _cases(call, job_id, suite_name)
    return results.as_yaml(job, _slice(rows, limit, offset))


@exposed("results.get_testsuite_results_csv")
def testsuite_csv(call: Call, job_id: str, suite_name: str, limit: int | None = None,
                  offset: int | None = None) -> str:
    """The test cases of one suite, as CSV."""
    job, rows = _cases(call, job_id, suite_name)
    return _csv(results.as_json(job, _slice(rows, limit, offset)), CASE_FIELDS)


@exposed("results.get_testsuite_results_count")
def testsuite_count(call: Call, job_id: str, suite_name: str) -> int:
    """How many test cases the suite has."""
    return len(_cases(call, job_id, suite_name)[1])


@exposed("results.get_testcase_results_yaml")
def testcase_yaml(call: Call, job_id: str, suite_name: str, case_name: str) -> str:
    """The test case(s) named `case_name` in the suite, as a YAML list."""
    job, rows = _cases(call, job_id, suite_name, case_name)
    return results.as_yaml(job, rows)


@exposed("results.get_testcase_results_csv")
def testcase_csv(call: Call, job_id: str, suite_name: str, case_name: str) -> str:
    """The test case(s) named `case_name` in the suite, as CSV."""
    job, rows = _cases(call, job_id, suite_name, case_name)
    return _csv(results.as_json(job, rows), CASE_FIELDS)


@exposed("results.get_testjob_suites_list_yaml")
def suites_yaml(call: Call, job_id: str) -> str:
    """The job's test suites ({name, job, id}), as a YAML list."""
    return yaml.safe_dump(_suites(call, job_id), default_flow_style=False)


@exposed("results.get_testjob_suites_list_csv")
def suites_csv(call: Call, job_id: str) -> str:
    """The job's test suites, as CSV."""
    return _csv(_suites(call, job_id), SUITE_FIELDS)


@exposed("results.get_testjob_metadata")
def testjob_metadata(call: Call, job_id: str) -> dict:
    """The job's metadata (from its definition)."""
    return json.loads(_job(call, job_id).metadata or "{}")
