"""Long-poll wake-ups by notification instead of re-reading the database at a fixed rate.

A held long-poll sleeps on its worker's condition here; `events.wake_worker` (the domain's
"this worker has news": a job assigned, a job canceled, a device changed) publishes
WORKER_WAKE after bumping the worker's `wake_seq`, and `woken` below signals the condition in
this process and tells the other processes through the queue backend's own channel:

- Redis queue: a PUBLISH on `<queue name>.wake`; every `serve` process listens (several
  server processes each get it).
- SQLite queue (one host by nature): a datagram to a Linux abstract UNIX socket named after
  the queue file, bound by the one `serve` process. Abstract: no socket file to go stale and no
  108-byte path limit; a datagram only makes the long-poll re-read that worker's `wake_seq`
  (the database stays the truth), so a forged one costs one indexed read.
  An abstract name lives in a network namespace: `serve` and the consumer must share one (they do
  under systemd and in the tests; if not, the safety re-read still picks the job up).
- memory queue (in-process tests): nothing to tell.

The scheduling pass runs in the consumer process, so this cross-process hop is the common
path. A lost message (no server listening yet, a Redis reconnect, a wake made inside a
transaction that is not committed when the poll re-reads) is repaired by the long-poll's slow
safety re-read every `longpoll_interval`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time

from huey.storage import RedisStorage, SqliteStorage

from . import events
from .queue import huey

log = logging.getLogger("dutlab.wakeups")

_lock = threading.Lock()
_conds: dict[int, threading.Condition] = {}
_counts: dict[int, int] = {}
#: tells this process's own Redis messages from other processes'
_ORIGIN = f"{os.getpid()}-{os.urandom(4).hex()}"
_state: dict[str, object] = {"listening": False, "sender": None}


def _new_origin() -> None:
    """A forked server process (serve --processes) is another process: without its own origin it
    would drop its siblings' wake-ups as its own."""
    global _ORIGIN
    _ORIGIN = f"{os.getpid()}-{os.urandom(4).hex()}"


os.register_at_fork(after_in_child=_new_origin)


def _cond(worker_id: int) -> threading.Condition:
    cond = _conds.get(worker_id)
    if cond is None:
        with _lock:
            cond = _conds.setdefault(worker_id, threading.Condition(threading.Lock()))
    return cond


def mark(worker_id: int) -> int:
    """The worker's wake count in this process: take it before reading the database, wait on it after."""
    return _counts.get(worker_id, 0)


def wait(worker_id: int, since: int, timeout: float) -> bool:
    """Sleep until this worker is woken after `mark()` returned `since`, or `timeout` seconds."""
    cond = _cond(worker_id)
    with cond:
        return cond.wait_for(lambda: _counts.get(worker_id, 0) != since, timeout)


def signal(worker_id: int) -> None:
    """Wake this process's long-polls of `worker_id`."""
    cond = _cond(worker_id)
    with cond:
        _counts[worker_id] = _counts.get(worker_id, 0) + 1
        cond.notify_all()


@events.subscribe(events.WORKER_WAKE)
def woken(worker_id: int) -> None:
    signal(worker_id)
    storage = huey.storage
    if isinstance(storage, RedisStorage):
        storage.conn.publish(_channel(), f"{_ORIGIN}:{worker_id}")
    elif isinstance(storage, SqliteStorage) and not _state["listening"]:  # the listener signalled above
        sender = _state["sender"]
        if sender is None:
            sender = _state["sender"] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sender.sendto(str(worker_id).encode(), _address(storage))  # type: ignore[union-attr]
        except OSError:
            pass  # no server listening: its long-polls re-read on their own


def _channel() -> str:
    return f"{huey.name}.wake"


def _address(storage: SqliteStorage) -> bytes:
    digest = hashlib.sha256(os.path.realpath(storage.filename).encode()).hexdigest()[:32]
    return b"\0dutlab-wake-" + digest.encode()


def listen() -> bool:
    """In `serve`: start the thread that turns other processes' wake-ups into signals here.

    Returns False when the queue backend has no channel or it cannot be opened (long-polls
    then wake by their safety re-read only, and the log says why).
    """
    storage = huey.storage
    if isinstance(storage, RedisStorage):
        target = _listen_redis
    elif isinstance(storage, SqliteStorage):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(_address(storage))
        except OSError as exc:
            log.warning("long-poll wake-ups: cannot bind the wake socket of %s (%s; is another server "
                        "running on this queue?): long-polls re-read every longpoll_interval", storage.filename, exc)
            sock.close()
            return False
        _state["listening"] = True

        def target() -> None:
            _listen_socket(sock)
    else:
        return False
    threading.Thread(target=target, name="wakeups", daemon=True).start()
    return True


def _listen_socket(sock: socket.socket) -> None:
    while True:
        try:
            data = sock.recv(64)
        except OSError as exc:  # not expected on a bound datagram socket; never spin on it
            log.warning("long-poll wake-ups: the wake socket failed (%s): long-polls re-read every "
                        "longpoll_interval from now on", exc)
            return
        if data.isdigit():
            signal(int(data))


def _listen_redis() -> None:
    while True:
        try:
            pubsub = huey.storage.conn.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(_channel())
            for message in pubsub.listen():
                origin, _, worker = message["data"].decode().rpartition(":")
                if origin != _ORIGIN and worker.isdigit():
                    signal(int(worker))
        except Exception as exc:  # Redis restarted: resubscribe; the safety re-read covers the gap
            log.warning("long-poll wake-ups: Redis channel %s: %s; resubscribing in 1 s", _channel(), exc)
            time.sleep(1)
