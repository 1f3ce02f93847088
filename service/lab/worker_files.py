"""Per-worker files on the server (LAVA's dispatcher.d/<worker>.yaml, env.yaml, env-dut.yaml).

Stored in the database (`WorkerFile`, one row per worker and kind; design principle 4: backed up
with everything else), set and read over REST, XML-RPC (`scheduler.workers.get_config` ...) and
`manage workers config|env|env-dut`, and sent to the worker with each job (`for_job`), which
applies them (dispatcher/workerfiles.py owns the format and the checks). Text is kept as given,
comments included, so `get` returns what `set` stored; an empty text deletes the file.
"""

from __future__ import annotations

from typing import Any

from dutlab.dispatcher.workerfiles import KINDS, WorkerFileError, parse

from ..db import rows_prebuilt, write_txn
from ..errors import bad_request, conflict
from ..models import Worker, WorkerFile, utcnow
from .workers import get_worker

#: the names LAVA's XML-RPC and lavacli use for each kind
RPC_NAMES = {"config": "dispatcher", "env": "env", "env_dut": "env-dut"}
#: the biggest file taken (LAVA's are a few lines)
MAX_TEXT = 64 * 1024


def kind_of(value: str) -> str:
    """A kind as any front end spells it (`config`, `dispatcher`, `env`, `env-dut`, `env_dut`)."""
    kind = RPC_NAMES.get(value, value)
    if kind not in KINDS:
        raise bad_request(f"'{value}' is not a worker file; use one of config, env, env-dut", "kind")
    return kind


def get_text(hostname: str, kind: str) -> str:
    """The file as stored ('' when the worker has none of this kind)."""
    worker = get_worker(hostname)
    row = WorkerFile.get_or_none(WorkerFile.worker == worker, WorkerFile.kind == kind_of(kind))
    return row.text if row is not None else ""


def set_text(hostname: str, kind: str, text: Any) -> bool:
    """Store the file after checking it as the worker will read it; an empty text deletes it.

    Returns whether the worker now has a file of this kind.
    """
    worker = get_worker(hostname)
    kind = kind_of(kind)
    if not isinstance(text, str):
        raise bad_request(f"the {kind} file must be text (YAML), not {type(text).__name__}", "text")
    if len(text) > MAX_TEXT:
        raise bad_request(f"the {kind} file is longer than {MAX_TEXT} characters", "text")
    try:
        parse(kind, text)
    except WorkerFileError as exc:
        raise bad_request(exc.message, exc.path or "text") from None
    with write_txn():
        WorkerFile.delete().where(WorkerFile.worker == worker, WorkerFile.kind == kind).execute()
        if not text.strip():
            return False
        WorkerFile.create(worker=worker, kind=kind, text=text, updated=utcnow())
    return True


def kinds_set(worker: Worker) -> set[str]:
    """The kinds this worker has a file of (the others are LAVA's "default")."""
    return {row.kind for row in WorkerFile.select(WorkerFile.kind).where(WorkerFile.worker == worker)}


def for_job(worker_id: int | None) -> dict[str, dict]:
    """What the job package carries for the job's worker: each kind parsed (empty when it has none).

    By id: every job fetch asks, and the worker's own row is needed only to name it in an error."""
    out = {kind.replace("-", "_"): parse(kind, "") for kind in KINDS}  # a kind not set: nothing changes
    if worker_id is None:
        return out
    for row in rows_prebuilt(WorkerFile, "files of worker", lambda w: WorkerFile.select().where(WorkerFile.worker == w),
                             worker_id):
        try:
            out[row.kind.replace("-", "_")] = parse(row.kind, row.text)
        except WorkerFileError as exc:  # checked when stored, but another dutlab may have stored it
            name = Worker.get_by_id(worker_id).hostname
            raise conflict(f"worker {name}'s {row.kind} file cannot be used: {exc.message}; "
                           f"fix it with 'dutlab-server manage workers {row.kind} set {name} FILE'",
                           exc.path) from None
    return out
