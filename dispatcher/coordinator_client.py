"""Client side of the MultiNode coordinator protocol (docs/coordinator.md).

dutlab-run uses it for lava-send, lava-wait, lava-wait-all and lava-sync. It talks to
dutlab-coordinator or to LAVA's lava-coordinator alike: every request carries the base fields a
LAVA coordinator expects, a "wait" reply is answered by asking again after `poll_delay`, and a
refused connection is retried (with 2 s more, as LAVA's dispatcher does: the coordinator may be
restarting) until the call's timeout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings_file import SettingsError, read_mapping

HEADER_LEN = 8
#: LAVA's clients refuse to send larger requests; so do we, so a job behaves the same on both
MAX_REQUEST = 0xFFFE
MAX_REPLY = 16 * 1024 * 1024
CONNECT_RETRY_EXTRA = 2.0


class CoordinatorError(RuntimeError):
    """The coordinator answered "nack" (or something that is not the protocol)."""


class CoordinatorTimeout(CoordinatorError):
    """No final answer before the call's timeout."""


@dataclass
class Endpoint:
    host: str = "127.0.0.1"
    port: int = 3079
    poll_delay: float = 1.0
    blocksize: int = 4096
    secret: str = ""
    #: seconds for one connection (connect, send, reply)
    io_timeout: float = 10.0


#: where LAVA's dispatcher finds its coordinator; dutlab-worker reads it too when it has no setting
LAVA_CONFIG = "/etc/lava-coordinator/lava-coordinator.conf"
#: the keys an endpoint is given by: dutlab's, and those of LAVA's lava-coordinator.conf
ENDPOINT_KEYS = ("host", "coordinator_hostname", "port", "secret", "secret_file", "poll_delay", "blocksize")
#: listen addresses that mean "this host" to a client on it
_ANY_ADDRESS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def endpoint_from(data: dict[str, Any], where: str = "", strict: bool = True) -> Endpoint:
    """The endpoint a mapping describes; SettingsError naming `where` and the key when it is wrong.

    `strict` refuses keys other than ENDPOINT_KEYS (a setting written for this); a file read as
    is (the daemon's own coordinator.yaml, LAVA's lava-coordinator.conf) may carry others.
    """
    if strict:
        for key in data:
            if key not in ENDPOINT_KEYS:
                raise SettingsError(f"{where}{key}: unknown coordinator setting; use {', '.join(ENDPOINT_KEYS)}")
    end = Endpoint()
    host = data.get("coordinator_hostname") or data.get("host") or ""
    if not isinstance(host, str):
        raise SettingsError(f"{where}host: expected a host name or address, got {host!r}")
    end.host = _ANY_ADDRESS.get(host, host)
    for key, kind in (("port", int), ("poll_delay", float), ("blocksize", int)):
        value = data.get(key, getattr(end, key))
        if isinstance(value, str) and value.replace(".", "", 1).isdigit():  # "3079" from a templated file
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise SettingsError(f"{where}{key}: expected a positive number, got {value!r}")
        setattr(end, key, kind(value))
    secret, secret_file = data.get("secret") or "", data.get("secret_file") or data.get("secret-file") or ""
    if not isinstance(secret, str) or not isinstance(secret_file, str):
        raise SettingsError(f"{where}secret: expected a string")
    if secret_file:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{where}secret_file: cannot read {secret_file}: {exc.strerror}") from None
    end.secret = secret.strip()
    return end


def load_endpoint(path: str | Path) -> Endpoint:
    """The coordinator to use, from dutlab's coordinator.yaml or LAVA's lava-coordinator.conf."""
    return endpoint_from(read_mapping(path), f"{path}: ", strict=False)


def endpoint_mapping(end: Endpoint) -> dict[str, Any]:
    """The endpoint as a file dutlab-run reads back with load_endpoint (the secret inline)."""
    data: dict[str, Any] = {"host": end.host, "port": end.port, "poll_delay": end.poll_delay,
                            "blocksize": end.blocksize}
    if end.secret:
        data["secret"] = end.secret
    return data


def exchange(endpoint: Endpoint, message: dict) -> dict:
    """One request on one connection: send the framed JSON, read the framed reply."""
    data = json.dumps(message).encode("ascii")
    if len(data) > MAX_REQUEST:
        raise CoordinatorError(f"request of {len(data)} bytes is over the protocol limit of {MAX_REQUEST}")
    with socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.io_timeout) as sock:
        sock.sendall(b"%08X" % len(data) + data)
        sock.shutdown(socket.SHUT_WR)
        header = _recv(sock, HEADER_LEN, endpoint.blocksize)
        try:
            length = int(header.decode("ascii"), 16)
        except ValueError:
            raise CoordinatorError(f"bad reply header {header!r}") from None
        if length > MAX_REPLY:
            raise CoordinatorError(f"reply of {length} bytes is over {MAX_REPLY}")
        body = _recv(sock, length, endpoint.blocksize)
    try:
        reply = json.loads(body)
    except ValueError:
        raise CoordinatorError("the reply is not JSON") from None
    if not isinstance(reply, dict) or "response" not in reply:
        raise CoordinatorError(f"the reply has no response: {reply!r}")
    return reply


