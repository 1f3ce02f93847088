"""The job output store: one folder per job, the log as one record per line plus a line index.

`output.yaml` holds lines `- {"dt": ..., "lvl": ..., "msg": ...}` (a YAML list lavacli can read
in any slice); `output.idx` holds the byte offset of every line as 8-byte little-endian integers,
so reading lines N..M is two seeks, whatever the log size. Appends are serialised per job with a
lock held across processes (fcntl), which makes a resent batch idempotent by line index.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IDX = struct.Struct("<Q")
_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


class LogGap(ValueError):
    """A batch starts after the stored end: the client must resend from `line_count`."""

    def __init__(self, line_count: int) -> None:
        super().__init__(f"the server holds {line_count} lines; resend from line {line_count}")
        self.line_count = line_count


class JobFolder:
    def __init__(self, output_dir: str | Path, job_id: int) -> None:
        self.job_id = job_id
        self.path = Path(output_dir) / str(job_id)

    def file(self, name: str) -> Path:
        return self.path / name

    def write(self, name: str, text: str) -> None:
        tmp = self.file(name + ".tmp")
        try:
            tmp.write_text(text)
        except FileNotFoundError:  # the job's first file: make the folder only then (a syscall less a write)
            self.path.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
        tmp.replace(self.file(name))

    def read(self, name: str) -> str | None:
        try:
            return self.file(name).read_text()
        except FileNotFoundError:
            return None

    # -- the log -------------------------------------------------------------------------------

    def line_count(self) -> int:
        try:
            return self.file("output.idx").stat().st_size // IDX.size
        except FileNotFoundError:
            return 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _locks_guard:
            lock = _locks.setdefault(self.job_id, threading.Lock())
        with lock:
            try:
                fh = open(self.file(".lock"), "w")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                self.path.mkdir(parents=True, exist_ok=True)
                fh = open(self.file(".lock"), "w")  # noqa: SIM115
            with fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                yield

    def append(self, index: int, records: list[str]) -> tuple[int, list[tuple[int, str]]]:
        """Store `records` (single-line JSON texts) as lines index.. ; skip what is stored.

        Returns the new line count and the (line number, record) pairs actually added.
        """
        with self._locked():
            stored = self._repair()
            if index > stored:
                raise LogGap(stored)
            new = records[stored - index :]
            if not new:
                return stored, []
            with open(self.file("output.yaml"), "ab") as log, open(self.file("output.idx"), "ab") as idx:
                offset = log.tell()
                offsets = bytearray()
                chunks = []
                for rec in new:
                    line = ("- " + rec.replace("\n", " ") + "\n").encode()
                    offsets += IDX.pack(offset)
                    offset += len(line)
                    chunks.append(line)
                log.write(b"".join(chunks))
                log.flush()
                os.fsync(log.fileno())
                idx.write(offsets)
                idx.flush()
            return stored + len(new), list(enumerate(new, start=stored))

    def _repair(self) -> int:
        """Make the index and the log agree after a crash between the two writes."""
        count = self.line_count()
        idx_path, log_path = self.file("output.idx"), self.file("output.yaml")
        if idx_path.exists() and idx_path.stat().st_size % IDX.size:
            os.truncate(idx_path, count * IDX.size)
        if not log_path.exists():
            return 0
        end = self._offset(count - 1) if count else 0
        if count:
            with open(log_path, "rb") as fh:
                fh.seek(end)
                end += len(fh.readline())
        if log_path.stat().st_size != end:
            os.truncate(log_path, end)
        return count

    def _offset(self, line: int) -> int:
        with open(self.file("output.idx"), "rb") as fh:
            fh.seek(line * IDX.size)
            return IDX.unpack(fh.read(IDX.size))[0]

    def read_lines(self, start: int = 0, end: int | None = None) -> str:
        """Lines [start, end) as YAML text (end exclusive, as lavacli addresses them)."""
        count = self.line_count()
        end = count if end is None else min(end, count)
        start = max(0, start)
        if start >= end:
            return ""
        first = self._offset(start)
        last = self._offset(end) if end < count else None
        with open(self.file("output.yaml"), "rb") as fh:
            fh.seek(first)
            data = fh.read() if last is None else fh.read(last - first)
        return data.decode("utf-8", errors="replace")
