"""What every `manage` verb module shares: output as a table, CSV or JSON, option helpers, files.

Output is a table by default, `--csv` or `--json` for scripts (every field).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ApiError
from ..lab.devices import ADMIN_ACTOR

#: a verb: `handler(args, settings)` returns the exit status
Handler = Callable[[argparse.Namespace, Settings], int]

# Output ###########################################################################


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def emit(rows: list[dict], columns: list[str], fmt: str | None) -> None:
    """Print `rows` as a table (default), CSV or JSON (all fields)."""
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(r.get(c)) for c in columns] for r in rows])
        return
    cells = [columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def details(obj: dict) -> None:
    width = max(len(k) for k in obj)
    for key, value in obj.items():
        if isinstance(value, list) and any(" " in str(v) for v in value):
            print(f"{key.ljust(width)} :")
            for item in value:
                print(f"  {item}")
        else:
            print(f"{key.ljust(width)} : {_cell(value)}")


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return ADMIN_ACTOR


def read_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"cannot read {path}: {exc}") from None


def given(**values: Any) -> dict:
    """Only the options that were given (argparse leaves the others None)."""
    return {k: v for k, v in values.items() if v is not None}


# Arguments ########################################################################


def formats(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV output")
    group.add_argument("--json", dest="format", action="store_const", const="json", help="JSON output")


def flag_pair(p: argparse.ArgumentParser, dest: str, on: str, off: str, help_on: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(on, dest=dest, action="store_const", const=True, help=help_on)
    group.add_argument(off, dest=dest, action="store_const", const=False, help="the opposite")


def noun(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """`manage NAME`, whose verbs are added to what this returns."""
    p = sub.add_parser(name, help=help_text)
    return p.add_subparsers(dest="verb", required=True, metavar="VERB")


def add_verb(verbs: argparse._SubParsersAction, verb: str, handler: Handler,
             help_text: str) -> argparse.ArgumentParser:
    p = verbs.add_parser(verb, help=help_text)
    p.set_defaults(handler=handler)
    return p


def add_verbs(verbs: argparse._SubParsersAction, *specs: tuple[str, Handler, str]) -> list[argparse.ArgumentParser]:
    """Several verbs (verb, handler, help) that take the same arguments."""
    return [add_verb(verbs, *spec) for spec in specs]
