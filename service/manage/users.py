"""`manage users|groups|tokens ...`: local accounts, groups with their permissions, API tokens."""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

from ..config import Settings
from ..errors import ApiError
from ..lab import logins, tokens, users
from ..states import PERMISSIONS
from .common import add_verb, add_verbs, details, emit, flag_pair, formats, given, noun

USER_COLUMNS = ["username", "email", "is_active", "is_superuser", "is_staff", "groups"]


def users_add(args: argparse.Namespace, settings: Settings) -> int:
    data = given(username=args.name, password=args.passwd, email=args.email)
    data.update(is_superuser=args.superuser, **({"is_staff": True} if args.staff else {}))
    if args.permission:
        data["permissions"] = args.permission
    user, generated = users.create_user(data, generate_password=True)
    print(f"user '{user.username}' added" + (f"; password: {generated}" if generated else ""))
    return 0


def users_addldapuser(args: argparse.Namespace, settings: Settings) -> int:
    user = logins.add_ldap_user(args.username, settings)
    print(f"user '{user.username}' added from LDAP" + (f" ({user.full_name}, {user.email})" if user.email else ""))
    return 0


def users_update(args: argparse.Namespace, settings: Settings) -> int:
    changes = given(email=args.email, password=args.passwd, is_active=args.active,
                     is_superuser=args.superuser, is_staff=args.staff)
    if changes or not (args.permission or args.remove_permission):
        users.update_user(args.name, changes)
    if args.permission or args.remove_permission:
        users.change_user_permissions(args.name, args.permission or [], args.remove_permission or [])
    print(f"user '{args.name}' updated")
    return 0


def createsuperuser(args: argparse.Namespace, settings: Settings) -> int:
    """Django's `createsuperuser`, as LAVA admins run it: prompts unless --noinput; a password
    from DJANGO_SUPERUSER_PASSWORD (or DUTLAB_SUPERUSER_PASSWORD), else a random one printed."""
    username, email = args.username, args.email
    password = args.passwd or os.environ.get("DUTLAB_SUPERUSER_PASSWORD") or os.environ.get("DJANGO_SUPERUSER_PASSWORD")
    if not args.noinput and not args.passwd:
        username = username or input("Username: ").strip()
        email = email if email is not None else input("Email address: ").strip()
        if password is None:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password (again): ") != password:
                raise ApiError(400, "the two passwords differ; nothing was created")
    if not username:
        raise ApiError(400, "--username is required with --noinput", "username")
    data = given(username=username, email=email or None, password=password or None)
    user, generated = users.create_user({**data, "is_superuser": True}, generate_password=True)
    print(f"superuser '{user.username}' created" + (f"; password: {generated}" if generated else ""))
    return 0


def users_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = users.list_users(include_inactive=args.all)
    emit(users.users_json(rows), USER_COLUMNS, args.format)
    return 0


def users_details(args: argparse.Namespace, settings: Settings) -> int:
    details(users.user_json(users.get_user(args.name)))
    return 0


def _granted(args: argparse.Namespace) -> list[str]:
    return [*(users.SUBMITTING if args.submitting else ()), *(args.permission or [])]


def groups_add(args: argparse.Namespace, settings: Settings) -> int:
    data: dict[str, Any] = {"name": args.name, "members": args.username or []}
    if _granted(args):
        data["permissions"] = _granted(args)
    users.create_group(data)
    print(f"group '{args.name}' added")
    return 0


def groups_update(args: argparse.Namespace, settings: Settings) -> int:
    users.add_to_group(args.name, args.username or [], _granted(args), args.remove_username or [],
                       args.remove_permission or [])
    print(f"group '{args.name}' updated")
    return 0


def groups_list(args: argparse.Namespace, settings: Settings) -> int:
    columns = ["name", "permissions", "members"] if args.verbose or args.format else ["name"]
    emit(users.groups_json(users.list_groups()), columns, args.format)
    return 0


def tokens_add(args: argparse.Namespace, settings: Settings) -> int:
    data = given(user=args.user, description=args.description, secret=args.secret)
    _token, secret = tokens.create_token(data)
    print(secret)
    return 0


def tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = tokens.list_tokens(args.user)
    columns = ["id", "user", "description", "prefix", "created", "last_used"]
    emit([tokens.token_json(t) for t in rows], columns, args.format)
    return 0


