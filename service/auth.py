"""Passwords, API tokens and who may do what.

Secrets are random and high-entropy, so tokens are stored as a plain SHA-256 (fast lookup by
hash); passwords are user-chosen and get argon2id at OWASP's recommended cost. Hashes made by
older versions (PBKDF2-SHA256) still verify, and `password_needs_rehash` says when a login
should store a new one.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from . import events
from .models import Device, Group, GroupMember, GroupPermission, TestJob, Token, User, UserPermission, utcnow

#: OWASP Password Storage Cheat Sheet: argon2id, 19 MiB, 2 iterations, 1 lane
PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)
TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def hash_password(password: str) -> str:
    return PASSWORDS.hash(password)


def check_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (argon2id, or an older PBKDF2-SHA256 hash)."""
    if stored.startswith("pbkdf2_sha256$"):
        return _check_pbkdf2(password, stored)
    try:
        return PASSWORDS.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(stored: str) -> bool:
    """An older scheme or weaker parameters than today's: store a new hash at the next login."""
    if not stored.startswith("$argon2"):
        return True
    try:
        return PASSWORDS.check_needs_rehash(stored)
    except InvalidHashError:
        return True


# a real hash of a password nobody has: unknown users cost the same work as known ones
_DUMMY_HASH = PASSWORDS.hash(secrets.token_hex(16))


def spend_password_check(password: str) -> None:
    """Do the work of one password check and throw the answer away (unknown or inactive users)."""
    check_password(password, _DUMMY_HASH)


def _check_pbkdf2(password: str, stored: str) -> bool:
    try:
        _algo, rounds, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(rounds))
        return hmac.compare_digest(got, base64.b64decode(digest))
    except ValueError:  # a malformed stored hash (binascii.Error is a ValueError too)
        return False


def random_password(length: int = 16) -> str:
    return "".join(secrets.choice("abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(length))


def new_secret(length: int = 40) -> str:
    # lavacli puts the token in a URL (user:token@host), so keep it to URL-safe characters.
    # Random bytes below the largest multiple of the alphabet's size map onto it uniformly; one
    # read of the system's randomness per token, not one per character (a token per job offer).
    size = len(TOKEN_ALPHABET)
    below = 256 - 256 % size
    chars: list[str] = []
    while len(chars) < length:
        chars.extend(TOKEN_ALPHABET[b % size] for b in secrets.token_bytes(length + 16) if b < below)
    return "".join(chars[:length])


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(user: User, description: str = "", secret: str | None = None) -> tuple[Token, str]:
    """Create an API token; return it and the secret (the only time the secret is known)."""
    chosen = bool(secret)
    secret = secret or new_secret()
    token = Token.create(user=user, description=description, secret_hash=hash_secret(secret), prefix=secret[:6])
    if chosen:  # a CI system's key: notify callbacks may send it (service/notify/secrets.py)
        events.publish(events.TOKEN_SECRET, token.id, events.Secret(secret))
    return token, secret


def user_for_token(secret: str, username: str | None = None) -> User | None:
    """The active user owning `secret` (and named `username` when given, as XML-RPC sends it)."""
    token = Token.select(Token, User).join(User).where(Token.secret_hash == hash_secret(secret)).first()
    if token is None or not token.user.is_active:
        return None
    if username is not None and token.user.username != username:
        return None
    now = utcnow()
    if token.last_used is None or now - token.last_used > LAST_USED_RESOLUTION:
        # at most one write a minute per token: reads must not all become write transactions
        Token.update(last_used=now).where(Token.id == token.id).execute()
    return token.user


def group_ids(user: User) -> set[int]:
    return {m.group_id for m in GroupMember.select(GroupMember.group).where(GroupMember.user == user)}


def has_perm(user: User | None, perm: str) -> bool:
    """Superusers hold every permission; others through a grant of `perm` (or admin) to them
    directly or to a group of theirs (LAVA's user and group permissions)."""
    if user is None:
        return False
    if user.is_superuser:
        return True
    wanted = [perm, "admin"]
    if UserPermission.select().where(UserPermission.user == user, UserPermission.perm.in_(wanted)).exists():
        return True
    return (
        GroupPermission.select()
        .join(GroupMember, on=(GroupMember.group == GroupPermission.group))
        .where(GroupMember.user == user, GroupPermission.perm.in_(wanted))
        .exists()
    )


def is_admin(user: User | None) -> bool:
    return has_perm(user, "admin")


def may_submit_to(user: User | None, device: Device, groups: set[int] | None = None) -> bool:
    """Owners restrict a device: only the owner user, or members of the owner group, may use it."""
    if user is None or not user.is_active:
        return False
    if device.owner_user_id is None and device.owner_group_id is None:
        return True
    if user.is_superuser or device.owner_user_id == user.id:
        return True
    if groups is None:
        groups = group_ids(user)
    return device.owner_group_id in groups


def may_submit_where(user: User, groups: set[int] | None = None):
    """`may_submit_to` as a condition on Device rows, for checks over a whole device type."""
    if not user.is_active:
        return Device.id.is_null()  # matches nothing
    if user.is_superuser:
        return Device.id.is_null(False)
    allowed = (Device.owner_user.is_null() & Device.owner_group.is_null()) | (Device.owner_user == user.id)
    groups = group_ids(user) if groups is None else groups
    return allowed | Device.owner_group.in_(list(groups)) if groups else allowed


def is_restricted(device: Device) -> bool:
    return device.owner_user_id is not None or device.owner_group_id is not None


def may_read_device(user: User | None, device: Device) -> bool:
    """Who may read a device's dictionary and what is rendered from it: admins and its users."""
    return user is not None and (is_admin(user) or may_submit_to(user, device))


def may_view_job(user: User | None, job: TestJob) -> bool:
    if job.visibility == "public":
        return True
    if user is None:
        return False
    if user.is_superuser or job.submitter_id == user.id:
        return True
    if job.visibility == "group":
        wanted = {vg.group_id for vg in job.viewing_groups}
        return bool(wanted) and wanted <= group_ids(user)
    return False


def may_cancel_job(user: User | None, job: TestJob) -> bool:
    if user is None:
        return False
    return job.submitter_id == user.id or has_perm(user, "cancel_resubmit")


def ensure_group(name: str) -> Group:
    group, _ = Group.get_or_create(name=name)
    return group
