"""Deadlines and cancel as exceptions, raised only inside action code.

SIGALRM carries the nearest deadline (job, action, child) and SIGTERM/SIGINT a cancel. A
signal that arrives while the pipeline runner does its own bookkeeping is only noted and
raised when the next action code starts, so the runner is never cut in half and finalize
always runs. The policy (which timeout applies where) lives in pipeline.py.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import JobCanceled

# Deadlines are enforced by the action's own waits first (they know what they waited for);
# the alarm fires this much later as a backstop for calls that cannot be bounded.
ALARM_GRACE = 0.5


class Expired(BaseException):
    """A deadline passed; carries who owned it so the right frame reports it."""

    def __init__(self, owner: object) -> None:
        super().__init__(owner)
        self.owner = owner


class Interrupts:
    """SIGALRM deadlines and SIGTERM/SIGINT cancel, raised only inside action code."""

    def __init__(self) -> None:
        self.deadlines: list[tuple[float, object]] = []  # outermost first
        self.canceled: str | None = None
        self.active = False
        self._saved: dict[int, Any] = {}

    def install(self) -> None:
        for signum, handler in ((signal.SIGALRM, self._on_alarm), (signal.SIGTERM, self._on_cancel),
                                (signal.SIGINT, self._on_cancel)):
            self._saved[signum] = signal.signal(signum, handler)

    def uninstall(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    @contextmanager
    def limit(self, deadline: float, owner: object) -> Iterator[None]:
        self.deadlines.append((deadline, owner))
        self._arm()
        try:
            yield
        finally:
            self.deadlines.remove((deadline, owner))
            self._arm()

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        self._raise_pending()
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def _arm(self) -> None:
        if not self.deadlines:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        nearest = min(d for d, _ in self.deadlines)
        if math.isfinite(nearest):
            signal.setitimer(signal.ITIMER_REAL, max(0.01, nearest + ALARM_GRACE - time.monotonic()))

    def _expired_owner(self) -> object | None:
        now = time.monotonic()
        # The outermost expired deadline is the one that really ran out (children inherit it).
        return next((owner for deadline, owner in self.deadlines if deadline + ALARM_GRACE <= now), None)

    def _pending(self) -> BaseException | None:
        if self.canceled:
            return JobCanceled(self.canceled)
        owner = self._expired_owner()
        return Expired(owner) if owner is not None else None

    def _raise_pending(self) -> None:
        exc = self._pending()
        if exc is not None:
            raise exc

    def _on_alarm(self, signum: int, frame: Any) -> None:
        self._deliver()
        self._arm()  # not in action code (or fired early): try again shortly

    def _on_cancel(self, signum: int, frame: Any) -> None:
        if not self.canceled:
            self.canceled = f"the job was canceled ({signal.Signals(signum).name} received)"
        self._deliver()

    def _deliver(self) -> None:
        exc = self._pending() if self.active else None
        if exc is not None:
            self.active = False
            raise exc
