"""`manage jobs validate FILE...`: the verdict REST validate and XML-RPC validate give, offline;
`manage jobs details ID`: a job and its notifications (state, attempts, last error per recipient);
`manage jobs rm --older-than AGE`: LAVA's retention verb (lab/retention.py).

The lab itself asks (no user): the definition is checked against the schema and the lab
(device type, tags, usable devices), as a submission is, but not against anyone's permissions.
"""

from __future__ import annotations

import argparse

from ..config import Settings
from ..errors import ApiError
from ..lab import job_views, retention, submissions
from ..models import TestJob
from ..notify import rows as notifications
from .common import add_verb, details, emit, formats, noun, read_file

VERDICT_COLUMNS = ["file", "valid", "path", "error"]
NOTIFICATION_COLUMNS = ["id", "event", "method", "recipient", "state", "attempts", "last_error"]


def verdict(file: str, settings: Settings) -> dict:
    problem = submissions.first_problem(None, read_file(file) or "", settings)
    if problem is None:
        return {"file": file, "valid": True, "path": "", "error": ""}
    return {"file": file, "valid": False, "path": problem.path, "error": problem.message}


def _line(row: dict) -> str:
    if row["valid"]:
        return f"{row['file']}: valid"
    where = f" at {row['path']}" if row["path"] else ""
    return f"{row['file']}: invalid{where}: {row['error']}"


def jobs_validate(args: argparse.Namespace, settings: Settings) -> int:
    """One verdict per file (exit 1 when any is invalid)."""
    rows = [verdict(file, settings) for file in args.files]
    if args.format:
        emit(rows, VERDICT_COLUMNS, args.format)
    else:
        for row in rows:
            print(_line(row))
    return 0 if all(row["valid"] for row in rows) else 1


def jobs_details(args: argparse.Namespace, settings: Settings) -> int:
    """The job's fields, then its notifications as a table (or everything as JSON)."""
    job = TestJob.get_or_none(TestJob.id == args.id)
    if job is None:
        raise ApiError(404, f"job '{args.id}' does not exist")
    rows = [notifications.notification_json(n) for n in notifications.for_job(job, None, admin=True)]
    shape = job_views.job_json(job)
    if args.format == "json":
        emit([{**shape, "notifications": rows}], [], "json")
        return 0
    details(shape)
    print(f"\nnotifications ({len(rows)}):" if rows else "\nnotifications: none")
    if rows:
        emit(rows, NOTIFICATION_COLUMNS, args.format)
    return 0


def jobs_rm(args: argparse.Namespace, settings: Settings) -> int:
    """Remove Finished jobs older than --older-than, rows and output folders (--dry-run: list them)."""
    removal = retention.remove_old_jobs(settings, retention.parse_age(args.older_than), args.submitter,
                                        dry_run=args.dry_run, logs_only=args.logs_only)
    verb = "would remove" if args.dry_run else "removed"
    what = "the output folders of" if args.logs_only else ""
    ids = " ".join(map(str, removal.jobs))
    print(f"{verb} {what + ' ' if what else ''}{len(removal.jobs)} job(s) finished more than {args.older_than} ago"
          + (f": {ids}" if ids else "") + f" ({removal.folders} output folder(s))")
    if removal.kept:
        print(f"kept {len(removal.kept)} old job(s), the last health check of a device: "
              + " ".join(map(str, removal.kept)))
    return 0


def add_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "jobs", "job definitions, a job's details and notifications, retention")
    p = add_verb(verbs, "validate", jobs_validate,
                 "check job definitions as a submission would (exit 1 when one is invalid)")
    p.add_argument("files", nargs="+", metavar="FILE", help="job definition (YAML or JSON; '-': stdin)")
    formats(p)
    p = add_verb(verbs, "details", jobs_details, "show a job and its notifications (state, attempts, last error)")
    p.add_argument("id", type=int, metavar="ID")
    formats(p)
    p = add_verb(verbs, "rm", jobs_rm, "remove finished jobs older than an age: rows and output folders")
    p.add_argument("--older-than", required=True, metavar="AGE",
                   help="days (30), or LAVA's forms 12h, 30d, 2w; the age counts from the job's end")
    p.add_argument("--submitter", metavar="USER", help="only this user's jobs")
    p.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    p.add_argument("--logs-only", action="store_true", help="remove the output folders, keep the rows")
