"""Job logs and results: log batches from workers, the test cases derived from their
`lvl: results` lines, and the exports.

The export dict follows LAVA's (lava-interfaces.md §1.5) so lavacli and scripts written for LAVA
read it unchanged; JUnit XML uses the suite name as classname.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import yaml

from ..config import Settings
from ..db import write_txn
from ..errors import ApiError, bad_request, conflict
from ..logstore import JobFolder, LogGap
from ..metrics.record import LOG_LINES
from ..models import TestCase, TestJob, TestSuite, utcnow
from ..states import ResultCode
from .jobs import open_for_reports


def append_log(job: TestJob, index: Any, lines: Any, settings: Settings) -> int:
    """Store a batch of log records from line `index` on (a resent batch changes nothing) and
    file its results; return how many lines the server holds. A gap is a 409 with that count."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise bad_request("'index' must be the line number (>= 0) of the first line sent", "index")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise bad_request("'lines' must be a list of single-line JSON log records", "lines")
    if len(lines) > settings.max_log_batch:
        raise ApiError(413, f"at most {settings.max_log_batch} lines per batch; send smaller batches", "lines")
    folder = JobFolder(settings.output_dir, job.id)
    # The job row stays locked while the lines are stored: a job the server ends meanwhile
    # gets them all before it is Finished, or none (a 409).
    with write_txn():
        job = open_for_reports(job)
        try:
            count, added = folder.append(index, lines)
        except LogGap as gap:
            raise conflict(str(gap), "index", line_count=gap.line_count) from None
        if added:
            ingest(job, added)
    LOG_LINES.inc(len(added))
    return count


def ingest(job: TestJob, numbered_records: Iterable[tuple[int, str]]) -> int:
    """Create test cases for the results records among (line number, JSON text); return how many."""
    count = 0
    suites: dict[str, TestSuite] = {}
    for line, text in numbered_records:
        if '"results"' not in text:  # cheap pre-filter: most lines are console output
            continue
        try:
            record = json.loads(text)
        except ValueError:
            continue
        msg = record.get("msg")
        if record.get("lvl") != "results" or not isinstance(msg, dict):
            continue
        if _store(job, line, msg, suites):
            count += 1
    return count


def _store(job: TestJob, line: int, msg: dict, suites: dict[str, TestSuite]) -> bool:
    suite_name, case, result = msg.get("definition"), msg.get("case"), str(msg.get("result", "")).lower()
    if not suite_name or not case or result not in ("pass", "fail", "skip", "unknown"):
        return False  # LAVA drops results it cannot file; so do we
    suite = suites.get(suite_name)
    if suite is None:
        suite, _ = TestSuite.get_or_create(job=job, name=str(suite_name)[:200])
        suites[suite_name] = suite
    measurement = msg.get("measurement")
    try:
        measurement = float(measurement) if measurement not in (None, "") else None
    except (TypeError, ValueError):
        measurement = None
    if measurement is None and suite_name == "lava" and msg.get("duration") is not None:
        try:
            measurement = float(msg["duration"])
        except (TypeError, ValueError):
            pass
    TestCase.create(
        suite=suite,
        name="".join(c if c.isprintable() else "_" for c in str(case))[:200],
        result=ResultCode[result.upper()],
        measurement=measurement,
        units=str(msg.get("units") or ("seconds" if suite_name == "lava" and measurement is not None else ""))[:100],
        test_set=str(msg.get("set") or "")[:200],
        metadata=yaml.safe_dump(msg, default_flow_style=False)[:4096],
        log_line=line,
        start_log_line=msg.get("starttc"),
        end_log_line=msg.get("endtc") or line,
        logged=utcnow(),
    )
    return True


def suites_json(job: TestJob) -> list[dict]:
    """The job's test suites as LAVA lists them: {name, job, id}, ids as strings."""
    suites = TestSuite.select().where(TestSuite.job == job).order_by(TestSuite.id)
    return [{"name": s.name, "job": str(job.id), "id": str(s.id)} for s in suites]


def cases(job: TestJob, suite: str | None = None, case: str | None = None) -> list[TestCase]:
    query = TestCase.select(TestCase, TestSuite).join(TestSuite).where(TestSuite.job == job)
    if suite is not None:
        query = query.where(TestSuite.name == suite)
    if case is not None:
        query = query.where(TestCase.name == case)
    return list(query.order_by(TestCase.id))


