"""`manage users|groups|tokens ...`: local accounts, groups with their permissions, API tokens."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings
from ..lab import logins, users
from .common import add_verb, add_verbs, details, emit, flag_pair, formats, given, noun

USER_COLUMNS = ["username", "email", "is_active", "is_superuser", "is_staff", "groups"]


def users_add(args: argparse.Namespace, settings: Settings) -> int:
    data = given(username=args.name, password=args.passwd, email=args.email)
    data.update(is_superuser=args.superuser, **({"is_staff": True} if args.staff else {}))
    user, generated = users.create_user(data, generate_password=True)
    print(f"user '{user.username}' added" + (f"; password: {generated}" if generated else ""))
    return 0


def users_addldapuser(args: argparse.Namespace, settings: Settings) -> int:
    user = logins.add_ldap_user(args.username, settings)
    print(f"user '{user.username}' added from LDAP" + (f" ({user.full_name}, {user.email})" if user.email else ""))
    return 0


def createsuperuser(args: argparse.Namespace, settings: Settings) -> int:
    data = given(username=args.username, password=args.passwd, email=args.email)
    user, generated = users.create_user({**data, "is_superuser": True}, generate_password=True)
    print(f"superuser '{user.username}' added" + (f"; password: {generated}" if generated else ""))
    return 0


def users_update(args: argparse.Namespace, settings: Settings) -> int:
    changes = given(email=args.email, password=args.passwd, is_active=args.active,
                     is_superuser=args.superuser, is_staff=args.staff)
    users.update_user(args.name, changes)
    print(f"user '{args.name}' updated")
    return 0


def users_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = users.list_users(include_inactive=args.all)
    emit([users.user_json(u) for u in rows], USER_COLUMNS, args.format)
    return 0


def users_details(args: argparse.Namespace, settings: Settings) -> int:
    details(users.user_json(users.get_user(args.name)))
    return 0


def groups_add(args: argparse.Namespace, settings: Settings) -> int:
    data: dict[str, Any] = {"name": args.name, "members": args.username or []}
    if args.submitting:
        data["permissions"] = list(users.SUBMITTING)
    users.create_group(data)
    print(f"group '{args.name}' added")
    return 0


def groups_update(args: argparse.Namespace, settings: Settings) -> int:
    perms = users.SUBMITTING if args.submitting else ()
    users.add_to_group(args.name, args.username or [], list(perms))
    print(f"group '{args.name}' updated")
    return 0


def groups_list(args: argparse.Namespace, settings: Settings) -> int:
    columns = ["name", "permissions", "members"] if args.verbose or args.format else ["name"]
    emit([users.group_json(g) for g in users.list_groups()], columns, args.format)
    return 0


def tokens_add(args: argparse.Namespace, settings: Settings) -> int:
    data = given(user=args.user, description=args.description, secret=args.secret)
    _token, secret = users.create_token(data)
    print(secret)
    return 0


def tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    tokens = users.list_tokens(args.user)
    columns = ["id", "user", "description", "prefix", "created", "last_used"]
    emit([users.token_json(t) for t in tokens], columns, args.format)
    return 0


def tokens_rm(args: argparse.Namespace, settings: Settings) -> int:
    if args.token:
        users.delete_token_secret(args.token)
        print("deleted 1 token")
    elif args.id is not None:
        users.delete_token(args.id)
        print(f"deleted token {args.id}")
    else:
        count = users.prune_tokens(args.days)
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
    p = add_verb(verbs, "addldapuser", users_addldapuser, "add a user from the LDAP directory (ldap in server.yaml)")
    p.add_argument("--username", required=True)
    p = add_verb(verbs, "update", users_update, "change a user")
    p.add_argument("name")
    p.add_argument("--email")
    p.add_argument("--passwd")
    flag_pair(p, "active", "--active", "--not-active", "the account may log in")
    flag_pair(p, "superuser", "--superuser", "--not-superuser", "holds every permission")
    flag_pair(p, "staff", "--staff", "--not-staff", "member of the 'staff' group")
    p = add_verb(verbs, "list", users_list, "list users (active ones unless --all)")
    p.add_argument("--all", action="store_true")
    formats(p)
    p = add_verb(verbs, "details", users_details, "show a user")
    p.add_argument("name")


def _groups(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "groups", "groups, their members and permissions")
    for p in add_verbs(verbs, ("add", groups_add, "add a group"),
                       ("update", groups_update, "add members or permissions to a group")):
        p.add_argument("name")
        p.add_argument("--username", action="append", help="add this user to the group (repeatable)")
        p.add_argument("--submitting", action="store_true", help="grant 'submit' and 'cancel_resubmit'")
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
    """The names LAVA admins type: `manage addldapuser --username U`, `manage createsuperuser`."""
    p = sub.add_parser("addldapuser", help="add a user from the LDAP directory (as 'users addldapuser')")
    p.set_defaults(handler=users_addldapuser)
    p.add_argument("--username", required=True)
    p = sub.add_parser("createsuperuser", help="add a superuser (without --passwd a random password is printed)")
    p.set_defaults(handler=createsuperuser)
    p.add_argument("--username", required=True)
    p.add_argument("--email")
    p.add_argument("--passwd")


def add_arguments(sub: argparse._SubParsersAction) -> None:
    _users(sub)
    _lava_verbs(sub)
    _groups(sub)
    _tokens(sub)
