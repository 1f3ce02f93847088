"""Users and groups, their members and permissions (API tokens: tokens.py).

dutlab's User has no `is_staff` column; LAVA's "staff" flag maps to membership of the group
`staff`, which holds the "admin" permission (docs/admin-cli.md says so).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import auth
from ..db import write_txn
from ..errors import ApiError, bad_request, conflict, forbidden
from ..models import Device, Group, GroupMember, GroupPermission, TestJob, User, UserPermission, utcnow
from ..states import PERMISSIONS
from ..throttle import LoginThrottle
from .checks import boolean, check_fields, grouped, insert, iso, lookup, string_list, text

USERNAME_RE = re.compile(r"^[\w.@+-]{1,150}$")
GROUPNAME_RE = re.compile(r"^[\w .@+-]{1,150}$")
USER_FIELDS = ("username", "email", "password", "is_active", "is_superuser", "is_staff", "groups", "permissions")
#: fields a user may change on their own account
SELF_FIELDS = ("email", "password")
GROUP_FIELDS = ("name", "permissions", "members")
STAFF_GROUP = "staff"
#: what `groups add --submitting` grants
SUBMITTING = ("submit", "cancel_resubmit")

# Users ############################################################################


def get_user(username: str, path: str | None = None) -> User:
    return lookup(User, "username", username, "user", path)


class UserLists:
    """The groups and direct permissions of a page of users, in two queries whatever its size."""

    def __init__(self, found: list[User]) -> None:
        ids = [u.id for u in found]
        self.groups = grouped(GroupMember.select(GroupMember.user, Group.name).join(Group)
                              .where(GroupMember.user.in_(ids)).order_by(Group.name).tuples())
        self.permissions = grouped(UserPermission.select(UserPermission.user, UserPermission.perm)
                                   .where(UserPermission.user.in_(ids)).order_by(UserPermission.perm).tuples())


def user_json(user: User, lists: UserLists | None = None) -> dict:
    """The one JSON shape of a user (never the password hash); `lists`, those of a page of users
    (`users_json`)."""
    lists = lists or UserLists([user])
    groups = lists.groups.get(user.id, [])
    return {
        "username": user.username,
        "email": user.email,
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
        "is_staff": STAFF_GROUP in groups,
        "groups": groups,
        #: granted to the user directly (its groups' permissions are the groups')
        "permissions": sorted(lists.permissions.get(user.id, [])),
        "date_joined": iso(user.date_joined),
        "last_login": iso(user.last_login),
    }


def users_json(found: list[User]) -> list[dict]:
    """`user_json` of each user, in a fixed number of queries."""
    lists = UserLists(found)
    return [user_json(u, lists) for u in found]


def list_users(include_inactive: bool = True) -> list[User]:
    query = User.select().order_by(User.username)
    if not include_inactive:
        query = query.where(User.is_active == True)  # noqa: E712 (peewee expression)
    return list(query)


def _username(value: Any) -> str:
    if not isinstance(value, str) or not USERNAME_RE.match(value):
        raise bad_request(f"username {value!r} is not valid: use up to 150 letters, digits and @.+-_", "username")
    return value


def _password(value: Any) -> str:
    password = text(value, "password", 1024)
    if len(password) < 4:
        raise bad_request("the password must have at least 4 characters", "password")
    return auth.hash_password(password)


def create_user(data: Mapping[str, Any], caller: User | None = None,
                generate_password: bool = False) -> tuple[User, str | None]:
    """Add a user; return it and the generated password (None when one was given or not wanted).

    :param caller: who asks (None: the admin CLI); only superusers create superusers.
    """
    check_fields(data, USER_FIELDS, required=("username",))
    username = _username(data["username"])
    if User.get_or_none(User.username == username):
        raise conflict(f"user '{username}' already exists", "username")
    _check_escalation(data, caller)
    fields = _user_fields(data)
    generated = None
    if data.get("password") is None and generate_password:
        generated = auth.random_password(12)
        fields["password_hash"] = auth.hash_password(generated)
    with write_txn():
        user = insert(lambda: User.create(username=username, **fields), f"user '{username}'", "username")
        _set_memberships(user, data)
    return User.get_by_id(user.id), generated


def _user_fields(data: Mapping[str, Any]) -> dict:
    fields: dict[str, Any] = {}
    for key in ("is_active", "is_superuser"):
        if key in data:
            fields[key] = boolean(data[key], key)
    if "email" in data:
        fields["email"] = text(data["email"], "email", 254)
    if data.get("password") is not None:
        fields["password_hash"] = _password(data["password"])
    return fields


def _check_escalation(data: Mapping[str, Any], caller: User | None) -> None:
    """Only superusers hand out privileges through an account: `admin` already holds every
    group permission, so the one thing above it, the superuser flag, stays with superusers."""
    if caller is None or caller.is_superuser:
        return
    for key in ("is_superuser", "is_staff", "groups", "permissions"):
        if key in data:
            raise forbidden(f"only a superuser may set '{key}'")


def check_may_manage(caller: User | None, target: User, action: str) -> None:
    """Only a superuser acts on a superuser's account or tokens: an `admin` who could set a
    superuser's password or mint a token for them would hold every right (None: the admin CLI)."""
    if caller is not None and target.is_superuser and not caller.is_superuser:
        raise forbidden(f"user '{caller.username}' may not {action} '{target.username}': "
                        f"only a superuser may {action} a superuser")


