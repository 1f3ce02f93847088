"""One job on this worker: its processes, its folder, and the result to report when it ends.

Small functions the daemon uses around a dutlab-run: what to report when the run left no
result.yaml, how to stop its whole session, how to find a run spawned just before a crash.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import __version__
from ..actions.compatibility import refusal
from ..jobsdb import Job, process_start_ticks, process_stat
from ..log import JobLogger
from ..protocol import ErrorType, JobResult

RUN_LOG_TAIL = 2000


@dataclass
class Run:
    job: Job
    #: set for runs this worker process spawned (it can read their exit status)
    popen: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    killed: bool = False


def final_result(job_dir: Path, status: int | None) -> JobResult:
    """The result to report: result.yaml if dutlab-run wrote one, else an Infrastructure failure."""
    try:
        doc = yaml.safe_load((job_dir / "output" / "result.yaml").read_text())
        if isinstance(doc, dict) and doc.get("result") in ("pass", "fail"):
            return JobResult.from_mapping(doc)
    except (OSError, yaml.YAMLError):
        pass
    if status is None:
        how = "ended while the worker was restarting (exit status unknown)"
    elif status < 0:
        how = f"exited with status {status} (killed by {signal_name(-status)})"
    else:
        how = f"exited with status {status}"
    msg = f"dutlab-run {how} without a result"
    tail = log_tail(job_dir / "run.log")
    if tail:
        msg += f"; end of run.log:\n{tail}"
    return JobResult.failed(ErrorType.INFRASTRUCTURE, msg)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - RUN_LOG_TAIL))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def kill_group(job: Job, sig: int) -> None:
    if job.pgid is None:
        return
    try:
        os.killpg(job.pgid, sig)
    except ProcessLookupError:
        pass


def end_session(job: Job, timeout: float = 10.0) -> list[int]:
    """SIGKILL a run and everything it started; return the pids still alive after `timeout`.

    That is dutlab-run's process group and every descendant of it, wherever it went: QEMU and
    telnet run on a pty in sessions of their own, and would survive a kill of the group. Each
    process is stopped (SIGSTOP) as it is found, so none can start another meanwhile.
    """
    if not job.alive():  # the run is over (and its group was killed then): its ids may be reused
        return []
    found: dict[int, int] = {}  # pid -> start ticks: a pid reused meanwhile is never signalled
    while True:
        table = {pid: stat for pid in _pids() if (stat := process_stat(pid)) is not None}
        new = {pid: int(stat[19]) for pid, stat in table.items() if pid not in found and (
            int(stat[2]) == job.pgid or int(stat[1]) in found)}
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        found.update(new)
    for pid, ticks in found.items():
        if process_start_ticks(pid) == ticks:
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:  # a zombie counts as gone: it holds nothing of the device
        alive = [pid for pid, ticks in found.items() if process_start_ticks(pid) == ticks]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def find_spawned(job_dir: Path) -> int | None:
    """The pid of a dutlab-run for `job_dir` that started just before a crash recorded it."""
    needle = str(job_dir / "job.yaml").encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        return int(entry.name)
            except OSError:
                continue
    return None


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def resolve_command(command: str) -> list[str]:
    """argv for the run command; a bare name is looked up next to this Python first (a venv)."""
    argv = shlex.split(command)
    if argv and "/" not in argv[0]:
        beside = Path(sys.executable).parent / argv[0]
        found = str(beside) if beside.exists() else shutil.which(argv[0])
        argv[0] = found or argv[0]
    return argv


def incompatible(info: dict, job_dir: Path, job_id: int, worker: str) -> str:
    """Why this worker's dutlab cannot run a fetched job ('' when it can); when it cannot, the
    job's log and result are written as dutlab-run would (the server computed the number with
    its own code: dispatcher/actions/compatibility.py)."""
    try:
        # libyaml when present: this parse is on the way from the offer to dutlab-run
        job = yaml.load(str(info.get("definition", "")),  # noqa: S506 - a SafeLoader
                        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError:
        return ""  # dutlab-run reports a definition it cannot read
    required = info.get("compatibility")
    required = required if isinstance(required, int) and not isinstance(required, bool) else 0
    message = refusal(job, required, job_id, worker, __version__, str(info.get("server_version") or "")) \
        if isinstance(job, dict) else ""
    if message:
        result = JobResult.failed(ErrorType.CONFIGURATION, message)
        logger = JobLogger(job_dir / "output" / "output.yaml")
        try:
            logger.error(f"{result.error_type} error: {message}")
            logger.results(result.results_record())
        finally:
            logger.close()
        (job_dir / "output" / "result.yaml").write_text(yaml.safe_dump(result.to_mapping(), sort_keys=False))
    return message
