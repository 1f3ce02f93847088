"""dutlab-worker's settings: the command line, or a worker.yaml with the same keys (docs/worker.md).

Checked before the daemon starts, so a typo is one line on stderr and exit status 2, never a
worker that runs with a default the admin did not mean.
"""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..coordinator_client import LAVA_CONFIG, Endpoint, endpoint_from, load_endpoint
from ..settings_file import SettingsError, known_values, read_mapping

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: the asset cache of the shipped health checks (file:///var/cache/dutlab/assets/...)
DEFAULT_FILE_ROOTS = ("/var/cache/dutlab",)

ConfigError = SettingsError  # one error type for every dutlab settings file


@dataclass
class Config:
    url: str = ""
    name: str = field(default_factory=socket.gethostname)
    token_file: str = ""
    work_dir: str = "/var/lib/dutlab/worker"
    poll_wait: float = 20.0
    env_file: str = ""
    log_file: str = ""
    level: str = "INFO"
    #: seconds between SIGTERM and SIGKILL when a job is canceled
    cancel_grace: float = 30.0
    keep_jobs: bool = False
    #: the program that runs one job (a path, or a name found next to this Python or on PATH)
    run_command: str = "dutlab-run"
    #: the TFTP server's root (deploy to: tftp), and the address boards reach it on ('' = find it)
    tftp_root: str = "/srv/tftp"
    dispatcher_ip: str = ""
    #: the folders job file:// URLs may name, besides the job's own (dutlab-run --file-roots)
    file_roots: list[str] = field(default_factory=lambda: list(DEFAULT_FILE_ROOTS))
    #: the MultiNode coordinator: {host, port, secret or secret_file, poll_delay}, a file in that form
    #: or LAVA's lava-coordinator.conf, or HOST:PORT; empty: LAVA's file when there is one
    coordinator: Any = ""


def load_config(path: str) -> dict[str, Any]:
    """Read a worker.yaml: the command-line options as keys (`token_file` or `token-file`)."""
    return known_values(Config, read_mapping(path), f"{path}: ")


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="dutlab-worker", description="Run dutlab jobs on this host.")
    p.add_argument("--config", help="YAML file with the options below as keys (the command line wins)")
    p.add_argument("--url", help="lab server URL, e.g. http://lab:8000")
    p.add_argument("--name", help="worker name as registered on the server (default: hostname)")
    p.add_argument("--token-file", help="file holding the worker token")
    p.add_argument("--work-dir", help="local state and job folders (default /var/lib/dutlab/worker)")
    p.add_argument("--poll-wait", type=float, help="seconds the server may hold a poll (default 20)")
    p.add_argument("--env-file", help="env.yaml (purge/removes/overrides) for dutlab-run")
    p.add_argument("--log-file", help="log here instead of stderr")
    p.add_argument("--level", choices=LEVELS, help="log level (INFO)")
    p.add_argument("--cancel-grace", type=float, help="seconds from SIGTERM to SIGKILL on cancel (30)")
    p.add_argument("--keep-jobs", action="store_true", default=None, help="keep job folders when done")
    p.add_argument("--run-command", help="program that runs one job (default dutlab-run)")
    p.add_argument("--tftp-root", help="the TFTP server's root, for boards that boot over TFTP (/srv/tftp)")
    p.add_argument("--dispatcher-ip", help="the address boards reach this worker's TFTP server on "
                   "({SERVER_IP}; default: the address on the route to the default gateway)")
    p.add_argument("--file-roots", metavar="DIR[:DIR...]", help="folders whose files jobs may name in file:// "
                   "URLs, besides their own (default /var/cache/dutlab)")
    p.add_argument("--coordinator", metavar="FILE|HOST:PORT", help="the MultiNode coordinator: a file with host, "
                   f"port, secret_file (or LAVA's lava-coordinator.conf), or HOST:PORT (default {LAVA_CONFIG} "
                   "when it exists)")
    args = vars(p.parse_args(argv))
    if args.get("file_roots") is not None:
        args["file_roots"] = [d for d in args["file_roots"].split(":") if d]
    try:
        values = load_config(args.pop("config")) if args.get("config") else {}
        args.pop("config", None)
        values.update({k: v for k, v in args.items() if v is not None})
        cfg = Config(**values)
        _check(cfg)
    except (ConfigError, TypeError) as exc:
        p.error(str(exc))
    return cfg


def _check(cfg: Config) -> None:
    for key in ("url", "token_file", "work_dir"):
        if not getattr(cfg, key):
            raise ConfigError(f"{key} is required (--{key.replace('_', '-')} or in --config)")
    if not cfg.url.startswith(("http://", "https://")):
        raise ConfigError(f"url '{cfg.url}' must start with http:// or https://")
    for key in ("poll_wait", "cancel_grace"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{key} must be a number of seconds, not {value!r}")
    if not isinstance(cfg.keep_jobs, bool):
        raise ConfigError(f"keep_jobs must be true or false, not {cfg.keep_jobs!r}")
    roots = cfg.file_roots
    if not isinstance(roots, list) or not all(isinstance(d, str) and d.startswith("/") for d in roots):
        raise ConfigError(f"file_roots must be a list of absolute folder paths, not {roots!r}")
    coordinator_endpoint(cfg.coordinator)
    if cfg.level not in LEVELS:
        raise ConfigError(f"level must be one of {', '.join(LEVELS)}, not {cfg.level!r}")


def coordinator_endpoint(value: Any) -> Endpoint | None:
    """The coordinator the `coordinator` setting names (None: no MultiNode jobs on this worker)."""
    if value in ("", None):
        return load_endpoint(LAVA_CONFIG) if Path(LAVA_CONFIG).exists() else None
    if isinstance(value, dict):
        return endpoint_from(value, "coordinator.")
    if not isinstance(value, str):
        raise ConfigError(f"coordinator must be a mapping (host, port, secret_file), a file or HOST:PORT, "
                          f"not {value!r}")
    host, sep, port = value.rpartition(":")
    if sep and host and "/" not in value and port.isdigit():
        return endpoint_from({"host": host.strip("[]"), "port": int(port)}, "coordinator: ")
    return load_endpoint(value)
