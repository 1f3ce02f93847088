"""dutlab-coordinator's settings: a YAML file, or LAVA's lava-coordinator.conf as it is.

Unknown keys and wrong types are refused with the file and the key, like every dutlab settings
file (settings_file.py); LAVA's own keys (blocksize, poll_delay, coordinator_hostname) are
accepted so an existing lava-coordinator.conf works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings_file import SettingsError, known_values, read_mapping

DEFAULT_CONFIG = "/etc/dutlab/coordinator.yaml"

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
    #: SQLite file the groups are kept in, so a restart loses none; empty: in memory only
    state_file: str = ""
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