def export_case(tc: TestCase, job_id: int, lava: bool = True) -> dict:
    """LAVA's export_testcase shape: all values strings except metadata, and "None" for a value a
    case has not (XML-RPC, callbacks: what LAVA sends). `lava` off (the REST API): null instead."""
    try:
        metadata = yaml.safe_load(tc.metadata) if tc.metadata else {}
    except yaml.YAMLError:
        metadata = {}
    missing = "None" if lava else None
    level = metadata.get("level") if isinstance(metadata, dict) else None
    return {
        "id": str(tc.id),
        "job": str(job_id),
        "suite": tc.suite.name,
        "name": tc.name,
        "result": ResultCode(tc.result).label,
        "measurement": missing if tc.measurement is None else _number(tc.measurement),
        "unit": tc.units,
        "level": missing if level is None else str(level),
        "url": f"/results/{job_id}/{tc.suite.name}/{tc.name}",
        "logged": tc.logged.isoformat(sep=" "),
        "log_start_line": missing if tc.start_log_line is None else str(tc.start_log_line),
        "log_end_line": missing if tc.end_log_line is None else str(tc.end_log_line),
        "metadata": metadata,
    }


def _number(value: float) -> str:
    # LAVA stores measurements as DECIMAL(30, 10) and exports str() of it: always ten decimals
    return f"{value:.10f}"


def as_json(job: TestJob, rows: list[TestCase], lava: bool = True) -> list[dict]:
    return [export_case(tc, job.id, lava) for tc in rows]


def as_yaml(job: TestJob, rows: list[TestCase], lava: bool = True) -> str:
    return yaml.safe_dump(as_json(job, rows, lava), default_flow_style=False, sort_keys=True)


def as_junit(job: TestJob, rows: list[TestCase], classname_prefix: str = "") -> str:
    """JUnit XML: one testsuite per suite; a case's duration (the lava suite's, in seconds) is its
    `time`, other measurements its system-out; names are unique within a suite (JUnit readers
    merge cases of one name): a download names its image, a repeated name gets " #2", " #3"."""
    suites: dict[str, list[TestCase]] = {}
    for tc in rows:
        suites.setdefault(tc.suite.name, []).append(tc)
    root = ET.Element("testsuites", name=f"job {job.id}", tests=str(len(rows)))
    for name, members in suites.items():
        times = [tc.measurement for tc in members if _is_duration(tc)]
        el = ET.SubElement(
            root, "testsuite", name=name, tests=str(len(members)),
            failures=str(sum(tc.result == ResultCode.FAIL for tc in members)),
            skipped=str(sum(tc.result == ResultCode.SKIP for tc in members)),
            **({"time": f"{sum(times):.3f}"} if times else {}),
        )
        seen: dict[str, int] = {}
        for tc in members:
            case_name = _junit_name(tc)
            seen[case_name] = seen.get(case_name, 0) + 1
            if seen[case_name] > 1:
                case_name = f"{case_name} #{seen[case_name]}"
            attrs = {"time": f"{tc.measurement:.3f}"} if _is_duration(tc) else {}
            case = ET.SubElement(el, "testcase", name=case_name, classname=f"{classname_prefix}{name}", **attrs)
            if tc.measurement is not None and not _is_duration(tc):
                ET.SubElement(case, "system-out").text = f"measurement: {tc.measurement:g} {tc.units}".strip()
            if tc.result == ResultCode.FAIL:
                ET.SubElement(case, "failure", message="fail")
            elif tc.result == ResultCode.SKIP:
                ET.SubElement(case, "skipped")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _is_duration(tc: TestCase) -> bool:
    return tc.measurement is not None and tc.suite.name == "lava" and tc.units == "seconds"


def _junit_name(tc: TestCase) -> str:
    """The case's name, with the image a download fetched (`file-download (kernel)`)."""
    try:
        extra = (yaml.safe_load(tc.metadata) or {}).get("extra") if tc.metadata else None
    except (yaml.YAMLError, AttributeError):
        extra = None
    label = extra.get("label") if isinstance(extra, dict) else None
    return f"{tc.name} ({label})" if label else tc.name