def tokens_rm(args: argparse.Namespace, settings: Settings) -> int:
    if args.token:
        tokens.delete_token_secret(args.token)
        print("deleted 1 token")
    elif args.id is not None:
        tokens.delete_token(args.id)
        print(f"deleted token {args.id}")
    else:
        count = tokens.prune_tokens(args.days)
        print(f"deleted {count} token(s) unused for {args.days} days")
    return 0


# Arguments ########################################################################


def _users(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "users", "local user accounts")
    p = add_verb(verbs, "add", users_add, "add a user (without --passwd a random password is printed)")
    p.add_argument("name")
    p.add_argument("--passwd")
    p.add_argument("--email")
    p.add_argument("--superuser", action="store_true")
    p.add_argument("--staff", action="store_true", help="member of the 'staff' group (admin permission)")
    _permission_options(p, remove=False)
    p = add_verb(verbs, "addldapuser", users_addldapuser, "add a user from the LDAP directory (ldap in server.yaml)")
    p.add_argument("--username", required=True)
    p = add_verb(verbs, "update", users_update, "change a user")
    p.add_argument("name")
    p.add_argument("--email")
    p.add_argument("--passwd")
    flag_pair(p, "active", "--active", "--not-active", "the account may log in")
    flag_pair(p, "superuser", "--superuser", "--not-superuser", "holds every permission")
    flag_pair(p, "staff", "--staff", "--not-staff", "member of the 'staff' group")
    _permission_options(p, remove=True)
    p = add_verb(verbs, "list", users_list, "list users (active ones unless --all)")
    p.add_argument("--all", action="store_true")
    formats(p)
    p = add_verb(verbs, "details", users_details, "show a user")
    p.add_argument("name")


def _permission_options(p: argparse.ArgumentParser, remove: bool) -> None:
    names = ", ".join(PERMISSIONS)
    p.add_argument("--permission", action="append", metavar="PERM",
                   help=f"grant this permission (repeatable): {names}, or LAVA's codename (cancel_resubmit_testjob)")
    if remove:
        p.add_argument("--remove-permission", action="append", metavar="PERM", help="revoke it (repeatable)")


def _groups(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "groups", "groups, their members and permissions")
    for p in add_verbs(verbs, ("add", groups_add, "add a group"),
                       ("update", groups_update, "add or remove members and permissions of a group")):
        p.add_argument("name")
        p.add_argument("--username", action="append", help="add this user to the group (repeatable)")
        p.add_argument("--submitting", action="store_true", help="grant 'submit' and 'cancel_resubmit'")
        _permission_options(p, remove=p.prog.endswith("update"))
        if p.prog.endswith("update"):
            p.add_argument("--remove-username", action="append", metavar="USER",
                           help="remove this user from the group (repeatable)")
    p = add_verb(verbs, "list", groups_list, "list groups")
    p.add_argument("--verbose", "-v", action="store_true", help="show members and permissions")
    formats(p)


def _tokens(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "tokens", "API tokens (the secret is printed once)")
    p = add_verb(verbs, "add", tokens_add, "create a token and print its secret")
    p.add_argument("--user", "-u", required=True)
    p.add_argument("--description", "-d")
    p.add_argument("--secret", help="use this secret (e.g. a token migrated from LAVA)")
    p = add_verb(verbs, "list", tokens_list, "list a user's tokens")
    p.add_argument("--user", "-u", required=True)
    formats(p)
    p = add_verb(verbs, "rm", tokens_rm, "delete a token, or the tokens unused for --days")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--token", help="the token's secret")
    group.add_argument("--id", type=int, help="the token's id (from 'tokens list')")
    group.add_argument("--days", "-n", type=int, default=730)



def _lava_verbs(sub: argparse._SubParsersAction) -> None:
    """The names LAVA admins type: `manage addldapuser --username U` (createsuperuser: below)."""
    p = sub.add_parser("addldapuser", help="add a user from the LDAP directory (as 'users addldapuser')")
    p.set_defaults(handler=users_addldapuser)
    p.add_argument("--username", required=True)


def add_arguments(sub: argparse._SubParsersAction) -> None:
    _users(sub)
    _lava_verbs(sub)
    _groups(sub)
    _tokens(sub)
    p = sub.add_parser("createsuperuser", help="add a superuser (Django's command, as LAVA admins know it)")
    p.add_argument("--username")
    p.add_argument("--email")
    p.add_argument("--passwd", help="the password (else DJANGO_SUPERUSER_PASSWORD, a prompt, or a random one)")
    p.add_argument("--noinput", "--no-input", action="store_true",
                   help="ask nothing: the password comes from DJANGO_SUPERUSER_PASSWORD, else one is printed")
    p.set_defaults(handler=createsuperuser)
