"""Read the test shell's console lines: LAVA signals, parse patterns, results records.

``SignalReader.feed(line)`` is pure bookkeeping on top of the logger, so it is tested
with recorded lines; ``test_shell`` feeds it from the real console.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ..errors import TestError
from ..log import JobLogger

SIGNAL = re.compile(r"<LAVA_SIGNAL_(\S+) ([^>]+)>")
RUNNER_EXIT = "<LAVA_TEST_RUNNER EXIT>"
INSTALL_FAIL = "<LAVA_TEST_RUNNER INSTALL_FAIL>"
RESULTS = ("pass", "fail", "skip", "unknown")
DEFAULT_FIXUP = {"PASS": "pass", "FAIL": "fail", "SKIP": "skip", "UNKNOWN": "unknown"}


class SignalReader:
    """Turns console lines into ``results`` records for one test stage.

    :param logger: where results and events go.
    :param runs: per ``<index>_<name>``: repository, path, revision, uuid, parse, expected.
    :param stage: the overlay stage being run (for ``stage_<N>`` install failures).
    """

    def __init__(self, logger: JobLogger, runs: dict[str, dict[str, Any]], stage: int) -> None:
        self.logger = logger
        self.runs = runs
        self.stage = stage
        self.current: str | None = None
        self.started = 0.0
        self.test_set: str | None = None
        self.reported: set[str] = set()
        self.markers: dict[str, dict[str, int]] = {}
        self.finished = False

    def feed(self, line: str) -> bool:
        """Handle one console line; True once the runner said it has finished."""
        if line.lstrip().startswith("+ "):
            return False  # a `set -x` trace of a command, not its output
        if RUNNER_EXIT in line:
            self.close_run()
            self.finished = True
            return True
        if INSTALL_FAIL in line:
            self.logger.results({"definition": "lava", "case": f"stage_{self.stage}", "result": "fail"})
        for match in SIGNAL.finditer(line):
            self.signal(match.group(1), match.group(2).split())
        if self.current and not SIGNAL.search(line):
            self.pattern(line)
        return False

    def signal(self, name: str, params: list[str]) -> None:
        handler = getattr(self, f"_on_{name.lower()}", None)
        if handler is None:
            self.logger.warning(f"unknown signal LAVA_SIGNAL_{name} ignored")
            return
        handler(params)

    # -- runs -----------------------------------------------------------------------------

    def _on_startrun(self, params: list[str]) -> None:
        self.close_run()
        self.current = params[0] if params else "unknown"
        self.started = time.monotonic()
        self.reported = set()
        self.logger.info(f"test run {self.current} started")

    def _on_endrun(self, params: list[str]) -> None:
        name = params[0] if params else self.current
        if name is None:
            return
        meta = self.runs.get(name, {})
        record: dict[str, Any] = {"definition": "lava", "case": name, "result": "pass",
                                  "duration": f"{time.monotonic() - self.started:.2f}",
                                  "uuid": params[1] if len(params) > 1 else meta.get("uuid", ""),
                                  "repository": meta.get("repository", ""), "path": meta.get("path", ""),
                                  "revision": meta.get("revision", "unspecified")}
        for key in ("commit_id", "branch"):
            if meta.get(key):
                record[key] = meta[key]
        self._missing_expected(name, meta)
        self.logger.results(record)
        self.current = None

    def close_run(self) -> None:
        """A run that never printed ENDRUN (run.sh stopped on an error) failed."""
        if self.current is None:
            return
        self.logger.warning(f"test run {self.current} ended without ENDRUN: a step failed under set -e")
        self._missing_expected(self.current, self.runs.get(self.current, {}))
        self.logger.results({"definition": "lava", "case": self.current, "result": "fail",
                             "duration": f"{time.monotonic() - self.started:.2f}"})
        self.current = None

    def _missing_expected(self, name: str, meta: dict[str, Any]) -> None:
        for case in meta.get("expected") or []:
            if case not in self.reported:
                self.logger.warning(f"expected test case {case} of {name} was not reported")
                self.logger.results({"definition": name, "case": case, "result": "fail"})

    # -- cases ----------------------------------------------------------------------------

    def _on_testcase(self, params: list[str]) -> None:
        fields = {}
        for param in params:
            key, sep, value = param.partition("=")
            if sep:
                fields[key.lower()] = value
        if self.current is None:
            raise TestError(f"lava-test-case {fields.get('test_case_id', '')} reported outside a test run")
        case = fields.get("test_case_id")
        result = self._fixup(fields.get("result", ""))
        if not case or result not in RESULTS:
            raise TestError(f"invalid test case in {self.current}: {' '.join(params)!r} "
                            f"(needs TEST_CASE_ID and RESULT={'|'.join(RESULTS)})")
        self.record(case, result, fields.get("measurement"), fields.get("units"))

    def record(self, case: str, result: str, measurement: str | None = None, units: str | None = None) -> None:
        record: dict[str, Any] = {"definition": self.current, "case": case, "result": result}
        if measurement is not None:
            try:
                record["measurement"] = float(measurement)
            except ValueError:
                raise TestError(f"test case {case} in {self.current}: measurement {measurement!r} "
                                "is not a number") from None
            if units:
                record["units"] = units
        if self.test_set:
            record["set"] = self.test_set
        record.update({k: v for k, v in self.markers.pop(case, {}).items()})
        self.reported.add(case)
        self.logger.results(record)

    def _on_testset(self, params: list[str]) -> None:
        if params and params[0] == "START" and len(params) > 1:
            self.test_set = params[1]
        elif params and params[0] == "STOP":
            self.test_set = None

    def _on_testreference(self, params: list[str]) -> None:
        if len(params) < 3:
            raise TestError(f"invalid lava-test-reference: {' '.join(params)!r}")
        self.logger.results({"definition": self.current or "lava", "case": params[0],
                             "result": params[1], "reference": params[2]})

    def _on_testraise(self, params: list[str]) -> None:
        raise TestError(f"lava-test-raise in {self.current or 'the test shell'}: {' '.join(params)}")

    def _on_testevent(self, params: list[str]) -> None:
        self.logger.info(f"event: {' '.join(params)}")

    def _on_starttc(self, params: list[str]) -> None:
        if params:
            self.markers.setdefault(params[0], {})["starttc"] = self.logger.line_count - 1

    def _on_endtc(self, params: list[str]) -> None:
        if params:
            self.markers.setdefault(params[0], {})["endtc"] = self.logger.line_count - 1

    def _on_testfeedback(self, params: list[str]) -> None:
        self.logger.debug(f"feedback request ignored: {' '.join(params)}")

    # -- parse: pattern ---------------------------------------------------------------------

    def _fixup(self, raw: str) -> str:
        parse = (self.runs.get(self.current or "", {}).get("parse") or {})
        fixup = {**DEFAULT_FIXUP, **(parse.get("fixupdict") or {})}
        return fixup.get(raw, raw)

    def pattern(self, line: str) -> None:
        parse = self.runs.get(self.current or "", {}).get("parse") or {}
        if not parse.get("pattern"):
            return
        match = re.search(parse["pattern"], line, re.M)
        if match is None:
            return
        found = match.groupdict()
        case = (found.get("test_case_id") or "").strip().replace("/", "_")
        result = self._fixup((found.get("result") or "").strip())
        if not case or " " in case or result not in RESULTS:
            return  # noise the pattern caught; LAVA skips these too
        self.record(case, result, found.get("measurement"), found.get("units"))
