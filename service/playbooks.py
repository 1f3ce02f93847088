"""Playbooks the server runs itself: on a cron schedule (backups, health checks) or on request.

The queue consumer decides what is due and records a PlaybookRun; the run itself happens in a
child process (`python -m dutlab.service.playbook_runner`), because ansible-runner forks a pty
and must not do that from a consumer thread.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from huey import crontab
from peewee import IntegrityError

from .config import PlaybookSchedule, Settings, config_path, cron_fields
from .errors import ApiError
from .models import PlaybookRun, utcnow

REPO_PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"


def playbooks_dir(settings: Settings) -> Path:
    return Path(settings.playbooks_dir) if settings.playbooks_dir else REPO_PLAYBOOKS


def schedule(settings: Settings, name: str) -> PlaybookSchedule:
    for sched in settings.playbook_schedules:
        if sched.name == name:
            return sched
    known = ", ".join(s.name for s in settings.playbook_schedules) or "none configured"
    raise ApiError(404, f"no playbook schedule named '{name}' (known: {known})", "name")


def is_due(sched: PlaybookSchedule, minute: dt.datetime) -> bool:
    return bool(crontab(*cron_fields(sched.cron))(minute))


def record_due(settings: Settings, now: dt.datetime | None = None) -> list[PlaybookRun]:
    """Create a run for every schedule due this minute, at most once per schedule and minute."""
    minute = (now or utcnow()).replace(second=0, microsecond=0)
    runs = []
    for sched in settings.playbook_schedules:
        if not is_due(sched, minute):
            continue
        try:
            runs.append(PlaybookRun.create(name=sched.name, playbook=sched.playbook, scheduled_for=minute))
        except IntegrityError:
            continue  # already recorded by another check in the same minute
    return runs


def request_run(settings: Settings, name: str) -> PlaybookRun:
    sched = schedule(settings, name)
    return PlaybookRun.create(name=sched.name, playbook=sched.playbook, trigger="api")


def execute(run_id: int) -> int:
    """Run the playbook of `run_id` in a child process; return its exit status."""
    env = dict(os.environ, DUTLAB_CONFIG=config_path(None))
    proc = subprocess.run([sys.executable, "-m", "dutlab.service.playbook_runner", str(run_id)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0 and not PlaybookRun.get_by_id(run_id).finished:
        PlaybookRun.update(status="failed", finished=utcnow(),
                           error=f"playbook runner exited {proc.returncode}: {proc.stderr[-2000:]}").where(
            PlaybookRun.id == run_id).execute()
    return proc.returncode


def run_json(run: PlaybookRun) -> dict:
    import json

    def iso(value):
        return value.isoformat() + "Z" if value else None

    return {
        "id": run.id, "name": run.name, "playbook": run.playbook, "trigger": run.trigger,
        "scheduled_for": iso(run.scheduled_for), "status": run.status, "rc": run.rc,
        "created": iso(run.created), "started": iso(run.started), "finished": iso(run.finished),
        "stats": json.loads(run.stats or "{}"), "failures": json.loads(run.failures or "[]"),
        "error": run.error,
    }
