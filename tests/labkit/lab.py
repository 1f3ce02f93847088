"""The tests' lab: backends from the environment, timings a loaded machine cannot trip over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends import backend_urls
from .worker import Lab

#: generous: a loaded 2-core machine must not turn a slow worker into an offline one
TEST_SETTINGS = {
    "worker_heartbeat_timeout": 30,
    "worker_offline_grace": 120,
    "longpoll_timeout": 15,
    "scheduler_sweep": 2,
}
#: short long-polls and cancel grace: a test that stops the server or cancels waits less
TEST_WORKER_ARGS = ("--poll-wait", "5", "--cancel-grace", "5")


def start_lab(tmp: Path, *, consumer: bool = True, serve_args: tuple[str, ...] = (),
              **settings: Any) -> tuple[Lab, Callable[[], None]]:
    """A started lab in `tmp` with an admin (`admin_token`); call the returned stop() when done."""
    database, queue, cleanup = backend_urls(tmp)
    lab = Lab.create(tmp, database=database, queue=queue, settings={**TEST_SETTINGS, **settings},
                     worker_args=TEST_WORKER_ARGS, serve_args=serve_args)
    try:
        lab.bootstrap()
        lab.start(consumer=consumer)
    except BaseException:
        lab.stop()
        cleanup()
        raise

    def stop() -> None:
        try:
            lab.stop()
        finally:
            cleanup()

    return lab, stop
