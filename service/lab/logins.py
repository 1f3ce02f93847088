"""Password logins, local and LDAP, and LDAP accounts made ahead of a first login (addldapuser).

A user with a local password logs in with it and never through LDAP, so an LDAP outage leaves
local users (admins first) able to log in. LDAP is asked for users dutlab does not know and for
those it knows from LDAP (their stored password is the marker LDAP_PASSWORD, which no password
matches); their first successful login makes the local record, and each login refreshes its
email, name and mapped groups from the directory. The same throttle counts both kinds of failure.
"""

from __future__ import annotations

from ..config import Settings
from ..db import write_txn
from ..errors import ApiError, bad_request, conflict
from ..ldapauth import Directory, LdapEntry, LdapUnavailable
from ..models import Group, GroupMember, User, utcnow
from ..throttle import LoginThrottle
from . import users

#: the stored "password" of an account whose password LDAP checks (not a hash: nothing matches it)
LDAP_PASSWORD = "!ldap"


def ldap_managed(user: User | None) -> bool:
    return user is None or user.password_hash == LDAP_PASSWORD


def login(username: str, password: str, settings: Settings, throttle: LoginThrottle | None = None,
          address: str = "") -> User | None:
    """The active user with this password (local, or LDAP when configured), or None.

    LDAP down is a 503 that says local users can still log in; a throttled name or address is
    a 429 (users.login's rules), whichever kind of account it is.
    """
    user = User.get_or_none(User.username == username)
    if not settings.ldap.uri or not ldap_managed(user) or not users.USERNAME_RE.match(username):
        return users.login(username, password, throttle, address)
    if throttle is not None:
        wait = throttle.retry_after(username, address)
        if wait:
            raise ApiError(429, f"too many failed logins for user '{username}' or from {address or 'this address'}; "
                                f"try again in {wait} s", retry_after=wait)
    try:
        entry = Directory(settings.ldap).authenticate(username, password)
    except LdapUnavailable as exc:
        raise ApiError(503, f"cannot check the password of '{username}': {exc}", retry_after=30) from None
    if entry is None or (user is not None and not user.is_active):
        if throttle is not None:
            throttle.failed(username, address)
        return None
    if throttle is not None:
        throttle.succeeded(username)
    return sync(entry, settings, login=True)


def sync(entry: LdapEntry, settings: Settings, login: bool = False) -> User:
    """Make or refresh the local record of an LDAP user: email, name, the mapped groups."""
    with write_txn():
        user = User.get_or_none(User.username == entry.username)
        fields = {"email": entry.email, "full_name": entry.full_name[:300]}
        if login:
            fields["last_login"] = utcnow()
        if user is None:
            user = User.create(username=entry.username, password_hash=LDAP_PASSWORD, **fields)
        else:
            User.update(**fields).where(User.id == user.id).execute()
        mapped = sorted({str(g) for g in settings.ldap.groups.values()})
        for name in mapped:
            group, _ = Group.get_or_create(name=name)
            if name in entry.groups:
                GroupMember.get_or_create(group=group, user=user)
            else:
                GroupMember.delete().where(GroupMember.group == group, GroupMember.user == user).execute()
    return User.get_by_id(user.id)


def add_ldap_user(username: str, settings: Settings) -> User:
    """`manage addldapuser`: the local record of an LDAP user, before their first login."""
    if not settings.ldap.uri:
        raise ApiError(400, "LDAP is not configured: set ldap.uri and ldap.user_search_base in server.yaml",
                       "ldap.uri")
    if not users.USERNAME_RE.match(username):
        raise bad_request(f"username {username!r} is not valid: use up to 150 letters, digits and @.+-_", "username")
    existing = User.get_or_none(User.username == username)
    if not ldap_managed(existing):
        raise conflict(f"user '{username}' exists with a local password; LDAP does not manage it", "username")
    try:
        entry = Directory(settings.ldap).find(username)
    except LdapUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    if entry is None:
        raise ApiError(404, f"no LDAP entry for '{username}' under {settings.ldap.user_search_base} "
                            f"(filter {settings.ldap.user_filter})")
    return sync(entry, settings)
