"""`dutlab-server manage ...`: LAVA's admin verbs (users, groups, tokens, device-types, devices,
device-tags, workers, maintenance, jobs) over the domain functions in `lab/`.

One module per object family holds its verbs and their arguments; this one wires them under
`manage` and runs one. Output is a table by default, `--csv` or `--json` for scripts. A
refused request prints one line on stderr and exits 1; commands that create a secret print it
as the last word of stdout.
"""

from __future__ import annotations

import argparse
import sys

from peewee import DatabaseError

from ..config import Settings
from ..db import connection
from ..errors import ApiError
from . import devices, jobs, users, workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the admin verbs under `dutlab-server manage`."""
    sub = parser.add_subparsers(dest="noun", required=True, metavar="OBJECT")
    users.add_arguments(sub)
    devices.add_arguments(sub)
    workers.add_arguments(sub)
    jobs.add_arguments(sub)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one admin verb; a refusal is one line on stderr and exit status 1."""
    try:
        with connection():
            return args.handler(args, settings)
    except ApiError as exc:
        where = f" ({exc.path})" if exc.path else ""
        print(f"dutlab-server manage: error: {exc.message}{where}", file=sys.stderr)
    except DatabaseError as exc:
        print(f"dutlab-server manage: database error: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
    return 1

