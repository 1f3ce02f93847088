"""The coordinator's network side: LAVA's framing on TCP, one request per connection.

An 8 upper-case hex digit length header then JSON, one framed JSON reply, close. A malformed
request only gets its connection closed (as with LAVA), and a slow client is dropped after
IO_TIMEOUT, so no client can hold the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from typing import Any

from .groups import Coordinator
from .settings import Settings

log = logging.getLogger("dutlab.coordinator")

HEADER_LEN = 8
#: a connection that does not deliver its request in this time is dropped
IO_TIMEOUT = 30.0


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
        if self.coordinator.store is not None:
            groups = self.coordinator.groups
            log.info("state file %s: restored %d group(s)%s", self.settings.state_file, len(groups),
                     f" ({', '.join(sorted(groups))})" if groups else "")
        if ready:
            ready()
        sweeper = asyncio.create_task(self._sweep())
        async with server:
            await stop.wait()
        sweeper.cancel()
        store = self.coordinator.store
        if store is not None:
            store.close()
            log.info("stopped; %d group(s) kept in %s", len(self.coordinator.groups), self.settings.state_file)
        else:
            log.info("stopped; %d groups dropped", len(self.coordinator.groups))

    async def _sweep(self) -> None:
        # groups also expire on every request; this covers a coordinator nobody talks to
        period = max(0.2, min(60.0, self.settings.group_idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self.coordinator.expire()
