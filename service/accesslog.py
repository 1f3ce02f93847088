"""The server's access log and log files: one line per request (logger `dutlab.access`), and the
handlers `--log-file` / `--access-log` write with.

A line is ``<client> "<method> <path> <protocol>" <status> <bytes> <ms>ms``: the query string is
kept (the API takes no secrets there), request bodies and headers are not (tokens travel in
them). Files are opened with WatchedFileHandler, which reopens a file that logrotate moved away,
so rotation needs no restart and no copytruncate.
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("dutlab.access")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def file_handler(path: str) -> logging.Handler:
    handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def send_access_log_to(path: str) -> None:
    """Access lines go to `path` only (not to the server log as well)."""
    log.addHandler(file_handler(path))
    log.propagate = False


class AccessLog:
    """WSGI middleware: one access line when the answer's last byte is gone (or the client left)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        status: list[str] = []

        def recording_start_response(code: str, headers: list, exc_info: Any = None) -> Any:
            status[:] = [code]
            return start_response(code, headers, exc_info) if exc_info else start_response(code, headers)

        body = self.app(environ, recording_start_response)
        return _Logged(body, environ, status, started)


class _Logged:
    """The answer's body, counted as it goes; the line is written when the server closes it."""

    def __init__(self, body: Iterable[bytes], environ: dict[str, Any], status: list[str], started: float) -> None:
        self.body, self.environ, self.status, self.started = body, environ, status, started
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            getattr(self.body, "close", lambda: None)()
        finally:
            if log.isEnabledFor(logging.INFO):
                env = self.environ
                query = env.get("QUERY_STRING")
                path = env.get("PATH_INFO", "") + (f"?{query}" if query else "")
                code = self.status[0].split(" ", 1)[0] if self.status else "-"
                log.info('%s "%s %s %s" %s %d %.1fms', env.get("REMOTE_ADDR", "-"), env.get("REQUEST_METHOD", "-"),
                         path, env.get("SERVER_PROTOCOL", "-"), code, self.sent,
                         (time.monotonic() - self.started) * 1000)
