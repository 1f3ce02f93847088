"""`manage workers ...` and `manage maintenance`: dispatcher workers and the whole lab's health."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..lab import maintenance as lab_maintenance
from ..lab import worker_files, workers
from ..lab.devices import HEALTH_ACTOR
from ..states import WorkerHealth
from .common import actor, add_verb, details, emit, formats, given, noun, read_file

#: the choices come from the state enum (upper case, as LAVA's CLI takes them)
WORKER_HEALTHS = tuple(h.name for h in WorkerHealth)

#: the per-worker files (lab/worker_files.py) and what they are, as lavacli names them
FILES = {"config": "dispatcher configuration (LAVA's dispatcher.d/<worker>.yaml)",
         "env": "dutlab-run environment (env.yaml)", "env-dut": "device test shell environment (env-dut.yaml)"}

WORKER_COLUMNS = ["hostname", "state", "health", "job_limit", "version", "last_ping", "devices"]


def workers_add(args: argparse.Namespace, settings: Settings) -> int:
    data = {"hostname": args.name, **given(description=args.description, health=args.health,
                                            job_limit=args.job_limit)}
    worker, token = workers.create_worker(data)
    print(f"worker '{worker.hostname}' added; its token (shown once): {token}")
    return 0


def workers_update(args: argparse.Namespace, settings: Settings) -> int:
    changes = given(description=args.description, health=args.health, job_limit=args.job_limit,
                     reason=args.reason)
    worker = workers.update_worker(args.name, changes, actor())
    print(f"worker '{args.name}' updated ({workers.worker_json(worker)['health']})")
    return 0


def workers_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = workers.workers_json(workers.list_workers(include_retired=args.all))
    emit(rows, WORKER_COLUMNS, args.format)
    return 0


def workers_details(args: argparse.Namespace, settings: Settings) -> int:
    info = workers.worker_json(workers.get_worker(args.name))
    if not args.devices:
        info["devices"] = len(info["devices"])
    details(info)
    return 0


def workers_token(args: argparse.Namespace, settings: Settings) -> int:
    token = workers.regenerate_worker_token(args.name)
    print(f"new token for worker '{args.name}' (shown once; the old one no longer works): {token}")
    return 0


def workers_file(args: argparse.Namespace, settings: Settings) -> int:
    """`workers config|env|env-dut get|set|delete NAME [FILE]`, as lavacli's verbs."""
    if args.action == "get":
        text = worker_files.get_text(args.name, args.kind)
        print(text, end="" if text.endswith("\n") or not text else "\n")
    elif args.action == "set":
        worker_files.set_text(args.name, args.kind, read_file(args.file) or "")
        print(f"worker '{args.name}': {args.kind} stored")
    else:
        worker_files.set_text(args.name, args.kind, "")
        print(f"worker '{args.name}': {args.kind} deleted")
    return 0


def maintenance(args: argparse.Namespace, settings: Settings) -> int:
    changes = lab_maintenance.maintenance(force=args.force, dry_run=args.dry_run, actor=args.user, reason=args.reason)
    for line in changes:
        print(("would change " if args.dry_run else "") + line)
    if not changes:
        print("every device is already in Maintenance or Retired")
    return 0


# Arguments ########################################################################


def _workers(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "workers", "dispatcher workers")
    p = add_verb(verbs, "add", workers_add, "add a worker and print its token")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--health", type=str.upper, choices=WORKER_HEALTHS)
    p.add_argument("--job-limit", type=int, help="jobs at once (0: no limit)")
    p = add_verb(verbs, "update", workers_update, "change a worker (health changes apply to its devices)")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--health", type=str.upper, choices=WORKER_HEALTHS)
    p.add_argument("--job-limit", type=int)
    p.add_argument("--reason", help="why the health changes (kept in the devices' health history)")
    p = add_verb(verbs, "list", workers_list, "list workers (not Retired ones unless --all)")
    p.add_argument("--all", "-a", action="store_true")
    formats(p)
    p = add_verb(verbs, "details", workers_details, "show a worker")
    p.add_argument("name")
    p.add_argument("--devices", action="store_true", help="list the devices, not just count them")
    p = add_verb(verbs, "token", workers_token, "replace a worker's token and print the new one")
    p.add_argument("name")
    for kind, what in FILES.items():
        files = noun(verbs, kind, f"the worker's {what}, sent with each of its jobs")
        for action, text in (("get", "print it"), ("set", "store FILE ('-': stdin; checked first)"),
                             ("delete", "remove it")):
            p = add_verb(files, action, workers_file, text)
            p.set_defaults(kind=kind, action=action)
            p.add_argument("name")
            if action == "set":
                p.add_argument("file", metavar="FILE")



def add_arguments(sub: argparse._SubParsersAction) -> None:
    _workers(sub)
    p = sub.add_parser("maintenance", help="put every device not Retired into Maintenance")
    p.add_argument("--force", action="store_true", help="also cancel the jobs running on them")
    p.add_argument("--dry-run", action="store_true", help="only print what would change")
    p.add_argument("--user", default=HEALTH_ACTOR, help="name recorded in the health history")
    p.add_argument("--reason", default="lab maintenance")
    p.set_defaults(handler=maintenance)