def _set_memberships(user: User, data: Mapping[str, Any]) -> None:
    if "permissions" in data:  # the whole list, as for a group
        perms = _permissions(data["permissions"])
        UserPermission.delete().where(UserPermission.user == user, UserPermission.perm.not_in(perms or [""])).execute()
        for perm in perms:
            UserPermission.get_or_create(user=user, perm=perm)
    if "groups" in data:
        groups = [get_group(n, f"groups[{i}]") for i, n in enumerate(string_list(data["groups"], "groups"))]
        wanted = {g.id for g in groups}
        GroupMember.delete().where(GroupMember.user == user, GroupMember.group.not_in(list(wanted) or [0])).execute()
        for group in groups:
            GroupMember.get_or_create(group=group, user=user)
    if "is_staff" in data:
        staff = _staff_group()
        if boolean(data["is_staff"], "is_staff"):
            GroupMember.get_or_create(group=staff, user=user)
        else:
            GroupMember.delete().where(GroupMember.user == user, GroupMember.group == staff).execute()


def _staff_group() -> Group:
    group = auth.ensure_group(STAFF_GROUP)
    GroupPermission.get_or_create(group=group, perm="admin")
    return group


def update_user(username: str, changes: Mapping[str, Any], caller: User | None = None) -> User:
    """Change the given fields; a non-admin caller may change only their own email and password."""
    user = get_user(username)
    check_fields(changes, USER_FIELDS)
    if "username" in changes and changes["username"] != username:
        raise bad_request("a user cannot be renamed", "username")
    check_may_manage(caller, user, "change")
    if caller is not None and not auth.is_admin(caller):
        if caller.id != user.id:
            raise forbidden(f"user '{caller.username}' may not change user '{username}'")
        for key in changes:
            if key not in SELF_FIELDS and key != "username":
                raise forbidden(f"only an admin may change '{key}'")
    _check_escalation(changes, caller)
    fields = _user_fields(changes)
    with write_txn():
        if fields:
            User.update(**fields).where(User.id == user.id).execute()
        _set_memberships(user, changes)
    return User.get_by_id(user.id)


def delete_user(username: str, caller: User | None = None) -> None:
    user = get_user(username)
    check_may_manage(caller, user, "delete")
    if TestJob.select().where(TestJob.submitter == user).exists():
        raise conflict(f"user '{username}' has submitted jobs; deactivate the account instead "
                       "(is_active: false) so the job history stays")
    _refuse_if_owner(Device.owner_user == user, f"user '{username}'")
    user.delete_instance()


def _refuse_if_owner(condition, what: str) -> None:
    owned = [d.hostname for d in Device.select(Device.hostname).where(condition).order_by(Device.hostname)]
    if owned:
        # deleting the owner would silently open the devices to everyone
        raise conflict(f"{what} owns devices ({', '.join(owned)}); give them another owner first")


def login(username: str, password: str, throttle: LoginThrottle | None = None, address: str = "") -> User | None:
    """The active user with this password, or None; records the login time.

    Every attempt costs one password check, whether the user exists or not, so the answer's
    timing does not tell which names exist. With a `throttle`, a user name or client address
    that failed too often is refused (429, Retry-After) before anything is checked. A hash of
    an older scheme is replaced by today's on a successful login.
    """
    if throttle is not None:
        wait = throttle.retry_after(username, address)
        if wait:
            raise ApiError(429, f"too many failed logins for user '{username}' or from {address or 'this address'}; "
                                f"try again in {wait} s", retry_after=wait)
    user = User.get_or_none(User.username == username)
    if user is None or not user.is_active or not user.password_hash:
        auth.spend_password_check(password)
        user = None
    elif not auth.check_password(password, user.password_hash):
        user = None
    if user is None:
        if throttle is not None:
            throttle.failed(username, address)
        return None
    if throttle is not None:
        throttle.succeeded(username)
    fields: dict[str, Any] = {"last_login": utcnow()}
    if auth.password_needs_rehash(user.password_hash):
        fields["password_hash"] = auth.hash_password(password)
    User.update(**fields).where(User.id == user.id).execute()
    return user


# Groups ###########################################################################


def get_group(group_name: str, path: str | None = None) -> Group:
    return lookup(Group, "name", group_name, "group", path)


def group_json(group: Group, lists: tuple[dict, dict] | None = None) -> dict:
    """The one JSON shape of a group: its permissions and members, sorted; `lists`, those of a page
    of groups (`groups_json`)."""
    perms, members = lists or _group_lists([group])
    return {
        "name": group.name,
        "permissions": perms.get(group.id, []),
        "members": sorted(members.get(group.id, [])),
    }


