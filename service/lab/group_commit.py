"""Group commit: concurrent submissions share one write transaction (leader/follower).

A submission is answered only after the transaction holding its job committed, so one commit per
submission caps a server at the database's single-row commits/s, however many clients it has.
Here a request thread queues its write (a function that stores rows) and waits; the first waiter
that finds no commit in progress becomes the leader, takes every write queued so far, runs them in
one transaction on its own connection (peewee's connections are per thread: the rows all go
through the leader's) and commits; then every waiter of that batch gets its own result and the
next batch gets a leader. Only one thread of a process writes submissions at a time, which is
what SQLite's single writer allows anyway.

Validation happens before `run` (outside the transaction). In a batch of several writes each runs
inside its own savepoint, so a write that fails (a constraint: its device type was removed since
it was validated) rolls back alone and fails only its own request; a commit that fails fails the
whole batch, and nobody of it was answered yet. A lone write needs no savepoint (serial clients
pay one BEGIN and one COMMIT, as before).

The counters SUBMISSION_COMMITS and SUBMISSION_WRITES (GET /metrics) show how many transactions
stored how many writes in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from peewee import IntegrityError

from ..db import database, write_txn
from ..errors import conflict
from ..metrics.record import SUBMISSION_COMMITS, SUBMISSION_WRITES

T = TypeVar("T")

#: writes one transaction takes at most (a bulk submission counts as one write)
MAX_BATCH = 256


class _Write(Generic[T]):
    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


_cond = threading.Condition()
_queued: list[_Write[Any]] = []
_leading = False


def waiting() -> int:
    """Writes queued behind the transaction in progress (what the tests watch)."""
    with _cond:
        return len(_queued)


def run(fn: Callable[[], T]) -> T:
    """Run `fn` (it stores rows) in a write transaction shared with the writes of concurrent
    callers; return its result once that transaction committed, or raise its own error."""
    global _leading
    if database.in_transaction():  # already inside the caller's transaction: it commits
        return fn()
    write = _Write(fn)
    with _cond:
        _queued.append(write)
    while True:
        with _cond:
            while not write.done and _leading:
                _cond.wait()
            if write.done:
                break
            _leading = True  # no commit in progress: this thread leads the next batch
            batch = _queued[:MAX_BATCH]
            del _queued[:MAX_BATCH]
        try:
            _commit(batch)  # a long queue may need more than one batch before this write's
        finally:
            with _cond:
                _leading = False
                _cond.notify_all()
    if write.error is not None:
        raise write.error
    return write.result  # type: ignore[return-value]


def _commit(batch: list[_Write[Any]]) -> None:
    """Store `batch` in one transaction; every write ends done, with its result or its error."""
    try:
        with write_txn():
            if len(batch) == 1:
                batch[0].result = batch[0].fn()
            else:
                for write in batch:
                    try:
                        with database.atomic():  # a savepoint: a failing write rolls back alone
                            write.result = write.fn()
                    except Exception as exc:  # noqa: BLE001 - it is that request's error, raised there
                        write.error = _refusal(exc)
        SUBMISSION_COMMITS.inc()
        SUBMISSION_WRITES.inc(sum(1 for write in batch if write.error is None))
    except BaseException as exc:  # the commit (or a lone write) failed: nothing of the batch is stored
        for write in batch:
            write.result, write.error = None, write.error or _refusal(exc)
        if not isinstance(exc, Exception):
            raise
    finally:
        for write in batch:
            write.done = True


def _refusal(exc: BaseException) -> BaseException:
    """A constraint the stored rows broke is the submitter's 409 (what it named went away after
    the check); anything else stays what it was (the server's error)."""
    if isinstance(exc, IntegrityError):
        what = str(exc).splitlines()[0] if str(exc) else "a constraint"
        return conflict(f"the job could not be stored ({what}): something it names (device type, tag, group, "
                        "user) changed since it was checked; submit it again")
    return exc
