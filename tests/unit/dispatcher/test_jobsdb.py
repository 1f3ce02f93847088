"""The worker's local job table: durable across reopen, and a process is its pid plus start time."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from dutlab.dispatcher.jobsdb import CANCELING, FINISHED, RUNNING, JobsDB, process_start_ticks, process_stat


@pytest.fixture
def db(tmp_path):
    jobs = JobsDB(tmp_path / "work" / "worker.sqlite3")
    yield jobs
    jobs.close()


def test_record_survives_reopen(tmp_path, db):
    db.add(7, "secret", tmp_path / "jobs" / "7")
    db.set_process(7, 1234, 1234, 99)
    db.close()
    again = JobsDB(tmp_path / "work" / "worker.sqlite3")
    job = again.get(7)
    again.close()
    assert (job.id, job.token, job.pid, job.pgid, job.start_ticks, job.state) == (7, "secret", 1234, 1234, 99, RUNNING)
    assert job.job_dir == str(tmp_path / "jobs" / "7")


def test_file_is_private(tmp_path, db):
    # It holds job tokens.
    mode = stat.S_IMODE(os.stat(tmp_path / "work" / "worker.sqlite3").st_mode)
    assert mode == 0o600


def test_states_and_exit_status(tmp_path, db):
    db.add(1, "t1", tmp_path / "1")
    db.add(2, "t2", tmp_path / "2")
    before = db.get(1).updated
    db.set_state(1, CANCELING)
    assert db.get(1).state == CANCELING and db.get(1).updated >= before
    db.set_state(1, FINISHED, -9)
    db.set_state(1, FINISHED)  # a later update without a status keeps the one seen
    assert (db.get(1).state, db.get(1).exit_status) == (FINISHED, -9)
    assert [j.id for j in db.all()] == [1, 2]
    db.remove(1)
    assert db.get(1) is None and [j.id for j in db.all()] == [2]
    with pytest.raises(ValueError, match="one of running"):
        db.set_state(2, "done")


def test_re_adding_replaces_a_stale_record(tmp_path, db):
    db.add(3, "old", tmp_path / "3")
    db.set_process(3, 10, 10, 5)
    db.set_state(3, FINISHED, 0)
    job = db.add(3, "new", tmp_path / "3")
    assert (job.token, job.pid, job.state, job.exit_status) == ("new", None, RUNNING, None)


def test_alive_needs_same_pid_and_start_time(tmp_path, db):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ticks = process_start_ticks(proc.pid)
        assert ticks is not None
        db.add(4, "t", tmp_path / "4")
        db.set_process(4, proc.pid, proc.pid, ticks)
        assert db.get(4).alive()
        # Same pid, other start time: a recycled pid is not our job.
        db.set_process(4, proc.pid, proc.pid, ticks - 1)
        assert not db.get(4).alive()
        db.set_process(4, proc.pid, proc.pid, ticks)
    finally:
        proc.kill()
        proc.wait()
    assert not db.get(4).alive()


def test_start_ticks_of_a_zombie_is_none():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    # Not reaped yet: a zombie. It is no longer running a job.
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    assert process_start_ticks(proc.pid) is None
    proc.wait()
    assert process_start_ticks(proc.pid) is None


def test_start_ticks_survive_odd_command_names():
    # The command name sits in parentheses and may contain ") " itself: parse after the last ')'.
    code = "open('/proc/self/comm', 'w').write('x) 1 2 3 4 5'); print(flush=True); input()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        with open(f"/proc/{proc.pid}/comm") as fh:
            assert fh.read() == "x) 1 2 3 4 5\n"
        ticks = process_start_ticks(proc.pid)
        with open("/proc/uptime") as fh:
            now = float(fh.read().split()[0]) * os.sysconf("SC_CLK_TCK")
        # Started after this test process and not in the future.
        assert process_start_ticks(os.getpid()) <= ticks <= now + 1
    finally:
        proc.kill()
        proc.wait()


def test_end_session_kills_the_run_and_what_it_started_in_other_sessions(tmp_path, db):
    """As dutlab-run puts QEMU on a pty in a session of its own: a kill of the run's group alone
    would leave it; end_session finds it by parent pid and waits until all of them are gone."""
    from dutlab.dispatcher.worker.runs import end_session

    child = "import os, time; os.setsid(); time.sleep(100)"
    run = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time; "
                            f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(100)"],
                           start_new_session=True)
    kids: list[int] = []
    try:
        job = db.add(5, "t", tmp_path / "5")
        job = db.set_process(5, run.pid, run.pid, process_start_ticks(run.pid))
        for _ in range(200):  # the grandchild's setsid takes a moment
            kids = [int(e) for e in os.listdir("/proc") if e.isdigit() and (s := process_stat(int(e)))
                    and int(s[1]) == run.pid and int(s[3]) != run.pid]
            if kids:
                break
            time.sleep(0.02)
        assert kids, "the child never started its own session"
        os.kill(run.pid, signal.SIGSTOP)  # a frozen run is killed all the same
        assert end_session(job) == []
        run.wait(5)
        assert all(process_start_ticks(k) is None for k in kids)
        assert end_session(db.get(5)) == []  # over: nothing is looked for (its ids may be reused)
    finally:
        for pid in kids:  # by pid, and only if it still is that child (its parent is this run)
            if (s := process_stat(pid)) and int(s[1]) in (run.pid, 1):
                os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
            run.wait()