def _group_lists(found: list[Group]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """({group id: permissions}, {group id: member usernames}), sorted, in two queries."""
    ids = [g.id for g in found]
    perms = grouped(GroupPermission.select(GroupPermission.group, GroupPermission.perm)
                    .where(GroupPermission.group.in_(ids)).order_by(GroupPermission.perm).tuples())
    members = grouped(GroupMember.select(GroupMember.group, User.username).join(User)
                      .where(GroupMember.group.in_(ids)).order_by(User.username).tuples())
    return perms, members


def groups_json(found: list[Group]) -> list[dict]:
    """`group_json` of each group, in a fixed number of queries."""
    lists = _group_lists(found)
    return [group_json(g, lists) for g in found]


def list_groups() -> list[Group]:
    return list(Group.select().order_by(Group.name))


#: LAVA's codenames of the permissions dutlab has (`lava_scheduler_app.cancel_resubmit_testjob`)
LAVA_PERMISSIONS = {"submit_testjob": "submit", "cancel_resubmit_testjob": "cancel_resubmit"}


def _permissions(value: Any) -> list[str]:
    perms = []
    for i, given in enumerate(string_list(value, "permissions")):
        perm = LAVA_PERMISSIONS.get(given.rsplit(".", 1)[-1], given)
        if perm not in PERMISSIONS:
            raise bad_request(f"'{given}' is not a permission; choose from {', '.join(PERMISSIONS)}",
                              f"permissions[{i}]")
        perms.append(perm)
    return list(dict.fromkeys(perms))


def create_group(data: Mapping[str, Any]) -> Group:
    check_fields(data, GROUP_FIELDS, required=("name",))
    group_name = data["name"]
    if not isinstance(group_name, str) or not GROUPNAME_RE.match(group_name):
        raise bad_request(f"group name {group_name!r} is not valid: up to 150 letters, digits, spaces and @.+-_",
                          "name")
    if Group.get_or_none(Group.name == group_name):
        raise conflict(f"group '{group_name}' already exists", "name")
    with write_txn():
        group = insert(lambda: Group.create(name=group_name), f"group '{group_name}'", "name")
        _set_group(group, data)
    return group


def update_group(group_name: str, changes: Mapping[str, Any]) -> Group:
    """Replace the given lists (`members`, `permissions`); others stay."""
    group = get_group(group_name)
    check_fields(changes, GROUP_FIELDS)
    if "name" in changes and changes["name"] != group_name:
        raise bad_request("a group cannot be renamed", "name")
    with write_txn():
        _set_group(group, changes)
    return group


def _set_group(group: Group, data: Mapping[str, Any]) -> None:
    if "permissions" in data:
        perms = _permissions(data["permissions"])
        GroupPermission.delete().where(GroupPermission.group == group, GroupPermission.perm.not_in(perms or [""]))\
            .execute()
        for perm in perms:
            GroupPermission.get_or_create(group=group, perm=perm)
    if "members" in data:
        names = string_list(data["members"], "members")
        users = [get_user(n, f"members[{i}]") for i, n in enumerate(names)]
        keep = [u.id for u in users] or [0]
        GroupMember.delete().where(GroupMember.group == group, GroupMember.user.not_in(keep)).execute()
        for user in users:
            GroupMember.get_or_create(group=group, user=user)


def add_to_group(group_name: str, usernames: list[str] = (), permissions: list[str] = (),
                 remove_usernames: list[str] = (), remove_permissions: list[str] = ()) -> Group:
    """Add and remove members and permissions, keeping the others (the CLI's `groups update`)."""
    current = group_json(get_group(group_name))
    for i, username in enumerate(remove_usernames):
        if username not in current["members"]:
            raise bad_request(f"user '{username}' is not a member of group '{group_name}'", f"remove_usernames[{i}]")
    return update_group(group_name, {
        "members": _changed(current["members"], usernames, remove_usernames),
        "permissions": _changed(current["permissions"], permissions, remove_permissions),
    })


def change_user_permissions(username: str, add: list[str] = (), remove: list[str] = ()) -> User:
    """Grant and revoke permissions of one user, keeping the others (the CLI's `users update`)."""
    user = get_user(username)
    current = sorted(UserLists([user]).permissions.get(user.id, []))
    wanted = _permissions(list(add))  # the path of a bad one is its place among those given
    return update_user(username, {"permissions": _changed(current, wanted, _permissions(list(remove)))})


def _changed(current: list[str], add: Iterable[str], remove: Iterable[str]) -> list[str]:
    drop = set(remove)
    return [x for x in current if x not in drop] + [x for x in dict.fromkeys(add) if x not in current and x not in drop]


def delete_group(group_name: str) -> None:
    group = get_group(group_name)
    _refuse_if_owner(Device.owner_group == group, f"group '{group_name}'")
    group.delete_instance()
