"""IRC: connect, register a nick, say one line to a nick or a channel (joined first), quit.

A plain IRC client on a socket (RFC 1459/2812 lines): there is no IRC module in the standard
library and one line per notification needs none. The server's numeric replies decide the
outcome: 001 registered, 433 nick taken (another is tried), 401/403/404 no such nick or channel.
"""

from __future__ import annotations

import socket
import time

from .rows import DeliveryError

NICK = "dutlab"
DEFAULT_PORT = 6667
TIMEOUT = 20.0
#: replies that mean the line cannot reach its target
NO_TARGET = {"401": "no such nick", "403": "no such channel", "404": "cannot send to the channel",
             "471": "the channel is full", "473": "the channel is invite-only", "474": "banned from the channel",
             "475": "the channel needs a key"}


def split_server(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    return (host or server), int(port) if port.isdigit() else DEFAULT_PORT


class _Conn:
    def __init__(self, sock: socket.socket, where: str, deadline: float) -> None:
        self.sock, self.where, self.deadline, self.buf = sock, where, deadline, b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8", errors="replace")[:510] + b"\r\n")

    def lines(self):
        """Lines from the server until it closes; PINGs are answered here."""
        while True:
            while b"\r\n" in self.buf or b"\n" in self.buf:
                sep = b"\r\n" if b"\r\n" in self.buf else b"\n"
                raw, self.buf = self.buf.split(sep, 1)
                line = raw.decode("utf-8", errors="replace")
                if line.startswith("PING"):
                    self.send("PONG" + line[4:])
                    continue
                yield line
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeliveryError(f"IRC server {self.where}: no answer within {TIMEOUT:.0f} s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                return
            self.buf += chunk


def _numeric(line: str) -> tuple[str, list[str]]:
    parts = line.split(" ")
    if line.startswith(":") and len(parts) > 1:
        return parts[1], parts[2:]
    return parts[0], parts[1:]


def send(server: str, target: str, text: str, timeout: float = TIMEOUT) -> None:
    """Say `text` to `target` (a nick, or a #channel) on `server` ("host" or "host:port")."""
    host, port = split_server(server)
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise DeliveryError(f"IRC server {where}: cannot connect: {exc}") from None
    try:
        with sock:
            _talk(_Conn(sock, where, time.monotonic() + timeout), target, text)
    except OSError as exc:
        raise DeliveryError(f"IRC server {where}: {exc}") from None


def _talk(conn: _Conn, target: str, text: str) -> None:
    nick, tries = NICK, 0
    conn.send(f"NICK {nick}")
    conn.send(f"USER {NICK} 0 * :dutlab notifications")
    channel = target if target[:1] in "#&" else ""
    said = False
    for line in conn.lines():
        code, args = _numeric(line)
        if code in ("433", "436"):  # nick in use: dutlab1, dutlab2, ... (9 characters at most)
            tries += 1
            nick = f"{NICK}{tries}"[:9]
            conn.send(f"NICK {nick}")
        elif code == "001":
            if channel:
                conn.send(f"JOIN {channel}")
            else:
                _say(conn, target, text)
                said = True
        elif code == "366" and channel and not said:  # end of the channel's names: joined
            _say(conn, channel, text)
            said = True
        elif code in NO_TARGET:
            raise DeliveryError(f"IRC server {conn.where}: {target}: {NO_TARGET[code]} "
                                f"({' '.join(args[1:]).lstrip(':')})", permanent=code in ("401", "403"))
        elif code == "ERROR":
            if said:
                return  # the server closes after our QUIT
            raise DeliveryError(f"IRC server {conn.where} closed the connection: {' '.join(args).lstrip(':')}")
    if not said:
        raise DeliveryError(f"IRC server {conn.where} closed the connection before the message was sent")


def _say(conn: _Conn, target: str, text: str) -> None:
    for line in text.splitlines() or [""]:
        conn.send(f"PRIVMSG {target} :{line}")
    conn.send("QUIT :done")
