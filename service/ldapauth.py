"""The LDAP directory, with ldap3: find a user, check their password by a bind, read their groups.

The search runs as `bind_dn` (or anonymously); the password is checked by binding as the user's
own DN on a second connection, so dutlab never reads password attributes. Every failure to reach
or use the directory is an `LdapUnavailable` naming the URI and what to check; a wrong password
or an unknown user is simply no entry.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from .config import LdapSettings

log = logging.getLogger("dutlab.ldap")


class LdapUnavailable(Exception):
    """The directory could not be asked (down, TLS, a refused search account); says what to check."""


@dataclass
class LdapEntry:
    dn: str
    username: str
    email: str = ""
    full_name: str = ""
    #: the dutlab groups (ldap.groups values) whose LDAP group holds this user
    groups: list[str] = field(default_factory=list)


class Directory:
    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings

    def _server(self) -> Server:
        s = self.settings
        tls = None
        if s.uri.startswith("ldaps://") or s.starttls:
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=s.ca_file or None)
        return Server(s.uri, get_info=NONE, connect_timeout=s.timeout, tls=tls)

    def _bind(self, user: str | None, password: str | None, what: str) -> Connection | None:
        """A connection bound as `user` (None: anonymous); None when the directory refuses the
        credentials; LdapUnavailable when it cannot be reached."""
        s = self.settings
        conn = Connection(self._server(), user=user, password=password, receive_timeout=s.timeout,
                          raise_exceptions=False, auto_bind=False, read_only=True)
        try:
            conn.open()
            if s.starttls and not conn.start_tls():
                raise LdapUnavailable(f"LDAP server {s.uri}: StartTLS failed ({conn.result.get('description')}); "
                                      "check ldap.starttls and ldap.ca_file")
            if conn.bind():
                return conn
        except LDAPException as exc:
            conn.unbind()
            raise LdapUnavailable(f"LDAP server {s.uri} is unreachable ({exc}); check ldap.uri and that the "
                                  "server runs. Local users can still log in") from None
        result = conn.result or {}
        conn.unbind()
        if result.get("description") == "invalidCredentials":
            return None
        raise LdapUnavailable(f"LDAP server {s.uri} refused the bind of {what}: {result.get('description')} "
                              f"{result.get('message') or ''}".rstrip())

    def _search_connection(self) -> Connection:
        s = self.settings
        conn = self._bind(s.bind_dn or None, s.bind_password or None, f"the search account '{s.bind_dn}'"
                          if s.bind_dn else "an anonymous search")
        if conn is None:
            raise LdapUnavailable(f"LDAP server {s.uri} refused the search account '{s.bind_dn}' (invalid "
                                  "credentials); check ldap.bind_dn and ldap.bind_password")
        return conn

    def find(self, username: str) -> LdapEntry | None:
        """The user's entry with its attributes and mapped groups, or None when there is none (or
        more than one: an ambiguous filter logs in nobody)."""
        s = self.settings
        conn = self._search_connection()
        try:
            wanted = sorted({a for a in s.attributes.values() if a})
            user_filter = s.user_filter.replace("{username}", escape_filter_chars(username))
            found_any = conn.search(s.user_search_base, user_filter, SUBTREE, attributes=wanted, size_limit=2)
            if not found_any and conn.result.get("description") not in ("success", "noSuchObject",
                                                                        "sizeLimitExceeded"):
                raise LdapUnavailable(f"LDAP server {s.uri}: the search in '{s.user_search_base}' failed: "
                                      f"{conn.result.get('description')}; check ldap.user_search_base")
            found = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
            if len(found) != 1:
                if len(found) > 1:
                    log.warning("LDAP: %s matches %d entries; nobody logs in with it", user_filter, len(found))
                return None
            entry = LdapEntry(dn=found[0]["dn"], username=username)
            attributes = found[0].get("attributes") or {}
            for key, name in s.attributes.items():
                value = attributes.get(name) if name else None
                if isinstance(value, list):
                    value = value[0] if value else ""
                setattr(entry, key, str(value or ""))
            entry.groups = self._groups(conn, entry.dn)
            return entry
        finally:
            conn.unbind()

    def _groups(self, conn: Connection, user_dn: str) -> list[str]:
        member = self.settings.group_filter.replace("{user_dn}", escape_filter_chars(user_dn))
        out = []
        for group_dn, dutlab_group in sorted(self.settings.groups.items()):
            if conn.search(group_dn, member, BASE, attributes=[]) and conn.response:
                out.append(str(dutlab_group))
        return out

    def authenticate(self, username: str, password: str) -> LdapEntry | None:
        """The user's entry when `password` is theirs; None for a wrong password or no such user."""
        if not password:  # an empty password would be an anonymous bind, which "succeeds"
            return None
        entry = self.find(username)
        if entry is None:
            return None
        conn = self._bind(entry.dn, password, f"'{entry.dn}'")
        if conn is None:
            return None
        conn.unbind()
        return entry
