"""dutlab-coordinator: the MultiNode coordinator (docs/coordinator.md).

It speaks the wire protocol LAVA workers already use, so a LAVA worker can point its
lava-coordinator.conf at it: one request per TCP connection, an 8 upper-case hex digit length
header then JSON, one framed JSON reply, close. The daemon never blocks a client: a call that
cannot be answered yet gets {"response": "wait"} and the client asks again after poll_delay.

State lives in memory only (a coordinator restart fails the MultiNode jobs in flight, as with
LAVA). Memory is bounded: groups, clients, stored messages and bytes per group are capped, and a
group nobody talked to for `group_idle_timeout` seconds is dropped, so a job that died without
clear_group cannot leak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings_file import SettingsError, known_values, read_mapping

log = logging.getLogger("dutlab.coordinator")

DEFAULT_CONFIG = "/etc/dutlab/coordinator.yaml"
HEADER_LEN = 8
#: a connection that does not deliver its request in this time is dropped
IO_TIMEOUT = 30.0

WAIT = {"response": "wait"}
ACK = {"response": "ack"}


ConfigError = SettingsError  # one error type for every dutlab settings file


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 3079
    #: file holding a shared secret every request must carry ("secret" key); empty: none (LAVA workers)
    secret_file: str = ""
    #: seconds without any request after which a group is forgotten
    group_idle_timeout: float = 86400.0
    max_groups: int = 1000
    max_group_size: int = 256
    #: stored lava_send messages (one per message ID and sender) plus open syncs, per group
    max_messages: int = 1000
    #: one lava_send payload, as JSON
    max_message_bytes: int = 32768
    max_group_bytes: int = 1048576
    #: one request frame; larger headers close the connection unread
    max_request_bytes: int = 1048576
    log_file: str = ""
    log_level: str = "INFO"
    # keys of LAVA's lava-coordinator.conf, accepted so that file can be used as is
    blocksize: int = 4096
    poll_delay: float = 1.0
    coordinator_hostname: str = ""

    def secret(self) -> str:
        if not self.secret_file:
            return ""
        try:
            value = Path(self.secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"secret_file: cannot read {self.secret_file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"secret_file: {self.secret_file} is empty")
        return value


def load_settings(path: str | None) -> Settings:
    """Settings from a YAML file (LAVA's JSON lava-coordinator.conf is valid YAML too)."""
    if path is None:
        if not Path(DEFAULT_CONFIG).exists():
            return Settings()
        path = DEFAULT_CONFIG
    defaults = Settings()
    values: dict[str, Any] = {}
    for name, value in known_values(Settings, read_mapping(path), f"{path}: ").items():
        default = getattr(defaults, name)
        if isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{path}: {name}: expected a number, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{path}: {name}: expected a string, got {value!r}")
        values[name] = type(default)(value)
    settings = Settings(**values)
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{path}: log_level: use DEBUG, INFO, WARNING or ERROR")
    settings.log_level = settings.log_level.upper()
    return settings


# -- group state -------------------------------------------------------------------------------------

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

    def stored_count(self) -> int:
        return sum(len(s) for s in self.messages.values()) + len(self.syncs)


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
        if kind == "group_data":
            return self._group_data(group_name, client, request)
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
        told.setdefault(client, False)
        if len(told) < group.size:
            return WAIT
        told[client] = True
        if all(told.values()):
            del group.syncs[message_id]  # everyone knows: the ID can be synced on again
        return {"response": "ack", "message": message_id}

    def _clear(self, group: Group, client: str, request: dict) -> dict:
        group.cleared.add(client)
        if len(group.cleared) >= group.size:
            del self.groups[group.name]
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


# -- framing and the server --------------------------------------------------------------------------

def frame(message: dict) -> bytes:
    """8 upper-case hex digits of length, then the JSON (ASCII, so characters == bytes)."""
    data = json.dumps(message).encode("ascii")
    return b"%08X" % len(data) + data


def parse_header(header: bytes) -> int:
    text = header.decode("ascii", errors="replace")
    if len(header) != HEADER_LEN or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"bad length header {text!r}")
    return int(text, 16)


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.coordinator = Coordinator(settings)

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        try:
            request = await asyncio.wait_for(self._read(reader), IO_TIMEOUT)
            reply = self.coordinator.handle(request, peer)
            writer.write(frame(reply))
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
        except (ValueError, asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
            # as LAVA: a malformed request just gets the connection closed
            log.warning("dropped connection from %s: %s", peer, exc or type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT)

    async def _read(self, reader: asyncio.StreamReader) -> Any:
        length = parse_header(await reader.readexactly(HEADER_LEN))
        if length > self.settings.max_request_bytes:
            raise ValueError(f"request of {length} bytes is over max_request_bytes")
        data = await reader.readexactly(length)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"request is not JSON: {exc}") from None

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        server = await asyncio.start_server(self.serve_connection, self.settings.host, self.settings.port,
                                            reuse_address=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("listening on %s:%d (secret %s, groups expire after %.0f s idle)", self.settings.host,
                 self.settings.port, "required" if self.coordinator.secret else "off",
                 self.settings.group_idle_timeout)
        if ready:
            ready()
        sweeper = asyncio.create_task(self._sweep())
        async with server:
            await stop.wait()
        sweeper.cancel()
        log.info("stopped; %d groups dropped", len(self.coordinator.groups))

    async def _sweep(self) -> None:
        # groups also expire on every request; this covers a coordinator nobody talks to
        period = max(0.2, min(60.0, self.settings.group_idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self.coordinator.expire()


# -- command line ------------------------------------------------------------------------------------

def _daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dutlab-coordinator",
        description="MultiNode coordinator (LAVA lava-coordinator protocol). "
                    "'dutlab-coordinator status-check --help' for the self-test.")
    p.add_argument("--config", help=f"YAML settings, or LAVA's lava-coordinator.conf (default {DEFAULT_CONFIG} "
                                    "when it exists)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 3079)")
    p.add_argument("--secret-file", help="require the secret in this file on every request")
    p.add_argument("--log-file", help="log here instead of stderr")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _status_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dutlab-coordinator status-check",
                                description="run a throw-away group through every call and report")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3079)
    p.add_argument("--secret-file", help="file holding the coordinator's secret, if it requires one")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole check")
    return p


def run_daemon(argv: list[str]) -> int:
    args = _daemon_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        for key in ("host", "port", "secret_file", "log_file", "log_level"):
            if getattr(args, key) is not None:
                setattr(settings, key, getattr(args, key))
        server = Server(settings)
    except ConfigError as exc:
        print(f"dutlab-coordinator: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, filename=settings.log_file or None,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(server.run())
    except OSError as exc:
        print(f"dutlab-coordinator: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


def run_status_check(argv: list[str]) -> int:
    from .coordinator_client import status_check

    args = _status_parser().parse_args(argv)
    secret = ""
    if args.secret_file:
        try:
            secret = Settings(secret_file=args.secret_file).secret()
        except ConfigError as exc:
            print(f"dutlab-coordinator: {exc}", file=sys.stderr)
            return 2
    problems = status_check(args.host, args.port, secret=secret, timeout=args.timeout)
    if problems:
        for line in problems:
            print(line)
        return 1
    print("status check complete. No errors")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status-check"]:
        return run_status_check(argv[1:])
    return run_daemon(argv)


if __name__ == "__main__":
    sys.exit(main())