def _recv(sock: socket.socket, length: int, blocksize: int) -> bytes:
    chunks, got = [], 0
    while got < length:
        chunk = sock.recv(min(blocksize, length - got))
        if not chunk:
            raise ConnectionError(f"connection closed after {got} of {length} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@dataclass
class CoordinatorClient:
    """One MultiNode job's view of its group."""

    endpoint: Endpoint
    group_name: str
    client_name: str
    role: str
    hostname: str = field(default_factory=socket.gethostname)

    def base(self) -> dict[str, Any]:
        msg = {"port": self.endpoint.port, "blocksize": self.endpoint.blocksize,
               "poll_delay": self.endpoint.poll_delay, "host": self.endpoint.host, "hostname": self.hostname,
               "client_name": self.client_name, "group_name": self.group_name, "role": self.role}
        if self.endpoint.secret:
            msg["secret"] = self.endpoint.secret
        return msg

    def poll(self, request: str, timeout: float, **fields: Any) -> dict:
        """Send until the answer is not "wait"; "nack" and the timeout raise."""
        message = {**self.base(), "request": request, **fields}
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            delay = self.endpoint.poll_delay
            try:
                reply = exchange(self.endpoint, message)
            except OSError as exc:
                reply, delay = None, delay + CONNECT_RETRY_EXTRA
                last_error = f"cannot reach the coordinator at {self.endpoint.host}:{self.endpoint.port}: {exc}"
            if reply is not None:
                if reply["response"] == "nack":
                    raise CoordinatorError(f"{request} refused: {reply.get('error') or 'nack'}")
                if reply["response"] != "wait":
                    return reply
                last_error = "the group did not get there in time"
            if time.monotonic() + delay > deadline:
                raise CoordinatorTimeout(f"{request} {fields.get('messageID', '')} timed out after {timeout:.0f} s: "
                                         f"{last_error}")
            time.sleep(delay)

    def group_data(self, group_size: int, timeout: float = 90.0) -> dict[str, str]:
        """Join the group; returns {client_name: role} once all `group_size` clients joined."""
        return self.poll("group_data", timeout, group_size=group_size)["roles"]

    def send(self, message_id: str, message: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        self.poll("lava_send", timeout, messageID=message_id, message=message or {})

    def wait(self, message_id: str, timeout: float) -> dict[str, dict]:
        """{sender: data} once someone sent `message_id`."""
        return self.poll("lava_wait", timeout, messageID=message_id).get("message") or {}

    def wait_all(self, message_id: str, timeout: float, role: str | None = None) -> dict[str, dict]:
        """{sender: data} once every client (of `role`, when given) sent `message_id`."""
        extra = {"waitrole": role} if role else {}
        return self.poll("lava_wait_all", timeout, messageID=message_id, **extra).get("message") or {}

    def sync(self, message_id: str, timeout: float) -> None:
        self.poll("lava_sync", timeout, messageID=message_id)

    def clear_group(self, group_size: int, timeout: float = 30.0) -> None:
        self.poll("clear_group", timeout, group_size=group_size)


# -- status check ------------------------------------------------------------------------------------

def status_check(host: str, port: int, secret: str = "", timeout: float = 30.0) -> list[str]:
    """Run a throw-away two-client group through every call; return what failed (empty: all fine)."""
    endpoint = Endpoint(host=host, port=port, poll_delay=0.1, secret=secret, io_timeout=min(10.0, timeout))
    group = f"status-check-{uuid.uuid4()}"
    clients = [CoordinatorClient(endpoint, group, f"check-{i}", role) for i, role in enumerate(("server", "client"))]
    problems: list[str] = []
    threads = [threading.Thread(target=_check_one, args=(c, clients, timeout, problems)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return problems


def _check_one(me: CoordinatorClient, group: list[CoordinatorClient], timeout: float, problems: list[str]) -> None:
    step = "group_data"
    try:
        roles = me.group_data(len(group), timeout)
        if roles != {c.client_name: c.role for c in group}:
            raise CoordinatorError(f"group_data returned {roles}")
        step = "lava_send"
        me.send("check-send", {"from": me.client_name})
        step = "lava_wait"
        peer = next(c for c in group if c is not me)
        if peer.role == "server":  # only the server's message is waited on: lava_wait needs just one sender
            got = me.wait("check-server", timeout)
            if got.get(peer.client_name) != {"ready": "yes"}:
                raise CoordinatorError(f"lava_wait returned {got}")
        else:
            me.send("check-server", {"ready": "yes"})
        step = "lava_wait_all"
        got = me.wait_all("check-send", timeout)
        if set(got) != {c.client_name for c in group}:
            raise CoordinatorError(f"lava_wait_all returned {got}")
        step = "lava_wait_all (role)"
        got = me.wait_all("check-server", timeout, role="server")
        if list(got) != [c.client_name for c in group if c.role == "server"]:
            raise CoordinatorError(f"lava_wait_all with role returned {got}")
        step = "lava_sync"
        me.sync("check-sync", timeout)
        step = "clear_group"
        me.clear_group(len(group))
    except (CoordinatorError, OSError) as exc:
        problems.append(f"{me.client_name}: {step} failed: {exc}")
