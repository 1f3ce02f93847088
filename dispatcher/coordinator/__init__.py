"""dutlab-coordinator: the MultiNode coordinator (docs/coordinator.md).

It speaks the wire protocol LAVA workers already use, so a LAVA worker can point its
lava-coordinator.conf at it: one request per TCP connection, an 8 upper-case hex digit length
header then JSON, one framed JSON reply, close. The daemon never blocks a client: a call that
cannot be answered yet gets {"response": "wait"} and the client asks again after poll_delay.

State lives in memory and, with `state_file`, in a small SQLite store written before each reply,
so a restarted coordinator lets the groups in flight go on (LAVA's loses them). Memory is bounded:
groups, clients, stored messages and bytes per group are capped, and a group nobody talked to for
`group_idle_timeout` seconds is dropped, so a job that died without clear_group cannot leak.

Parts: settings.py (the file), groups.py (the protocol state machine), store.py (the state file),
server.py (framing and the asyncio server); this file is the command line (``main``,
``status-check``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..coordinator_client import status_check
from .server import Server
from .settings import DEFAULT_CONFIG, ConfigError, Settings, load_settings

__all__ = ["load_settings", "main"]  # load_settings: the collection's coordinator role checks a file with it


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
    p.add_argument("--state-file", help="keep the groups in this SQLite file, so a restart loses none")
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
        for key in ("host", "port", "secret_file", "state_file", "log_file", "log_level"):
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
