"""Signal lines: what our helper scripts print, and what the dispatcher makes of them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from dutlab.dispatcher.actions.signals import SignalReader
from dutlab.dispatcher.errors import TestError
from dutlab.dispatcher.log import JobLogger, read_log
from dutlab.dispatcher.overlay import run_script, write_scripts

RUNS = {"0_smoke": {"repository": "inline", "path": "inline/smoke.yaml", "revision": "unspecified",
                    "uuid": "7_1.3.1", "parse": {}, "expected": []}}


def reader(tmp_path: Path, runs: dict[str, Any] | None = None) -> tuple[SignalReader, Path]:
    path = tmp_path / "output.yaml"
    return SignalReader(JobLogger(path), runs or RUNS, stage=0), path


def results(path: Path) -> list[dict[str, Any]]:
    return [r["msg"] for r in read_log(path) if r["lvl"] == "results"]


def test_a_run_with_cases_sets_and_measurements(tmp_path: Path) -> None:
    signals, path = reader(tmp_path)
    lines = [
        "<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.3.1>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=uname RESULT=pass>",
        "<LAVA_SIGNAL_TESTSET START net>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=speed RESULT=pass UNITS=MB/s MEASUREMENT=12.5>",
        "<LAVA_SIGNAL_TESTSET STOP>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=later RESULT=skip>",
        "<LAVA_SIGNAL_TESTREFERENCE doc pass https://example.org/x>",
        "<LAVA_SIGNAL_ENDRUN 0_smoke 7_1.3.1>",
    ]
    assert not any(signals.feed(line) for line in lines)
    assert signals.feed("<LAVA_TEST_RUNNER EXIT>")
    got = results(path)
    assert got[:4] == [
        {"definition": "0_smoke", "case": "uname", "result": "pass"},
        {"definition": "0_smoke", "case": "speed", "result": "pass", "measurement": 12.5, "units": "MB/s",
         "set": "net"},
        {"definition": "0_smoke", "case": "later", "result": "skip"},
        {"definition": "0_smoke", "case": "doc", "result": "pass", "reference": "https://example.org/x"},
    ]
    endrun = got[4]
    assert endrun["definition"] == "lava" and endrun["case"] == "0_smoke" and endrun["result"] == "pass"
    assert endrun["uuid"] == "7_1.3.1" and endrun["repository"] == "inline" and "duration" in endrun


def test_a_run_without_endrun_fails(tmp_path: Path) -> None:
    signals, path = reader(tmp_path)
    signals.feed("<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.3.1>")
    signals.feed("<LAVA_TEST_RUNNER EXIT>")
    assert results(path)[-1]["case"] == "0_smoke" and results(path)[-1]["result"] == "fail"


def test_testraise_is_a_test_error(tmp_path: Path) -> None:
    signals, _ = reader(tmp_path)
    signals.feed("<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.3.1>")
    with pytest.raises(TestError, match="lava-test-raise in 0_smoke: disk missing"):
        signals.feed("<LAVA_SIGNAL_TESTRAISE disk missing>")


@pytest.mark.parametrize("line, message", [
    ("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=great>", "invalid test case"),
    ("<LAVA_SIGNAL_TESTCASE RESULT=pass>", "invalid test case"),
    ("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=pass MEASUREMENT=fast>", "is not a number"),
])
def test_bad_test_cases_are_test_errors(tmp_path: Path, line: str, message: str) -> None:
    signals, _ = reader(tmp_path)
    signals.feed("<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.3.1>")
    with pytest.raises(TestError, match=message):
        signals.feed(line)


def test_trace_lines_are_not_signals(tmp_path: Path) -> None:
    signals, path = reader(tmp_path)
    signals.feed("<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.3.1>")
    signals.feed("+ echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=pass>'")
    signals.feed("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=pass>")
    assert len(results(path)) == 1


def test_parse_pattern_with_fixupdict_and_expected_cases(tmp_path: Path) -> None:
    runs = {"1_ltp": {"parse": {"pattern": r"^(?P<test_case_id>\S+)\s+(?P<result>OK|BAD)$",
                                "fixupdict": {"OK": "pass", "BAD": "fail"}},
                      "expected": ["one", "never"]}}
    signals, path = reader(tmp_path, runs)
    for line in ["<LAVA_SIGNAL_STARTRUN 1_ltp 7_1.3.2>", "one OK", "two/three BAD", "has space OK",
                 "four MAYBE", "<LAVA_SIGNAL_ENDRUN 1_ltp 7_1.3.2>"]:
        signals.feed(line)
    got = results(path)
    assert got[0] == {"definition": "1_ltp", "case": "one", "result": "pass"}
    assert got[1] == {"definition": "1_ltp", "case": "two_three", "result": "fail"}
    assert got[2] == {"definition": "1_ltp", "case": "never", "result": "fail"}
    assert got[3]["case"] == "1_ltp" and len(got) == 4


def test_starttc_endtc_mark_log_lines(tmp_path: Path) -> None:
    signals, path = reader(tmp_path)
    signals.feed("<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.3.1>")
    signals.feed("<LAVA_SIGNAL_STARTTC uname>")
    signals.feed("<LAVA_SIGNAL_ENDTC uname>")
    signals.feed("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=uname RESULT=pass>")
    record = results(path)[0]
    assert record["starttc"] <= record["endtc"]


def test_install_fail_is_a_stage_result(tmp_path: Path) -> None:
    signals, path = reader(tmp_path)
    signals.feed("<LAVA_TEST_RUNNER INSTALL_FAIL>")
    assert results(path) == [{"definition": "lava", "case": "stage_0", "result": "fail"}]


# -- the helper scripts, run by the host's /bin/sh --------------------------------------------

@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    write_scripts(tmp_path / "lava")
    return tmp_path / "lava" / "bin"


def sh(bindir: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bindir / argv[0]), *argv[1:]], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=10)


def test_lava_test_case_shell_prints_exact_signals(bindir: Path) -> None:
    out = sh(bindir, "lava-test-case", "ok", "--shell", "true")
    assert out.returncode == 0
    assert out.stdout.splitlines() == ["<LAVA_SIGNAL_STARTTC ok>", "<LAVA_SIGNAL_ENDTC ok>",
                                       "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=ok RESULT=pass>"]
    failed = sh(bindir, "lava-test-case", "pipe", "--shell", "echo hi | grep -q nope")
    assert failed.returncode == 0
    assert failed.stdout.splitlines()[-1] == "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=pipe RESULT=fail>"


def test_lava_test_case_result_measurement_units_order(bindir: Path, tmp_path: Path) -> None:
    out = sh(bindir, "lava-test-case", "speed", "--result", "pass", "--measurement", "12.5", "--units", "MB/s",
             env={"LAVA_RESULT_DIR": str(tmp_path / "r")})
    assert out.stdout == "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=speed RESULT=pass UNITS=MB/s MEASUREMENT=12.5>\n"
    assert (tmp_path / "r/results/speed/measurement").read_text() == "12.5\n"


def test_lava_test_case_output_wraps_the_file(bindir: Path, tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("details\n")
    out = sh(bindir, "lava-test-case", "t", "--result", "fail", "--output", str(tmp_path / "log.txt"))
    assert out.stdout.splitlines() == ["<LAVA_SIGNAL_STARTTC t>", "details", "<LAVA_SIGNAL_ENDTC t>",
                                       "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=t RESULT=fail>"]


def test_other_helpers(bindir: Path) -> None:
    assert sh(bindir, "lava-test-set", "start", "grp").stdout == "<LAVA_SIGNAL_TESTSET START grp>\n"
    assert sh(bindir, "lava-test-set", "stop").stdout == "<LAVA_SIGNAL_TESTSET STOP>\n"
    ref = sh(bindir, "lava-test-reference", "doc", "--result", "pass", "--reference", "http://x/y")
    assert ref.stdout == "<LAVA_SIGNAL_TESTREFERENCE doc pass http://x/y>\n"
    raised = sh(bindir, "lava-test-raise", "disk", "missing")
    assert raised.stdout == "<LAVA_SIGNAL_TESTRAISE disk missing>\n" and raised.returncode == 1
    assert sh(bindir, "lava-test-event", "hello").stdout == "<LAVA_SIGNAL_TESTEVENT hello>\n"
    assert sh(bindir, "lava-test-case").returncode == 1


def test_runner_runs_each_test_and_always_says_exit(tmp_path: Path, bindir: Path) -> None:
    root = tmp_path / "lava"
    test_dir = root / "0" / "tests" / "0_smoke"
    test_dir.mkdir(parents=True)
    (test_dir / "uuid").write_text("1_1.3.1\n")
    steps = ["lava-test-case inside --shell test -n \"$LAVA_RESULT_DIR\"", "false", "echo not reached"]
    (test_dir / "run.sh").write_text(run_script("0_smoke", str(test_dir), str(root / "bin"), steps, ["X='1'"]))
    (root / "0" / "lava-test-runner.conf").write_text(f"{test_dir}\n")
    out = subprocess.run([str(root / "bin/lava-test-runner"), str(root / "0")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=10, stdin=subprocess.DEVNULL)
    lines = out.stdout.splitlines()
    assert lines[0] == "<LAVA_SIGNAL_STARTRUN 0_smoke 1_1.3.1>"
    assert "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=inside RESULT=pass>" in lines
    assert "not reached" not in out.stdout and "ENDRUN" not in out.stdout
    assert lines[-1] == "<LAVA_TEST_RUNNER EXIT>"
    assert "+ lava-test-case inside" in out.stderr  # steps are traced
