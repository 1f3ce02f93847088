"""labkit.procs: what a lab starts is stopped by PID, with what it started in other sessions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from labkit import Pid, Procs, stop_recorded

# A parent that starts a child in a session of its own (as dutlab-worker starts dutlab-run),
# prints the child's PID and ignores SIGTERM unless told otherwise.
PARENT = r"""
import signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def start_parent(procs: Procs, tmp_path: Path, mode: str = "polite") -> tuple[int, int]:
    log = tmp_path / "parent.log"
    proc = procs.spawn("parent", [sys.executable, "-c", PARENT, mode], log)
    deadline = time.monotonic() + 30
    while not log.read_text().strip():
        assert time.monotonic() < deadline, "the parent never printed its child's PID"
        time.sleep(0.02)
    return proc.pid, int(log.read_text().split()[0])


def test_stop_ends_the_process_and_what_it_started_in_another_session(tmp_path):
    procs = Procs()
    parent, child = start_parent(procs, tmp_path)
    child_id = Pid.of(child)
    assert child_id is not None and child_id.running()
    assert procs.stop("parent") == -signal.SIGTERM
    assert not child_id.running()
    assert "parent" not in procs


def test_tree_false_leaves_the_other_session_running(tmp_path):
    procs = Procs()
    _, child = start_parent(procs, tmp_path)
    child_id = Pid.of(child)
    try:
        procs.stop("parent", tree=False)
        assert child_id.running()
    finally:
        subprocess.run(["kill", "-KILL", str(child)], check=False)
    assert child_id.wait_gone(10)


def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_timeout(tmp_path):
    procs = Procs()
    start_parent(procs, tmp_path, "stubborn")
    assert procs.stop("parent", timeout=0.5) == -signal.SIGKILL


def test_detached_processes_are_stopped_from_their_record(tmp_path):
    procs = Procs()
    parent, child = start_parent(procs, tmp_path)
    record = json.loads(json.dumps(procs.detach()))  # as the state file keeps it
    assert procs.names() == [] and record == {"parent": [parent, Pid.of(parent).start]}
    child_id = Pid.of(child)
    procs.stop_all()  # nothing of the detached process: it is not this Procs' any more
    assert Pid.of(parent).running()
    assert stop_recorded(record) == ["parent"]
    assert not Pid(*record["parent"]).running() and not child_id.running()


def test_a_recorded_pid_given_to_another_process_is_left_alone():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        me = Pid.of(sleeper.pid)
        assert stop_recorded({"old": [sleeper.pid, me.start - 1]}) == []  # same PID, other start time
        assert me.running()
    finally:
        sleeper.kill()
        sleeper.wait()
