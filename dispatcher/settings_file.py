"""Settings files of the dutlab daemons: a YAML mapping whose keys are a dataclass's fields.

Shared by dutlab-worker, dutlab-coordinator and the lab server, so all three read their file
the same way and refuse a misspelt key the same way, naming the file, the key and the keys
there are. Each daemon checks its own values.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml


class SettingsError(ValueError):
    """A settings file or value that cannot be used; the message says where and what to fix."""


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML (or JSON) file at `path`; an empty file is an empty mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def known_values(cls: type, data: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`data` keyed by field name of dataclass `cls` (`token-file` is `token_file`).

    An unknown key is refused as "<where><key>: unknown setting; known settings are ...".
    """
    known = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise SettingsError(f"{where}{key}: unknown setting; known settings are {', '.join(sorted(known))}")
        out[name] = value
    return out
