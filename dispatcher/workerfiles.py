"""The files the server keeps for each worker and sends with each of its jobs (docs/worker.md,
"Settings from the server"): LAVA's ``dispatcher.d/<worker>.yaml`` (kind ``dispatcher``), its
``env.yaml`` (``env``) and ``env-dut.yaml`` (``env-dut``); their checks, and how a run uses them.

The server checks a file with `check` before it stores it, and the worker reads what it is sent
with the same code, so a file the server took is a file the worker can apply.

* ``dispatcher``: a mapping with LAVA's keys (lava-interfaces.md §3.6). dutlab applies
  ``dispatcher_tftp_ip`` (else ``dispatcher_ip``) as the address boards reach the worker's TFTP
  server on, and ``dispatcher_download_dir`` as dutlab-run's download cache and scratch folder;
  the worker's own settings, when given, win. LAVA's other keys are kept and have no effect.
* ``env``: the environment of dutlab-run (envfile.py); the worker's --env-file is applied after it.
* ``env-dut``: the same format, for the test shell on the device: ``overrides`` are exported
  and ``removes`` unset before the tests run (``purge`` has no meaning there and is refused).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from . import envfile

KINDS = ("dispatcher", "env", "env-dut")
#: the keys of LAVA's dispatcher.yaml
DISPATCHER_KEYS = (
    "dispatcher_download_dir", "dispatcher_ip", "dispatcher_http_ip", "dispatcher_nfs_ip", "dispatcher_tftp_ip",
    "prefix", "http_url_format_string", "http_cache_fallback_origin_url", "http_cache_include_rules",
    "http_cache_exclude_rules", "test_docker_bind_mounts",
)
#: the keys dutlab applies (the others are accepted for LAVA's files and do nothing)
APPLIED = ("dispatcher_download_dir", "dispatcher_ip", "dispatcher_tftp_ip")
#: a variable name the device's shell takes
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class WorkerFileError(ValueError):
    """A file that cannot be used; `path` is where in it (a key), the message says what to fix."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def parse(kind: str, text: str) -> dict[str, Any]:
    """The checked content of a file of `kind` (an empty file is an empty mapping)."""
    if kind not in KINDS:
        raise WorkerFileError(f"'{kind}' is not a worker file; use one of {', '.join(KINDS)}")
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise WorkerFileError(f"the {kind} file is not valid YAML: {str(exc).splitlines()[0]}") from None
    if kind == "dispatcher":
        return _dispatcher(doc)
    try:
        spec = envfile.check(doc, kind)
    except envfile.EnvFileError as exc:
        raise WorkerFileError(str(exc)) from None
    if kind == "env-dut":
        if spec["purge"]:
            raise WorkerFileError("env-dut: purge cannot apply to the device's shell; list the variables in removes",
                                  "purge")
        for key in ("removes", "overrides"):
            bad = next((n for n in spec[key] if not SHELL_NAME.fullmatch(n)), None)
            if bad is not None:
                raise WorkerFileError(f"env-dut: {bad!r} is not a shell variable name (letters, digits, '_')", key)
    return spec


def _dispatcher(doc: Any) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise WorkerFileError(f"the dispatcher file must be a mapping of {', '.join(DISPATCHER_KEYS)}")
    for key, value in doc.items():
        if key not in DISPATCHER_KEYS:
            raise WorkerFileError(f"unknown key {key!r}; LAVA's dispatcher.yaml keys are {', '.join(DISPATCHER_KEYS)}",
                                  str(key))
        if key in APPLIED and not isinstance(value, str):
            raise WorkerFileError(f"{key} must be a string, not {value!r}", key)
    folder = doc.get("dispatcher_download_dir")
    if folder is not None and not folder.startswith("/"):
        raise WorkerFileError(f"dispatcher_download_dir must be an absolute path, not {folder!r}",
                              "dispatcher_download_dir")
    return dict(doc)


def board_address(dispatcher: dict[str, Any]) -> str:
    """The address boards reach the worker's TFTP server on, from a dispatcher file ('' = none)."""
    return str(dispatcher.get("dispatcher_tftp_ip") or dispatcher.get("dispatcher_ip") or "")


def run_settings(info: dict[str, Any], job_dir: Path) -> dict[str, str]:
    """What the server's files in a job package (`dispatcher`, `env_dut`) change in its run:
    `dispatcher_ip` and `work_dir` ('' when the server sets none) and `env_dut` (a file written
    into the job folder, for dutlab-run --env-dut). The dispatcher file is kept there too."""
    dispatcher = info.get("dispatcher") if isinstance(info.get("dispatcher"), dict) else {}
    out = {"dispatcher_ip": board_address(dispatcher), "work_dir": str(dispatcher.get("dispatcher_download_dir") or ""),
           "env_dut": ""}
    if dispatcher:
        (job_dir / "dispatcher.yaml").write_text(yaml.safe_dump(dispatcher, sort_keys=False))
    env_dut = info.get("env_dut")
    if isinstance(env_dut, dict) and (env_dut.get("removes") or env_dut.get("overrides")):
        out["env_dut"] = str(job_dir / "env-dut.yaml")
        Path(out["env_dut"]).write_text(yaml.safe_dump(env_dut, sort_keys=False))
    return out
