"""Log upload and job finish: the one path from a job's output folder to the server.

dutlab-run starts a `LogUploader` next to its log writer and closes it with the job result; the
worker daemon calls `sync_finished_job` for a run that ended without doing so (killed, crashed).
Both go through `LogUploader._run`, so a line is sent the same way whoever sends it.

`finish` is sent once per job: once the server has acknowledged it, the uploader leaves the file
`reported` in the output folder, and `sync_finished_job` sends nothing for a folder that has it.
A run killed before the acknowledgement leaves no marker, so the worker still reports it.

Upload is idempotent by line index (docs/worker-api.md): the server keeps lines from
`max(index, stored)` on, and tells the client where it stands (`line_count`, also in a 409), so a
restart of either side, a lost answer or a resent batch never drops or duplicates a line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from array import array
from pathlib import Path

from .log import format_record
from .protocol import ApiError, Client, JobResult, ServerUnreachable, job_path

log = logging.getLogger("dutlab.upload")

BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0
#: in the output folder once the server has acknowledged the job's finish
REPORTED = "reported"


def reported(output_dir: Path) -> bool:
    """Whether the server has acknowledged this run's finish (nothing is left to send)."""
    return (Path(output_dir) / REPORTED).exists()


class LogTail:
    """The complete lines of a growing `output.yaml`, addressable by line number.

    Only the start offset of each line is kept (8 bytes a line), so a long log costs little memory
    and a resume from any line the server names is one seek.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets = array("Q")
        self._end = 0  # byte offset just after the last complete line

    @property
    def count(self) -> int:
        return len(self._offsets)

    def scan(self, final: bool = False) -> int:
        """Index lines written since the last scan; returns the line count.

        A line without its newline is still being written, unless `final` (the writer is gone):
        then it is kept if it is a whole JSON record and dropped as a torn write otherwise.
        """
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return self.count
        with fh:
            fh.seek(self._end)
            for line in fh:
                if not line.endswith(b"\n") and not (final and _is_record(line)):
                    break
                self._offsets.append(self._end)
                self._end += len(line)
        return self.count

    def read(self, start: int, limit: int) -> list[str]:
        """Up to `limit` records from line `start` on, without the `- ` list marker."""
        out: list[str] = []
        stop = min(self.count, start + limit)
        if start >= stop:
            return out
        with open(self.path, "rb") as fh:
            fh.seek(self._offsets[start])
            for _ in range(start, stop):
                text = fh.readline().decode("utf-8", "replace").rstrip("\n")
                out.append(text[2:] if text.startswith("- ") else text)
        return out


def _is_record(line: bytes) -> bool:
    text = line.decode("utf-8", "replace")
    try:
        return isinstance(json.loads(text[2:] if text.startswith("- ") else text), dict)
    except ValueError:
        return False


class LogUploader:
    """Sends `<output_dir>/output.yaml` to the server as it grows, then the job's finish.

    :param server_url: the lab server
    :param job_id: the job
    :param token: the job token (``Authorization: Job <token>``)
    :param output_dir: where dutlab-run writes output.yaml, description.yaml and result.yaml
    :param batch_max: most lines in one request (the server's max_log_batch may be larger)
    :param interval: how long an idle uploader waits before looking at the file again
    :param index: the first line to send; None = ask the server (the worker's path for a run that
        ended without finishing: finish first, and a 409 names where the upload resumes)
    """

    def __init__(self, server_url: str, job_id: int, token: str, output_dir: Path, *,
                 batch_max: int = 1000, interval: float = 0.2, index: int | None = 0) -> None:
        self.job_id = job_id
        self.output_dir = Path(output_dir)
        self.client = Client(server_url, f"Job {token}")
        self.tail = LogTail(self.output_dir / "output.yaml")
        self.batch_max = batch_max
        self.interval = interval
        self.finished = False
        #: why the server will never take this job's log or finish (token refused, job gone)
        self.gone = ""
        self._index = index
        self._batch = batch_max
        self._replaced: dict[int, str] = {}
        self._result: JobResult | None = None
        self._deadline = float("inf")
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"upload-{self.job_id}", daemon=True)
        self._thread.start()

    def close(self, result: JobResult, timeout: float) -> bool:
        """Upload what is left, then POST finish; True once the server acknowledged the finish."""
        self._deadline = time.monotonic() + timeout
        self._result = result
        self._wake.set()
        if self._thread is None:
            self._run()
        else:
            self._thread.join(timeout)
        return self.finished

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        while not self.finished and not self.gone:
            closing = self._result is not None
            if closing and time.monotonic() >= self._deadline:
                return
            self.tail.scan(final=closing)
            try:
                if self._index is not None and self._index < self.tail.count:
                    self._send_batch()
                elif closing:
                    self._send_finish()
                else:
                    self._pause(self.interval)
                    continue
            except (ServerUnreachable, ApiError, KeyError, TypeError, ValueError) as exc:
                # (KeyError..ValueError: an answer without a usable line_count; worth a retry)
                if self._handle_error(exc):
                    continue
                self._note_failure(exc, delay)
                self._pause(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            if self._failing:
                log.info("job %d: the server answers again", self.job_id)
                self._failing = False
            delay = BACKOFF_FIRST

    def _send_batch(self) -> None:
        assert self._index is not None
        start = self._index
        lines = self.tail.read(start, self._batch)
        for n in range(start, start + len(lines)):
            if n in self._replaced:
                lines[n - start] = self._replaced[n]
        answer = self.client.post(job_path(self.job_id, "logs"), {"index": start, "lines": lines},
                                  timeout=self._timeout())
        self._index = int(answer["line_count"])

    def _send_finish(self) -> None:
        assert self._result is not None
        body = self._result.finish_body(_description(self.output_dir), self.tail.count)
        self.client.post(job_path(self.job_id, "finish"), body, timeout=self._timeout())
        self.finished = True
        try:
            (self.output_dir / REPORTED).touch()
        except OSError as exc:  # the worker then reports once more: harmless, finish is idempotent
            log.warning("job %d: cannot mark the finish as reported: %s", self.job_id, exc)

    def _handle_error(self, exc: Exception) -> bool:
        """Act on an answer that says what to do next; False means back off and retry."""
        if not isinstance(exc, ApiError):
            return False
        if exc.job_ended:
            # The server ended the job without this run (its worker was away too long): the
            # log is closed and the result is the server's; nothing more is sent.
            self.gone = f"the server has ended the job: {exc.error}"
            log.warning("job %d: %s", self.job_id, self.gone)
            return True
        if exc.status == 409 and "line_count" in exc.body:
            # The server says where its log ends: resume from there (a gap, or finish too early).
            self._index = int(exc.body["line_count"])
            return True
        if exc.status in (400, 413) and self._index is not None and self._index < self.tail.count:
            self._shrink(exc)
            return True
        if exc.status in (400, 401, 403, 404):
            self.gone = str(exc)
            log.error("job %d: giving up on the upload: %s", self.job_id, exc)
            return True
        return False

    def _shrink(self, exc: ApiError) -> None:
        # Halve the batch until the refused line is alone, then send a record saying so in its
        # place: the line numbers stay aligned with the local log and the upload goes on.
        if self._batch > 1:
            self._batch = max(1, self._batch // 2)
            return
        assert self._index is not None
        if self._index in self._replaced:
            self.gone = f"the server refuses even a placeholder for log line {self._index}: {exc}"
            log.error("job %d: giving up on the upload: %s", self.job_id, self.gone)
            return
        log.warning("job %d: the server refused log line %d: %s", self.job_id, self._index, exc)
        message = f"log line {self._index} was refused by the server (HTTP {exc.status}: {exc.error})"
        self._replaced[self._index] = format_record("error", message)[2:]  # without the "- " list marker

    def _note_failure(self, exc: Exception, delay: float) -> None:
        if not self._failing:
            log.warning("job %d: %s; retrying with backoff (first in %.1fs)", self.job_id, exc, delay)
        self._failing = True

    def _pause(self, seconds: float) -> None:
        if self._result is not None:
            time.sleep(max(0.0, min(seconds, self._deadline - time.monotonic())))
        else:
            self._wake.wait(seconds)
            self._wake.clear()

    def _timeout(self) -> float:
        return max(1.0, min(30.0, self._deadline - time.monotonic()))


def _description(output_dir: Path) -> str:
    """The pipeline description dutlab-run wrote after validation ('' when it never got there)."""
    try:
        return (Path(output_dir) / "description.yaml").read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def sync_finished_job(server_url: str, job_id: int, token: str, output_dir: Path,
                      result: JobResult, timeout: float = 300.0) -> bool:
    """Report a run that ended while nobody uploaded: the rest of its log, then its finish.

    Nothing is sent when the run's own finish was acknowledged (the `reported` marker). Otherwise
    finish goes first with the local line count: when the run had uploaded everything (it only
    died late) that is the whole exchange; else the 409 names the resume point.
    Returns True when nothing is left to report: the finish was acknowledged, or the server will
    never take it (token refused, job gone or ended by the server; logged). False: the server was
    not reachable in time.
    """
    if reported(output_dir):
        return True
    uploader = LogUploader(server_url, job_id, token, output_dir, index=None)
    return uploader.close(result, timeout) or bool(uploader.gone)
