"""Runs one recorded PlaybookRun with ansible-runner (a child of the queue consumer).

`python -m dutlab.service.playbook_runner RUN_ID`; settings from $DUTLAB_CONFIG.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .config import load
from .db import open_database
from .models import PlaybookRun, utcnow
from .playbooks import playbooks_dir, schedule

FAILED_EVENTS = ("runner_on_failed", "runner_on_unreachable")


def _env(settings, book_dir: Path) -> dict:
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_RETRY_FILES_ENABLED": "false", "DUTLAB_CONFIG": os.environ.get("DUTLAB_CONFIG", "")}
    root = book_dir.parent
    if (root / "ansible_collections").is_dir():  # a checkout: its collection and ansible.cfg
        env["ANSIBLE_COLLECTIONS_PATH"] = str(root)
        if (root / "ansible.cfg").is_file():
            env["ANSIBLE_CONFIG"] = str(root / "ansible.cfg")
    return env


def run(run_id: int) -> int:
    import ansible_runner

    settings = load()
    open_database(settings.database)
    rec = PlaybookRun.get_by_id(run_id)
    sched = schedule(settings, rec.name)
    book_dir = playbooks_dir(settings)
    private = Path(settings.data_dir) / "playbook-runs" / str(run_id)
    private.mkdir(parents=True, exist_ok=True)
    PlaybookRun.update(status="running", started=utcnow(), artifacts=str(private)).where(
        PlaybookRun.id == run_id).execute()
    failures: list[dict] = []
    stats: dict = {}

    def on_event(event: dict) -> bool:
        if event.get("event") == "playbook_on_stats":
            data = event.get("event_data", {})
            stats.update({k: data.get(k) or {} for k in ("ok", "changed", "failures", "dark", "skipped", "rescued")})
        if event.get("event") in FAILED_EVENTS:
            data = event.get("event_data", {})
            res = data.get("res") or {}
            failures.append({"host": data.get("host"), "task": data.get("task"),
                             "message": str(res.get("msg") or res.get("stderr") or "")[:1000]})
        return False  # keep the artifacts small: events are summarised in the database

    kwargs = dict(private_data_dir=str(private), project_dir=str(book_dir), playbook=sched.playbook,
                  extravars=sched.extravars, envvars=_env(settings, book_dir), quiet=True, timeout=sched.timeout,
                  event_handler=on_event, suppress_env_files=True, rotate_artifacts=5)
    if sched.inventory:
        kwargs["inventory"] = sched.inventory
    if sched.limit:
        kwargs["limit"] = sched.limit
    try:
        result = ansible_runner.run(**kwargs)
        status, rc = result.status, result.rc
        error = "" if status == "successful" else (result.stdout.read()[-4000:] if result.stdout else "")
    except Exception as exc:  # a broken playbook path or inventory: record it, don't crash the consumer
        status, rc, error = "failed", None, f"{type(exc).__name__}: {exc}"
    PlaybookRun.update(status=status, rc=rc, finished=utcnow(), stats=json.dumps(stats, default=str),
                       failures=json.dumps(failures), error=error).where(PlaybookRun.id == run_id).execute()
    return 0 if status == "successful" else 1


if __name__ == "__main__":
    sys.exit(run(int(sys.argv[1])))
