"""`dutlab-server manage ...`: LAVA's admin verbs (users, groups, tokens, device-types, devices,
device-tags, workers, maintenance) over the domain functions in lab*.py.

Output is a table by default, `--csv` or `--json` for scripts. A refused request prints one
line on stderr and exits 1; commands that create a secret print it as the last word of stdout.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from peewee import DatabaseError

from . import lab, lab_devices, lab_users
from .config import Settings
from .db import connection
from .errors import ApiError

DEVICE_HEALTHS = ("GOOD", "UNKNOWN", "LOOPING", "BAD", "MAINTENANCE", "RETIRED")
DEVICE_STATES = ("IDLE", "RESERVED", "RUNNING")
WORKER_HEALTHS = ("ACTIVE", "MAINTENANCE", "RETIRED")

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


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return lab.CLI_ACTOR


def _read(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"cannot read {path}: {exc}") from None


def _given(**values: Any) -> dict:
    """Only the options that were given (argparse leaves the others None)."""
    return {k: v for k, v in values.items() if v is not None}


# Users, groups, tokens ############################################################

USER_COLUMNS = ["username", "email", "is_active", "is_superuser", "is_staff", "groups"]


def users_add(args: argparse.Namespace, settings: Settings) -> int:
    data = _given(username=args.name, password=args.passwd, email=args.email)
    data.update(is_superuser=args.superuser, **({"is_staff": True} if args.staff else {}))
    user, generated = lab_users.create_user(data, generate_password=True)
    print(f"user '{user.username}' added" + (f"; password: {generated}" if generated else ""))
    return 0


def users_update(args: argparse.Namespace, settings: Settings) -> int:
    changes = _given(email=args.email, password=args.passwd, is_active=args.active,
                     is_superuser=args.superuser, is_staff=args.staff)
    lab_users.update_user(args.name, changes)
    print(f"user '{args.name}' updated")
    return 0


def users_list(args: argparse.Namespace, settings: Settings) -> int:
    users = lab_users.list_users(include_inactive=args.all)
    emit([lab_users.user_json(u) for u in users], USER_COLUMNS, args.format)
    return 0


def users_details(args: argparse.Namespace, settings: Settings) -> int:
    details(lab_users.user_json(lab_users.get_user(args.name)))
    return 0


def groups_add(args: argparse.Namespace, settings: Settings) -> int:
    data: dict[str, Any] = {"name": args.name, "members": args.username or []}
    if args.submitting:
        data["permissions"] = list(lab_users.SUBMITTING)
    lab_users.create_group(data)
    print(f"group '{args.name}' added")
    return 0


def groups_update(args: argparse.Namespace, settings: Settings) -> int:
    perms = lab_users.SUBMITTING if args.submitting else ()
    lab_users.add_to_group(args.name, args.username or [], list(perms))
    print(f"group '{args.name}' updated")
    return 0


def groups_list(args: argparse.Namespace, settings: Settings) -> int:
    columns = ["name", "permissions", "members"] if args.verbose or args.format else ["name"]
    emit([lab_users.group_json(g) for g in lab_users.list_groups()], columns, args.format)
    return 0


def tokens_add(args: argparse.Namespace, settings: Settings) -> int:
    data = _given(user=args.user, description=args.description, secret=args.secret)
    _token, secret = lab_users.create_token(data)
    print(secret)
    return 0


def tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    tokens = lab_users.list_tokens(args.user)
    columns = ["id", "user", "description", "prefix", "created", "last_used"]
    emit([lab_users.token_json(t) for t in tokens], columns, args.format)
    return 0


def tokens_rm(args: argparse.Namespace, settings: Settings) -> int:
    if args.token:
        lab_users.delete_token_secret(args.token)
        print("deleted 1 token")
    elif args.id is not None:
        lab_users.delete_token(args.id)
        print(f"deleted token {args.id}")
    else:
        count = lab_users.prune_tokens(args.days)
        print(f"deleted {count} token(s) unused for {args.days} days")
    return 0


# Device types #####################################################################

DEVICE_TYPE_COLUMNS = ["name", "template", "devices", "health_frequency", "health_denominator",
                       "disable_health_checks", "installed", "template_found"]


def _device_type_data(args: argparse.Namespace) -> dict:
    data = _given(description=args.description, template=args.template, health_frequency=args.health_frequency,
                  health_denominator=args.health_denominator, disable_health_checks=args.disable_health_checks,
                  display=args.display, health_check=_read(args.health_check))
    return data


def device_types_add(args: argparse.Namespace, settings: Settings) -> int:
    data = _device_type_data(args)
    if args.name != "*":
        dtype = lab_devices.create_device_type({"name": args.name, **data})
        print(f"device type '{dtype.name}' added")
        _warn_template(dtype, settings)
        return 0
    known = {d.name for d in lab_devices.list_device_types()}
    for template in lab_devices.available_templates(settings):
        if template not in known:
            lab_devices.create_device_type({"name": template, **data})
            print(f"device type '{template}' added")
    return 0


def _warn_template(dtype, settings: Settings) -> None:
    if not lab_devices.device_type_json(dtype, settings)["template_found"]:
        where = ", ".join(str(p) for p in lab_devices.devicecfg.device_search_path(settings))
        print(f"warning: no template '{lab_devices.devicecfg.template_name(dtype)}.jinja2' in {where}; "
              "devices of this type cannot render until one is installed", file=sys.stderr)


def device_types_update(args: argparse.Namespace, settings: Settings) -> int:
    dtype = lab_devices.update_device_type(args.name, _device_type_data(args))
    print(f"device type '{args.name}' updated")
    _warn_template(dtype, settings)
    return 0


def device_types_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = []
    for dtype in lab_devices.list_device_types():
        row = lab_devices.device_type_json(dtype, settings, full=False)
        rows.append({**row, "devices": len(row["devices"]), "installed": True})
    if args.all:
        known = {r["name"] for r in rows}
        rows += [{"name": t, "template": t, "devices": 0, "installed": False, "template_found": True}
                 for t in lab_devices.available_templates(settings) if t not in known]
        rows.sort(key=lambda r: r["name"])
    emit(rows, DEVICE_TYPE_COLUMNS, args.format)
    return 0


def device_types_details(args: argparse.Namespace, settings: Settings) -> int:
    info = lab_devices.device_type_json(lab_devices.get_device_type(args.name), settings, full=False)
    _text, info["health_check"] = lab_devices.health_check_text(args.name, settings)
    if not args.devices:
        info["devices"] = len(info["devices"])
    details(info)
    return 0


# Devices ##########################################################################

DEVICE_COLUMNS = ["hostname", "device_type", "worker", "state", "health", "owner_user", "owner_group", "tags"]


def _owner_args(args: argparse.Namespace) -> dict:
    data = _given(owner_user=args.owner, owner_group=args.group, physical_user=args.physical_user,
                  physical_group=args.physical_group)
    return {k: v or None for k, v in data.items()}


def devices_add(args: argparse.Namespace, settings: Settings) -> int:
    data = {"hostname": args.hostname, "device_type": args.device_type, "worker": args.worker,
            **_given(description=args.description, dictionary=_read(args.dictionary), tags=args.tags),
            **_owner_args(args)}
    if args.offline:
        data["health"] = "Maintenance"
    device = lab_devices.create_device(data, settings, _actor())
    print(f"device '{device.hostname}' added ({lab_devices.device_json(device)['health']})")
    return 0


def devices_update(args: argparse.Namespace, settings: Settings) -> int:
    changes = {**_given(device_type=args.device_type, worker=args.worker, description=args.description,
                        dictionary=_read(args.dictionary), health=args.health, reason=args.reason),
               **_owner_args(args)}
    if args.no_owner:
        changes.update(owner_user=None, owner_group=None)
    device = lab_devices.update_device(args.hostname, changes, settings, _actor())
    print(f"device '{args.hostname}' updated ({lab_devices.device_json(device)['health']})")
    return 0


def devices_list(args: argparse.Namespace, settings: Settings) -> int:
    devices = lab_devices.list_devices(include_retired=args.all or args.health == "RETIRED",
                                       state=args.state, health=args.health)
    emit([lab_devices.device_json(d) for d in devices], DEVICE_COLUMNS, args.format)
    return 0


def devices_details(args: argparse.Namespace, settings: Settings) -> int:
    info = lab_devices.device_json(lab_devices.get_device(args.hostname))
    history = lab_devices.health_history(args.hostname)[:5]
    info["health_history"] = [f"{h['time']} {h['old_health']} → {h['new_health']} by {h['actor']}: {h['reason']}"
                              for h in map(lab_devices.history_json, history)]
    details(info)
    return 0


def device_tags_add(args: argparse.Namespace, settings: Settings) -> int:
    print(" ".join(lab_devices.add_device_tags(args.hostname, args.tags)))
    return 0


def device_tags_remove(args: argparse.Namespace, settings: Settings) -> int:
    print(" ".join(lab_devices.remove_device_tags(args.hostname, args.tags)))
    return 0


def device_tags_show(args: argparse.Namespace, settings: Settings) -> int:
    print(" ".join(lab_devices.device_tags(lab_devices.get_device(args.hostname))))
    return 0


def device_tags_list(args: argparse.Namespace, settings: Settings) -> int:
    emit([lab.tag_json(t, devices=True) for t in lab.list_tags()], ["name", "description", "devices"], args.format)
    return 0


def device_tags_create(args: argparse.Namespace, settings: Settings) -> int:
    lab.create_tag({"name": args.name, "description": args.description})
    print(f"tag '{args.name}' added")
    return 0


# Workers, maintenance #############################################################

WORKER_COLUMNS = ["hostname", "state", "health", "job_limit", "version", "last_ping", "devices"]


def workers_add(args: argparse.Namespace, settings: Settings) -> int:
    data = {"hostname": args.name, **_given(description=args.description, health=args.health,
                                            job_limit=args.job_limit)}
    worker, token = lab.create_worker(data)
    print(f"worker '{worker.hostname}' added; its token (shown once): {token}")
    return 0


def workers_update(args: argparse.Namespace, settings: Settings) -> int:
    changes = _given(description=args.description, health=args.health, job_limit=args.job_limit,
                     reason=args.reason)
    worker = lab.update_worker(args.name, changes, _actor())
    print(f"worker '{args.name}' updated ({lab.worker_json(worker)['health']})")
    return 0


def workers_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = [lab.worker_json(w) for w in lab.list_workers(include_retired=args.all)]
    emit(rows, WORKER_COLUMNS, args.format)
    return 0


def workers_details(args: argparse.Namespace, settings: Settings) -> int:
    info = lab.worker_json(lab.get_worker(args.name))
    if not args.devices:
        info["devices"] = len(info["devices"])
    details(info)
    return 0


def workers_token(args: argparse.Namespace, settings: Settings) -> int:
    token = lab.regenerate_worker_token(args.name)
    print(f"new token for worker '{args.name}' (shown once; the old one no longer works): {token}")
    return 0


def maintenance(args: argparse.Namespace, settings: Settings) -> int:
    changes = lab.maintenance(force=args.force, dry_run=args.dry_run, actor=args.user, reason=args.reason)
    for line in changes:
        print(("would change " if args.dry_run else "") + line)
    if not changes:
        print("every device is already in Maintenance or Retired")
    return 0


# Arguments ########################################################################


def _formats(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV output")
    group.add_argument("--json", dest="format", action="store_const", const="json", help="JSON output")


def _flag_pair(p: argparse.ArgumentParser, dest: str, on: str, off: str, help_on: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(on, dest=dest, action="store_const", const=True, help=help_on)
    group.add_argument(off, dest=dest, action="store_const", const=False, help="the opposite")


def _verbs(sub: argparse._SubParsersAction, noun: str, help_text: str) -> argparse._SubParsersAction:
    p = sub.add_parser(noun, help=help_text)
    return p.add_subparsers(dest="verb", required=True, metavar="VERB")


def _add(verbs: argparse._SubParsersAction, verb: str, handler, help_text: str) -> argparse.ArgumentParser:
    p = verbs.add_parser(verb, help=help_text)
    p.set_defaults(handler=handler)
    return p


def _users_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = _verbs(sub, "users", "local user accounts")
    p = _add(verbs, "add", users_add, "add a user (without --passwd a random password is printed)")
    p.add_argument("name")
    p.add_argument("--passwd")
    p.add_argument("--email")
    p.add_argument("--superuser", action="store_true")
    p.add_argument("--staff", action="store_true", help="member of the 'staff' group (admin permission)")
    p = _add(verbs, "update", users_update, "change a user")
    p.add_argument("name")
    p.add_argument("--email")
    p.add_argument("--passwd")
    _flag_pair(p, "active", "--active", "--not-active", "the account may log in")
    _flag_pair(p, "superuser", "--superuser", "--not-superuser", "holds every permission")
    _flag_pair(p, "staff", "--staff", "--not-staff", "member of the 'staff' group")
    p = _add(verbs, "list", users_list, "list users (active ones unless --all)")
    p.add_argument("--all", action="store_true")
    _formats(p)
    p = _add(verbs, "details", users_details, "show a user")
    p.add_argument("name")


def _groups_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = _verbs(sub, "groups", "groups, their members and permissions")
    for verb, handler, help_text in (("add", groups_add, "add a group"),
                                     ("update", groups_update, "add members or permissions to a group")):
        p = _add(verbs, verb, handler, help_text)
        p.add_argument("name")
        p.add_argument("--username", action="append", help="add this user to the group (repeatable)")
        p.add_argument("--submitting", action="store_true", help="grant 'submit' and 'cancel_resubmit'")
    p = _add(verbs, "list", groups_list, "list groups")
    p.add_argument("--verbose", "-v", action="store_true", help="show members and permissions")
    _formats(p)


def _tokens_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = _verbs(sub, "tokens", "API tokens (the secret is printed once)")
    p = _add(verbs, "add", tokens_add, "create a token and print its secret")
    p.add_argument("--user", "-u", required=True)
    p.add_argument("--description", "-d")
    p.add_argument("--secret", help="use this secret (e.g. a token migrated from LAVA)")
    p = _add(verbs, "list", tokens_list, "list a user's tokens")
    p.add_argument("--user", "-u", required=True)
    _formats(p)
    p = _add(verbs, "rm", tokens_rm, "delete a token, or the tokens unused for --days")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--token", help="the token's secret")
    group.add_argument("--id", type=int, help="the token's id (from 'tokens list')")
    group.add_argument("--days", "-n", type=int, default=730)


def _device_type_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--description")
    p.add_argument("--template", help="template name without .jinja2 (default: the type name)")
    p.add_argument("--health-frequency", type=int)
    p.add_argument("--health-denominator", choices=["hours", "jobs"])
    p.add_argument("--health-check", metavar="FILE", help="health-check job definition ('-': stdin)")
    _flag_pair(p, "display", "--show", "--hide", "show the type in lists and the dashboard")


def _device_types_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = _verbs(sub, "device-types", "device types")
    p = _add(verbs, "add", device_types_add, "add a device type ('*': every installed template)")
    p.add_argument("name")
    _device_type_options(p)
    p.add_argument("--disable-health-checks", action="store_const", const=True)
    p = _add(verbs, "update", device_types_update, "change a device type")
    p.add_argument("name")
    _device_type_options(p)
    _flag_pair(p, "disable_health_checks", "--disable-health-checks", "--enable-health-checks",
               "no health checks for devices of this type")
    p = _add(verbs, "list", device_types_list, "list device types")
    p.add_argument("--all", "-a", action="store_true", help="also templates not added as device types")
    _formats(p)
    p = _add(verbs, "details", device_types_details, "show a device type")
    p.add_argument("name")
    p.add_argument("--devices", action="store_true", help="list the devices, not just count them")


def _owner_options(p: argparse.ArgumentParser) -> None:
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--owner", metavar="USER", help="only this user may submit to the device")
    owner.add_argument("--group", metavar="GROUP", help="only members of this group may submit")
    physical = p.add_mutually_exclusive_group()
    physical.add_argument("--physical-user", metavar="USER", help="who has physical access")
    physical.add_argument("--physical-group", metavar="GROUP", help="which group has physical access")


def _devices_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = _verbs(sub, "devices", "devices")
    p = _add(verbs, "add", devices_add, "add a device (health Unknown, or Maintenance with --offline)")
    p.add_argument("hostname")
    p.add_argument("--device-type", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--dictionary", metavar="FILE", help="device dictionary (jinja2; '-': stdin)")
    p.add_argument("--tags", nargs="+", metavar="TAG", help="tags, created when missing")
    p.add_argument("--description")
    p.add_argument("--offline", action="store_true", help="start in Maintenance")
    _owner_options(p)
    p = _add(verbs, "update", devices_update, "change a device")
    p.add_argument("hostname")
    p.add_argument("--device-type")
    p.add_argument("--worker")
    p.add_argument("--dictionary", metavar="FILE", help="device dictionary (jinja2; '-': stdin)")
    p.add_argument("--description")
    p.add_argument("--health", type=str.upper, choices=DEVICE_HEALTHS)
    p.add_argument("--reason", help="why the health changes (kept in the health history)")
    p.add_argument("--no-owner", action="store_true", help="anyone may submit to the device")
    _owner_options(p)
    p = _add(verbs, "list", devices_list, "list devices (not Retired ones unless --all)")
    p.add_argument("--state", type=str.upper, choices=DEVICE_STATES)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--health", type=str.upper, choices=DEVICE_HEALTHS)
    which.add_argument("--all", "-a", action="store_true")
    _formats(p)
    p = _add(verbs, "details", devices_details, "show a device and its recent health changes")
    p.add_argument("hostname")


def _device_tags_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = _verbs(sub, "device-tags", "tags on devices")
    for verb, handler, help_text in (("add", device_tags_add, "tag a device (tags are created when missing)"),
                                     ("remove", device_tags_remove, "untag a device")):
        p = _add(verbs, verb, handler, help_text)
        p.add_argument("hostname")
        p.add_argument("--tags", nargs="+", required=True, metavar="TAG")
    p = _add(verbs, "show", device_tags_show, "a device's tags")
    p.add_argument("hostname")
    p = _add(verbs, "list", device_tags_list, "every tag and its devices")
    _formats(p)
    p = _add(verbs, "create", device_tags_create, "add a tag")
    p.add_argument("name")
    p.add_argument("description", nargs="?", default="")


def _workers_arguments(sub: argparse._SubParsersAction) -> None:
    verbs = _verbs(sub, "workers", "dispatcher workers")
    p = _add(verbs, "add", workers_add, "add a worker and print its token")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--health", type=str.upper, choices=WORKER_HEALTHS)
    p.add_argument("--job-limit", type=int, help="jobs at once (0: no limit)")
    p = _add(verbs, "update", workers_update, "change a worker (health changes apply to its devices)")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--health", type=str.upper, choices=WORKER_HEALTHS)
    p.add_argument("--job-limit", type=int)
    p.add_argument("--reason", help="why the health changes (kept in the devices' health history)")
    p = _add(verbs, "list", workers_list, "list workers (not Retired ones unless --all)")
    p.add_argument("--all", "-a", action="store_true")
    _formats(p)
    p = _add(verbs, "details", workers_details, "show a worker")
    p.add_argument("name")
    p.add_argument("--devices", action="store_true", help="list the devices, not just count them")
    p = _add(verbs, "token", workers_token, "replace a worker's token and print the new one")
    p.add_argument("name")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the admin verbs under `dutlab-server manage`."""
    sub = parser.add_subparsers(dest="noun", required=True, metavar="OBJECT")
    _users_arguments(sub)
    _groups_arguments(sub)
    _tokens_arguments(sub)
    _device_types_arguments(sub)
    _devices_arguments(sub)
    _device_tags_arguments(sub)
    _workers_arguments(sub)
    p = sub.add_parser("maintenance", help="put every device not Retired into Maintenance")
    p.add_argument("--force", action="store_true", help="also cancel the jobs running on them")
    p.add_argument("--dry-run", action="store_true", help="only print what would change")
    p.add_argument("--user", default="dutlab-health", help="name recorded in the health history")
    p.add_argument("--reason", default="lab maintenance")
    p.set_defaults(handler=maintenance)


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
