"""`manage jobs validate FILE...`: the verdict REST validate and XML-RPC validate give, offline.

The lab itself asks (no user): the definition is checked against the schema and the lab
(device type, tags, usable devices), as a submission is, but not against anyone's permissions.
"""

from __future__ import annotations

import argparse

from ..config import Settings
from ..lab import jobs
from .common import add_verb, emit, formats, noun, read_file

VERDICT_COLUMNS = ["file", "valid", "path", "error"]


def verdict(file: str, settings: Settings) -> dict:
    problem = jobs.first_problem(None, read_file(file) or "", settings)
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


def add_arguments(sub: argparse._SubParsersAction) -> None:
    p = add_verb(noun(sub, "jobs", "job definitions"), "validate", jobs_validate,
                 "check job definitions as a submission would (exit 1 when one is invalid)")
    p.add_argument("files", nargs="+", metavar="FILE", help="job definition (YAML or JSON; '-': stdin)")
    formats(p)
