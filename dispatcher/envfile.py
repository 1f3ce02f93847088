"""The environment dutlab-run gets, from env.yaml files with LAVA's semantics.

An env spec has three optional keys, applied in this order: `purge: true` starts from an empty
environment instead of the worker's own; `removes: [NAME, ...]` drops names; `overrides: {NAME:
value}` sets names. Specs compose: the server's per-worker spec first, the worker's --env-file
last, so the host's admin has the final word.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

KEYS = ("purge", "removes", "overrides")


class EnvFileError(ValueError):
    pass


def load(path: str | Path) -> dict[str, Any]:
    """Read and check an env.yaml; an empty file is an empty spec."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc}") from exc
    return check(doc, str(path))


def check(doc: Any, source: str = "env") -> dict[str, Any]:
    """Return the spec with every key present; refuse anything LAVA's format does not have."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise EnvFileError(f"{source}: must be a mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise EnvFileError(f"{source}: unknown key '{unknown[0]}'; the keys are {', '.join(KEYS)}")
    purge = doc.get("purge", False)
    if not isinstance(purge, bool):
        raise EnvFileError(f"{source}: purge must be true or false, not {purge!r}")
    removes = doc.get("removes") or []
    if not isinstance(removes, list) or not all(isinstance(n, str) for n in removes):
        raise EnvFileError(f"{source}: removes must be a list of variable names")
    overrides = doc.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise EnvFileError(f"{source}: overrides must be a mapping NAME: value")
    return {"purge": purge, "removes": removes,
            "overrides": {str(k): _value(source, k, v) for k, v in overrides.items()}}


def _value(source: str, name: Any, value: Any) -> str:
    # YAML turns `yes`, `on` and a blank into bool/None: refuse them rather than guess a spelling.
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise EnvFileError(f"{source}: overrides.{name}: {value!r} is not a string; quote it")
    return str(value)


def build(specs: list[dict[str, Any] | None], base: Mapping[str, str]) -> dict[str, str]:
    """Apply `specs` in order to a copy of `base` (normally os.environ)."""
    env = dict(base)
    for raw in specs:
        if raw is None:
            continue
        spec = check(raw)
        if spec["purge"]:
            env = {}
        for name in spec["removes"]:
            env.pop(name, None)
        env.update(spec["overrides"])
    return env
