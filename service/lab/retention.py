"""Job retention: remove finished jobs older than an age, their rows and their output folders
(LAVA's `lava-server manage jobs rm`; docs/admin-cli.md, "Housekeeping").

Only Finished jobs go. The last health check of each device stays, whatever its age: the
health-check schedule counts from it, and without it every device would be due for one. Jobs go
in batches: the folders, then the rows in one transaction (their results, tags and notifications
with them), so an interrupted run leaves rows without folders, which the next run removes.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass, field

from ..config import Settings
from ..db import write_txn
from ..errors import bad_request
from ..logstore import JobFolder
from ..models import Device, TestJob, User, utcnow
from ..states import JobState

AGE_RE = re.compile(r"^(\d+)([hdw]?)$")
UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}
BATCH = 500


def parse_age(text: str) -> dt.timedelta:
    """`30` (days), or LAVA's forms `12h`, `30d`, `2w`."""
    match = AGE_RE.match(str(text).strip())
    if not match:
        raise bad_request(f"age {text!r} is not a number of days, nor LAVA's 12h, 30d or 2w", "older_than")
    return dt.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


@dataclass
class Removal:
    """What a run removed (or would remove, with dry_run)."""

    jobs: list[int] = field(default_factory=list)
    #: the old jobs kept because a device's health-check schedule counts from them
    kept: list[int] = field(default_factory=list)
    folders: int = 0


def old_jobs(age: dt.timedelta, submitter: str | None = None) -> tuple[list[int], list[int]]:
    """(ids to remove, ids kept) of the Finished jobs that ended more than `age` ago."""
    cutoff = utcnow() - age
    query = TestJob.select(TestJob.id).where(
        TestJob.state == JobState.FINISHED,
        TestJob.end_time.is_null(False) & (TestJob.end_time < cutoff) |
        TestJob.end_time.is_null(True) & (TestJob.submit_time < cutoff))
    if submitter is not None:
        user = User.get_or_none(User.username == submitter)
        if user is None:
            raise bad_request(f"user '{submitter}' does not exist", "submitter")
        query = query.where(TestJob.submitter == user)
    ids = [row.id for row in query.order_by(TestJob.id)]
    last_checks = {d.last_health_report_job_id for d in Device.select(Device.last_health_report_job)}
    return [i for i in ids if i not in last_checks], [i for i in ids if i in last_checks]


def remove_old_jobs(settings: Settings, age: dt.timedelta, submitter: str | None = None, dry_run: bool = False,
                    logs_only: bool = False) -> Removal:
    """Remove the old jobs (`logs_only`: only their output folders) and return what went."""
    ids, kept = old_jobs(age, submitter)
    out = Removal(jobs=ids, kept=kept)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        for job_id in chunk:
            path = JobFolder(settings.output_dir, job_id).path
            if path.is_dir():
                out.folders += 1
                if not dry_run:
                    shutil.rmtree(path, ignore_errors=True)
        if not (dry_run or logs_only):
            with write_txn():
                TestJob.delete().where(TestJob.id.in_(chunk), TestJob.state == JobState.FINISHED).execute()
    return out
