"""Login throttling: failed password checks counted per user name and per client address.

A sliding window: once `limit` failures of one key fall within `window` seconds, further
attempts with that key are refused until the oldest of them is `window` seconds old, even with
the right password (otherwise guessing would simply go on). The counts live in the server
process: a restart forgets them, which costs an attacker a restart of the server.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

#: keys kept at most per kind; past it, the keys whose failures are oldest are forgotten first
MAX_KEYS = 10_000


class _Window:
    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.failures: dict[str, deque[float]] = {}

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0: now)."""
        times = self.failures.get(key)
        if not self.limit or not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.failures[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[-self.limit] + self.window - now

    def add(self, key: str, now: float) -> None:
        if not self.limit:
            return
        times = self.failures.setdefault(key, deque(maxlen=self.limit))
        times.append(now)
        if len(self.failures) > MAX_KEYS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self.failures.items() if not t or t[-1] <= now - self.window]:
            del self.failures[key]
        if len(self.failures) > MAX_KEYS:  # still too many live keys (a spray of user names)
            by_age = sorted(self.failures, key=lambda k: self.failures[k][-1])
            for key in by_age[: len(self.failures) - MAX_KEYS]:
                del self.failures[key]


class LoginThrottle:
    """Per-user and per-address limits on failed logins; 0 turns a limit off."""

    def __init__(self, per_user: int, per_address: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.users = _Window(per_user, window)
        self.addresses = _Window(per_address, window)
        self.clock = clock
        self.lock = threading.Lock()

    def retry_after(self, username: str, address: str) -> int:
        """Whole seconds the caller must wait before this login is checked at all (0: go ahead)."""
        with self.lock:
            now = self.clock()
            wait = max(self.users.wait(username, now), self.addresses.wait(address, now))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        with self.lock:
            now = self.clock()
            self.users.add(username, now)
            self.addresses.add(address, now)

    def succeeded(self, username: str) -> None:
        """The user proved their password: their own count starts again (the address's does not)."""
        with self.lock:
            self.users.failures.pop(username, None)


_APP_LOCK = threading.Lock()


def for_app(config: dict, settings: object) -> LoginThrottle:
    """The one throttle of an app (its `config`), made from its settings at first use: API and web
    logins count failures together."""
    with _APP_LOCK:
        throttle = config.get("dutlab.login_throttle")
        if throttle is None:
            throttle = LoginThrottle(settings.login_failures_per_user, settings.login_failures_per_address,
                                     settings.login_window)
            config["dutlab.login_throttle"] = throttle
    return throttle
