"""The coordinator's protocol state machine: MultiNode groups, their messages and syncs.

One request in, one reply out, never blocking: a call that cannot be answered yet gets
{"response": "wait"} and the client asks again. State lives in memory and, with a state file,
in a local store (store.py) that every change is written to before its reply, so a restarted
coordinator lets its groups go on. Memory is bounded (groups, clients, stored messages and
bytes per group are capped, idle groups expire).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .settings import Settings
from .store import GroupStore

log = logging.getLogger("dutlab.coordinator")

WAIT = {"response": "wait"}
ACK = {"response": "ack"}


@dataclass
class Group:
    name: str
    size: int
    #: client name -> role, in registration order
    roles: dict[str, str] = field(default_factory=dict)
    #: message ID -> sender -> data
    messages: dict[str, dict[str, dict]] = field(default_factory=dict)
    #: message ID -> client -> whether it has been told the sync completed
    syncs: dict[str, dict[str, bool]] = field(default_factory=dict)
    cleared: set[str] = field(default_factory=set)
    stored_bytes: int = 0
    last_seen: float = 0.0
    #: changed since it was last stored (not part of the stored state)
    changed: bool = False

    def stored_count(self) -> int:
        return sum(len(s) for s in self.messages.values()) + len(self.syncs)

    def state(self) -> dict[str, Any]:
        """What the store keeps: everything but the idle clock."""
        return {"size": self.size, "roles": self.roles, "messages": self.messages, "syncs": self.syncs,
                "cleared": sorted(self.cleared), "stored_bytes": self.stored_bytes}

    @classmethod
    def from_state(cls, name: str, state: dict[str, Any], now: float) -> Group:
        return cls(name=name, size=int(state["size"]), roles=dict(state["roles"]), messages=dict(state["messages"]),
                   syncs=dict(state["syncs"]), cleared=set(state["cleared"]),
                   stored_bytes=int(state["stored_bytes"]), last_seen=now)


class Refused(Exception):
    """A request that gets "nack"; the reason is logged and returned in "error"."""


def nack(reason: str) -> dict:
    return {"response": "nack", "error": reason}


class Coordinator:
    """The protocol state machine: one request in, one reply out, never blocking."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.secret = settings.secret()
        self.clock = clock
        self.groups: dict[str, Group] = {}
        self.store = GroupStore(settings.state_file) if settings.state_file else None
        if self.store is not None:
            now = clock()  # restored groups start a fresh idle period
            self.groups = {name: Group.from_state(name, state, now) for name, state in self.store.load().items()}
        self.handlers: dict[str, Callable[[Group, str, dict], dict]] = {
            "lava_send": self._send,
            "lava_wait": self._wait,
            "lava_wait_all": self._wait_all,
            "lava_sync": self._sync,
            "clear_group": self._clear,
            # legacy result aggregation: LAVA workers stopped sending bundles; accept and drop them
            "aggregate": lambda group, client, req: ACK,
            "complete": lambda group, client, req: ACK,
        }

    def handle(self, request: Any, peer: str = "") -> dict:
        try:
            return self._dispatch(request)
        except Refused as exc:
            log.warning("nack to %s (%s): %s", peer or "client", _describe(request), exc)
            return nack(str(exc))

    def expire(self) -> list[str]:
        """Forget groups idle for longer than group_idle_timeout; return their names."""
        limit = self.clock() - self.settings.group_idle_timeout
        gone = [name for name, group in self.groups.items() if group.last_seen < limit]
        for name in gone:
            group = self.groups.pop(name)
            self._forget(name)
            log.info("group %s expired after %.0f s idle (%d of %d clients had cleared it)",
                     name, self.settings.group_idle_timeout, len(group.cleared), group.size)
        return gone

    def _dispatch(self, request: Any) -> dict:
        if not isinstance(request, dict):
            raise Refused("the request is not a JSON object")
        if self.secret and not hmac.compare_digest(str(request.get("secret", "")), self.secret):
            raise Refused("missing or wrong secret")
        kind = _text(request, "request")
        group_name, client = _text(request, "group_name"), _text(request, "client_name")
        self.expire()
        try:
            if kind == "group_data":
                return self._group_data(group_name, client, request)
            return self._call(kind, group_name, client, request)
        finally:
            self._persist(group_name)

    def _persist(self, name: str) -> None:
        """Write a changed group to the store (before its reply is sent)."""
        group = self.groups.get(name)
        if self.store is not None and group is not None and group.changed:
            self.store.save(name, group.state())
        if group is not None:
            group.changed = False

    def _forget(self, name: str) -> None:
        if self.store is not None:
            self.store.delete(name)

    def _call(self, kind: str, group_name: str, client: str, request: dict) -> dict:
        handler = self.handlers.get(kind)
        if handler is None:
            raise Refused(f"unknown request {kind!r}")
        group = self.groups.get(group_name)
        if group is None:
            raise Refused(f"unknown group {group_name} (never set up with group_data, cleared or expired)")
        if client not in group.roles:
            raise Refused(f"{client} is not a member of group {group_name}")
        group.last_seen = self.clock()
        return handler(group, client, request)

    def _group_data(self, name: str, client: str, request: dict) -> dict:
        group = self.groups.get(name)
        if group is None:
            group = self._new_group(name, request.get("group_size"))
        group.last_seen = self.clock()
        if client not in group.roles:
            if len(group.roles) >= group.size:
                raise Refused(f"group {name} already has its {group.size} clients")
            group.roles[client] = str(request.get("role") or "")
            group.changed = True
            log.info("group %s: %s joined as %r (%d of %d)", name, client, group.roles[client],
                     len(group.roles), group.size)
        if len(group.roles) < group.size:
            return WAIT
        return {"response": "group_data", "roles": dict(group.roles)}

    def _new_group(self, name: str, size: Any) -> Group:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise Refused(f"the first group_data of group {name} must carry a group_size > 0")
        if size > self.settings.max_group_size:
            raise Refused(f"group_size {size} is over the limit of {self.settings.max_group_size}")
        if len(self.groups) >= self.settings.max_groups:
            raise Refused(f"already {len(self.groups)} groups (max_groups); clear or wait for idle groups to expire")
        group = Group(name=name, size=size)
        self.groups[name] = group
        return group

    def _send(self, group: Group, client: str, request: dict) -> dict:
        message_id = _text(request, "messageID")
        data = request.get("message") or {}
        if not isinstance(data, dict):
            raise Refused("message must be an object of key=value pairs")
        size = len(json.dumps(data))
        limits = self.settings
        if size > limits.max_message_bytes:
            raise Refused(f"message {message_id} is {size} bytes, over max_message_bytes ({limits.max_message_bytes})")
        senders = group.messages.get(message_id, {})
        old = len(json.dumps(senders[client])) if client in senders else 0
        if client not in senders and group.stored_count() >= limits.max_messages:
            raise Refused(f"group {group.name} already stores {limits.max_messages} messages (max_messages)")
        if group.stored_bytes - old + size > limits.max_group_bytes:
            raise Refused(f"group {group.name} would store more than max_group_bytes ({limits.max_group_bytes})")
        group.messages.setdefault(message_id, {})[client] = data
        group.stored_bytes += size - old
        group.changed = True
        return ACK

    def _wait(self, group: Group, client: str, request: dict) -> dict:
        senders = group.messages.get(_text(request, "messageID"))
        if not senders:
            return WAIT
        return {"response": "ack", "message": dict(senders)}

    def _wait_all(self, group: Group, client: str, request: dict) -> dict:
        message_id = _text(request, "messageID")
        senders = group.messages.get(message_id, {})
        role = request.get("waitrole")
        if role:
            members = [c for c, r in group.roles.items() if r == role]
            if not members:
                raise Refused(f"no client of group {group.name} has role {role!r}")
        else:
            # as LAVA: waiting for everyone on an ID nobody sent yet is an error, not a wait
            if not senders:
                raise Refused(f"nobody sent {message_id} yet")
            members = list(group.roles)
        if any(m not in senders for m in members):
            return WAIT
        # every sender's data, not only the role's: LAVA answers from the caller's whole mailbox too
        return {"response": "ack", "message": dict(senders)}

    def _sync(self, group: Group, client: str, request: dict) -> dict:
        message_id = _text(request, "messageID")
        if message_id not in group.syncs and group.stored_count() >= self.settings.max_messages:
            raise Refused(f"group {group.name} already stores {self.settings.max_messages} messages (max_messages)")
        told = group.syncs.setdefault(message_id, {})
        if client not in told:
            told[client] = False
            group.changed = True
        if len(told) < group.size:
            return WAIT
        if not told[client]:
            told[client] = True
            group.changed = True
        if all(told.values()):
            del group.syncs[message_id]  # everyone knows: the ID can be synced on again
        return {"response": "ack", "message": message_id}

    def _clear(self, group: Group, client: str, request: dict) -> dict:
        group.cleared.add(client)
        group.changed = True
        if len(group.cleared) >= group.size:
            del self.groups[group.name]
            self._forget(group.name)
            log.info("group %s cleared by all %d clients", group.name, group.size)
        return ACK


def _text(request: dict, key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise Refused(f"{key} must be a non-empty string")
    return value


def _describe(request: Any) -> str:
    if not isinstance(request, dict):
        return "?"
    return f"{request.get('request')} {request.get('group_name')}/{request.get('client_name')}"
