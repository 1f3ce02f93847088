"""dutlab-worker: the daemon that runs the server's jobs on this host (docs/worker.md).

One main thread owns all state (the job table, the processes); the long-poll runs in a thread of
its own so a job that ends is noticed at once, not at the next poll. Every dutlab-run lives in its
own session and is recorded in jobsdb before it is spawned: the worker can be stopped, killed or
upgraded at any moment and re-adopts its jobs when it comes back (design.md, principle 3).

A run that reported its own finish (the ``reported`` marker, upload.py) is not reported again;
one that ended without it (killed, crashed, the server away) is reported from here.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import yaml

from .. import __version__, envfile, workerfiles
from ..coordinator_client import endpoint_mapping
from ..jobsdb import CANCELING, FINISHED, FORGOTTEN, RUNNING, Job, JobsDB, process_start_ticks
from ..protocol import PROTOCOL, ApiError, Client, ServerUnreachable, job_path, poll_path
from ..upload import sync_finished_job
from .config import Config, ConfigError, coordinator_endpoint
from .runs import Run, end_session, final_result, find_spawned, incompatible, kill_group, resolve_command, write_private

log = logging.getLogger("dutlab.worker")

POLL_BACKOFF_CAP = 5.0
#: a 4xx on poll (bad token, unknown worker, protocol) needs an admin: retry, but slowly
POLL_REFUSED_RETRY = 30.0
#: how often jobs are checked when pidfd_open is not available
LIVENESS_INTERVAL = 0.2
REPORT_ATTEMPT = 60.0
#: after an offer could not be started, wait this long before polling again (no tight loop)
START_FAILED_DELAY = 1.0


class Worker:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.work_dir = Path(cfg.work_dir).absolute()
        try:
            token = Path(cfg.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the worker token from {cfg.token_file}: {exc}") from exc
        self.client = Client(cfg.url, f"Worker {token}")
        self.env_spec = envfile.load(cfg.env_file) if cfg.env_file else None
        self.run_argv = resolve_command(cfg.run_command)
        self.coordinator = coordinator_endpoint(cfg.coordinator)
        self.db = JobsDB(self.work_dir / "worker.sqlite3")
        self.runs: dict[int, Run] = {}
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._poll: Future[dict[str, Any]] | None = None
        self._poll_after = 0.0
        self._poll_delay = 0.5
        self._poll_failing_since = 0.0
        self._reported: SimpleQueue[int] = SimpleQueue()
        self._stop = False

    # main loop

    def run(self) -> int:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        log.info("dutlab-worker %s: worker '%s', server %s, work dir %s",
                 __version__, self.cfg.name, self.cfg.url, self.work_dir)
        self._readopt()
        while not self._stop:
            self._maybe_poll()
            for key, _ in self.sel.select(self._select_timeout()):
                if key.data is None:
                    self._drain_wake()
                else:
                    self._on_exit(key.data)
            self._handle_poll_reply()
            self._check_unwatched()
            self._enforce_grace()
            self._cleanup_reported()
        alive = sum(1 for r in self.runs.values() if r.job.state in (RUNNING, CANCELING))
        log.info("stopping; %d running job(s) keep running and are re-adopted at the next start", alive)
        self.db.close()
        return 0

    def _on_stop_signal(self, signum: int, _frame: object) -> None:
        self._stop = True

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:
            pass  # the pipe is full: the main loop is waking up anyway

    def _select_timeout(self) -> float:
        now = time.monotonic()
        timeout = 5.0
        if self._poll is None:
            timeout = min(timeout, max(0.0, self._poll_after - now))
        for run in self.runs.values():
            if run.pidfd is None and run.job.state != FINISHED:
                timeout = min(timeout, LIVENESS_INTERVAL)
            if run.job.state == CANCELING and not run.killed:
                timeout = min(timeout, max(0.0, run.job.updated + self.cfg.cancel_grace - time.time()))
        return timeout

    # polling

    def _maybe_poll(self) -> None:
        if self._poll is not None or time.monotonic() < self._poll_after:
            return
        body = {"protocol": PROTOCOL, "version": __version__, "wait": self.cfg.poll_wait,
                "running": sorted(i for i, r in self.runs.items() if r.job.state != FORGOTTEN)}
        future: Future[dict[str, Any]] = Future()
        self._poll = future
        threading.Thread(target=self._poll_thread, args=(body, future), name="poll", daemon=True).start()

    def _poll_thread(self, body: dict[str, Any], future: Future[dict[str, Any]]) -> None:
        try:
            future.set_result(self.client.post(poll_path(self.cfg.name), body,
                                               timeout=self.cfg.poll_wait + 15))
        except Exception as exc:  # handed to the main thread, which logs it
            future.set_exception(exc)
        self._wake()

    def _handle_poll_reply(self) -> None:
        if self._poll is None or not self._poll.done():
            return
        future, self._poll = self._poll, None
        try:
            reply = future.result()
        except Exception as exc:  # whatever went wrong, the next poll is the retry
            self._poll_failed(exc)
            return
        if self._poll_failing_since:
            log.info("server %s answers again", self.cfg.url)
        self._poll_failing_since, self._poll_delay = 0.0, 0.5
        self._poll_after = time.monotonic() + float(reply.get("poll_interval") or 0)
        if self._stop:
            return  # jobs offered now are offered again to the next worker process
        # Runs the server has ended are killed (and waited for) before anything new starts.
        for item in reply.get("ended", []):
            why = ": ".join(str(x) for x in (item.get("health"), item.get("reason")) if x)
            self._forget(int(item["id"]), f"the server has ended it ({why})")
        for job_id in reply.get("unknown", []):
            self._forget(int(job_id))
        for job_id in reply.get("cancel", []):
            self._cancel(int(job_id))
        for item in reply.get("start", []):
            self._start(int(item["id"]), str(item["token"]))

    def _poll_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if isinstance(exc, ApiError) and not exc.retryable:
            delay = POLL_REFUSED_RETRY
        else:
            delay, self._poll_delay = self._poll_delay, min(self._poll_delay * 2, POLL_BACKOFF_CAP)
        # Log the first failure and then once a minute: an outage must not flood the log.
        if not self._poll_failing_since or now - self._poll_failing_since >= 60:
            log.warning("poll failed: %s; retrying in %.1fs", exc, delay)
            self._poll_failing_since = now
        self._poll_after = now + delay

    # starting, canceling, forgetting

    def _start(self, job_id: int, token: str) -> None:
        if job_id in self.runs:
            log.warning("job %d: offered again while it runs here; ignoring the offer", job_id)
            return
        job_client = Client(self.cfg.url, f"Job {token}")
        try:
            info = job_client.get(job_path(job_id))
        except (ServerUnreachable, ApiError) as exc:
            log.error("job %d: cannot fetch it (%s); the server offers it again", job_id, exc)
            self._poll_after = time.monotonic() + START_FAILED_DELAY
            return
        job_dir = self.work_dir / "jobs" / str(job_id)
        try:
            self._prepare(job_dir, info, token)
        except OSError as exc:
            log.error("job %d: cannot write its folder %s: %s", job_id, job_dir, exc)
            self._poll_after = time.monotonic() + START_FAILED_DELAY
            return
        run = Run(self.db.add(job_id, token, job_dir))
        self.runs[job_id] = run
        refused = incompatible(info, job_dir, job_id, self.cfg.name)
        if refused:  # reported as dutlab-run would, without starting it
            log.error("job %d: refused: %s", job_id, refused)
            self._finished(run, None)
            return
        self._spawn(run, info)
        try:
            job_client.post(job_path(job_id, "state"), {"state": "Running"})
        except (ServerUnreachable, ApiError) as exc:
            log.warning("job %d: cannot set it Running: %s", job_id, exc)

    def _prepare(self, job_dir: Path, info: dict[str, Any], token: str) -> None:
        shutil.rmtree(job_dir, ignore_errors=True)  # a leftover of an earlier offer
        (job_dir / "output").mkdir(parents=True)
        (job_dir / "job.yaml").write_text(str(info.get("definition", "")))
        (job_dir / "device.yaml").write_text(str(info.get("device", "")))
        if self.cfg.env_file:
            shutil.copyfile(self.cfg.env_file, job_dir / "env.yaml")
        write_private(job_dir / "token", token)
        if self.coordinator is not None:  # for MultiNode jobs; private: it may hold the secret
            write_private(job_dir / "coordinator.yaml", yaml.safe_dump(endpoint_mapping(self.coordinator)))

    def _spawn(self, run: Run, info: dict[str, Any]) -> None:
        d = Path(run.job.job_dir)
        server = workerfiles.run_settings(info, d)  # the server's files for this worker; its own settings win
        argv = [*self.run_argv, str(d / "job.yaml"), "--device", str(d / "device.yaml"),
                "--output-dir", str(d / "output"), "--job-id", str(run.job.id),
                "--work-dir", server["work_dir"] or str(self.work_dir), "--server", self.cfg.url,
                "--job-token-file", str(d / "token"), "--tftp-root", self.cfg.tftp_root,
                "--file-roots", ":".join(self.cfg.file_roots)]
        if self.cfg.dispatcher_ip or server["dispatcher_ip"]:
            argv += ["--dispatcher-ip", self.cfg.dispatcher_ip or server["dispatcher_ip"]]
        if server["env_dut"]:
            argv += ["--env-dut", server["env_dut"]]
        if self.coordinator is not None:
            argv += ["--coordinator", str(d / "coordinator.yaml")]
        try:
            env = envfile.build([info.get("env"), self.env_spec], os.environ)
            with open(d / "run.log", "ab") as out:
                popen = subprocess.Popen(argv, cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except (OSError, envfile.EnvFileError) as exc:
            with open(d / "run.log", "a") as out:
                out.write(f"cannot start {shlex.join(argv)}: {exc}\n")
            log.error("job %d: cannot start dutlab-run: %s", run.job.id, exc)
            self._finished(run, 127)  # as a shell reports a command it cannot run
            return
        run.popen = popen
        run.job = self.db.set_process(run.job.id, popen.pid, popen.pid, process_start_ticks(popen.pid))
        log.info("job %d: started dutlab-run (pid %d)", run.job.id, popen.pid)
        self._watch(run)

    def _cancel(self, job_id: int) -> None:
        run = self.runs.get(job_id)
        if run is None or run.job.state != RUNNING:
            return  # not ours, or already canceling: the grace deadline is running
        log.info("job %d: canceling (SIGTERM to process group %s)", job_id, run.job.pgid)
        kill_group(run.job, signal.SIGTERM)
        run.job = self.db.set_state(job_id, CANCELING)

    def _enforce_grace(self) -> None:
        for run in self.runs.values():
            if run.job.state == CANCELING and not run.killed \
                    and time.time() >= run.job.updated + self.cfg.cancel_grace:
                log.warning("job %d: still running %.0fs after SIGTERM; SIGKILL", run.job.id,
                            self.cfg.cancel_grace)
                kill_group(run.job, signal.SIGKILL)
                run.killed = True

    def _forget(self, job_id: int, why: str = "the server no longer knows it") -> None:
        run = self.runs.get(job_id)
        if run is None or run.job.state in (FINISHED, FORGOTTEN):
            return  # (a run that ended by itself: its report is refused, which ends the reporting)
        log.warning("job %d: %s; killing its run", job_id, why)
        left = end_session(run.job)
        if left:
            log.error("job %d: processes %s survive SIGKILL (uninterruptible?)", job_id, left)
        run.job = self.db.set_state(job_id, FORGOTTEN)

    # watching processes

    def _readopt(self) -> None:
        for job in self.db.all():
            run = Run(job)
            self.runs[job.id] = run
            if job.state == FINISHED:
                self._report(run)
            elif job.state == FORGOTTEN:  # the worker died while it was killing this run
                end_session(job)
                self._cleanup(job.id)
            elif job.pid is None and not self._recover_pid(run):
                log.info("job %d: its dutlab-run never started; the server offers it again", job.id)
                self._cleanup(job.id)
            else:
                if run.job.alive():
                    log.info("job %d: re-adopting dutlab-run (pid %s, %s)", job.id, run.job.pid, job.state)
                self._watch(run)

    def _recover_pid(self, run: Run) -> bool:
        pid = find_spawned(Path(run.job.job_dir))
        if pid is None:
            return False
        run.job = self.db.set_process(run.job.id, pid, pid, process_start_ticks(pid))
        return True

    def _watch(self, run: Run) -> None:
        assert run.job.pid is not None
        try:
            run.pidfd = os.pidfd_open(run.job.pid)
        except ProcessLookupError:
            self._on_exit(run)
            return
        except (AttributeError, OSError):
            run.pidfd = None  # no pidfd on this kernel: _check_unwatched polls instead
            return
        self.sel.register(run.pidfd, selectors.EVENT_READ, run)
        # Checked after opening the pidfd, so the pid cannot be recycled in between.
        if run.popen is None and not run.job.alive():
            self._on_exit(run)

    def _check_unwatched(self) -> None:
        for run in list(self.runs.values()):
            if run.pidfd is None and run.job.state != FINISHED and not self._is_running(run):
                self._on_exit(run)

    @staticmethod
    def _is_running(run: Run) -> bool:
        if run.popen is None:
            return run.job.alive()
        # WNOWAIT: leave the zombie in place so its process group cannot be reused before the kill.
        return os.waitid(os.P_PID, run.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    def _on_exit(self, run: Run) -> None:
        if run.pidfd is not None:
            self.sel.unregister(run.pidfd)
            os.close(run.pidfd)
            run.pidfd = None
        # Whatever dutlab-run left in its session (QEMU, telnet) must not outlive the job.
        kill_group(run.job, signal.SIGKILL)
        status = run.popen.wait() if run.popen is not None else None
        self._finished(run, status)

    def _finished(self, run: Run, status: int | None) -> None:
        if run.job.state == FORGOTTEN:
            log.info("job %d: dutlab-run ended (status %s)", run.job.id, status)
            self._cleanup(run.job.id)
            return
        run.job = self.db.set_state(run.job.id, FINISHED, status)
        # Logged once the status is in jobsdb: a worker killed after this line still reports it.
        log.info("job %d: dutlab-run ended (status %s)", run.job.id, status)
        self._report(run)

    # reporting

    def _report(self, run: Run) -> None:
        threading.Thread(target=self._report_thread, args=(run.job,), name=f"report-{run.job.id}",
                         daemon=True).start()

    def _report_thread(self, job: Job) -> None:
        job_dir = Path(job.job_dir)
        result = final_result(job_dir, job.exit_status)
        # Retried until the server has it: a stopped worker reports again from jobsdb when it starts.
        while True:
            try:
                if sync_finished_job(self.cfg.url, job.id, job.token, job_dir / "output", result,
                                     timeout=REPORT_ATTEMPT):
                    break
            except OSError as exc:  # the job folder itself is unreadable
                log.error("job %d: cannot report it: %s; retrying", job.id, exc)
                time.sleep(POLL_BACKOFF_CAP)
            if self._stop:
                return
        self._reported.put(job.id)
        self._wake()

    def _cleanup_reported(self) -> None:
        while not self._reported.empty():
            job_id = self._reported.get()
            log.info("job %d: finished and reported", job_id)
            self._cleanup(job_id)

    def _cleanup(self, job_id: int) -> None:
        run = self.runs.pop(job_id, None)
        if run is not None and not self.cfg.keep_jobs:
            shutil.rmtree(run.job.job_dir, ignore_errors=True)
        self.db.remove(job_id)
