"""What the benchmarks measure with besides the clock: RSS of processes, cProfile tables, and the
server's WSGI app called in this process (its request path without HTTP)."""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labkit import REPO

# -- memory -----------------------------------------------------------------------------------


def rss_kb(pid: int, key: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None



class RssSampler:
    """Samples VmRSS of the processes `find()` returns, every `interval` s, in a thread."""

    def __init__(self, find: Callable[[], dict[str, int]], interval: float = 0.1) -> None:
        self.find = find
        self.interval = interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.find().items():
                kb = rss_kb(pid)
                if kb is not None:
                    self.peak[name] = max(self.peak.get(name, 0), kb)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- profiling --------------------------------------------------------------------------------


def top_frames(prof: cProfile.Profile | str, limit: int = 12, sort: str = "cumulative") -> str:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats(sort).print_stats(limit)
    text = buf.getvalue()
    # keep the table only, with paths shortened to the repository or site-packages
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    out = []
    for line in lines[start:]:
        if not line.strip():
            continue
        line = line.replace(str(REPO) + "/", "")
        line = re.sub(r"\S*/site-packages/", "", line)
        line = re.sub(r"\S*/lib/python3\.\d+/", "", line)
        out.append(line.rstrip())
    return "\n".join(out)


class WsgiCaller:
    """Call the server's WSGI app in this process (for profiling its request path without HTTP)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, method: str, path: str, body: bytes = b"", ctype: str = "application/json",
                 auth: str = "") -> tuple[str, bytes]:
        path, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": ctype, "REMOTE_ADDR": "127.0.0.1",
        }
        if auth:
            environ["HTTP_AUTHORIZATION"] = auth
        status: list[str] = []

        def start_response(s: str, headers: list, exc_info: Any = None) -> None:
            status.append(s)

        out = b"".join(self.app(environ, start_response))
        return status[0], out


@contextmanager
def in_process_server(config: Path) -> Iterator[WsgiCaller]:
    """The server's app bound to `config`'s database in this process (queue: the configured one)."""
    from dutlab.service import queue, tasks  # noqa: F401  (tasks: the pass subscriber)
    from dutlab.service.app import make_app
    from dutlab.service.config import load
    from dutlab.service.db import database, open_database

    settings = load(str(config))
    db = open_database(settings.database)
    queue.configure(settings)
    try:
        yield WsgiCaller(make_app(settings))
    finally:
        if not db.is_closed():
            db.close()
        database.initialize(None)
