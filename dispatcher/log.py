"""The job log: ``<output-dir>/output.yaml``, one record per line.

Each line is ``- `` followed by a single-line JSON object ``{"dt", "lvl", "msg"}``, which
is also a YAML flow mapping, so the whole file loads as a YAML list and a reader can
address records by line number (the server and lavacli do).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error", "exception", "input", "target", "feedback", "results")

# Characters JSON leaves raw but a YAML reader refuses (C1 controls, DEL, non-characters):
# one stray byte from a DUT must not make the whole log unreadable.
_NOT_YAML_PRINTABLE = re.compile("[\x7f-\x84\x86-\x9f\ufffe\uffff\ud800-\udfff]")
MASK = "[MASKED]"


def _clean(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return _NOT_YAML_PRINTABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {str(k): _clean(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, secrets) for v in value]
    return value


def format_record(lvl: str, msg: Any, secrets: tuple[str, ...] = ()) -> str:
    record = {"dt": datetime.now(UTC).isoformat(), "lvl": lvl, "msg": _clean(msg, secrets)}
    return "- " + json.dumps(record, ensure_ascii=False)


class JobLogger:
    """Appends records to output.yaml, flushed per line; thread-safe.

    :param path: the output.yaml to write (created, or appended to).
    :param echo: a stream that also gets each record (``dutlab-run --verbose``).
    :param secrets: strings replaced by ``[MASKED]`` wherever they appear.
    """

    def __init__(self, path: Path, echo: TextIO | None = None, secrets: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the job
        self._echo = echo
        self._secrets = tuple(s for s in secrets if s)
        self._lock = threading.Lock()
        #: number of lines written so far; the next record's 0-based line index
        self.line_count = 0

    def add_secret(self, secret: str) -> None:
        if secret:
            self._secrets += (secret,)

    def mask(self, value: Any) -> Any:
        """``value`` as the log would show it (secrets replaced)."""
        return _clean(value, self._secrets)

    def log(self, lvl: str, msg: Any) -> int:
        """Write one record and return its 0-based line index."""
        if lvl not in LEVELS:
            raise ValueError(f"unknown log level {lvl!r}; expected one of {', '.join(LEVELS)}")
        line = format_record(lvl, msg, self._secrets)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            index = self.line_count
            self.line_count += 1
        if self._echo is not None:
            self._echo.write(f"{lvl:>8}: {msg}\n")
            self._echo.flush()
        return index

    def debug(self, msg: str) -> int:
        return self.log("debug", msg)

    def info(self, msg: str) -> int:
        return self.log("info", msg)

    def warning(self, msg: str) -> int:
        return self.log("warning", msg)

    def error(self, msg: str) -> int:
        return self.log("error", msg)

    def exception(self, msg: str) -> int:
        return self.log("exception", msg)

    def input(self, msg: str) -> int:
        return self.log("input", msg)

    def target(self, msg: str) -> int:
        return self.log("target", msg)

    def feedback(self, msg: str) -> int:
        return self.log("feedback", msg)

    def results(self, result: dict[str, Any]) -> int:
        return self.log("results", result)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """Parse an output.yaml written by JobLogger (fast path: JSON per line)."""
    return [json.loads(line[2:]) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]

