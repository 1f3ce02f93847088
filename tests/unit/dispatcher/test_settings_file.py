"""The settings-file reader shared by dutlab-worker, dutlab-coordinator and the lab server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dutlab.dispatcher.settings_file import SettingsError, known_values, read_mapping


@dataclass
class Example:
    token_file: str = ""
    poll_wait: float = 20.0


def test_keys_with_dashes_or_underscores(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("token-file: /etc/t\npoll_wait: 3\n")
    assert known_values(Example, read_mapping(path)) == {"token_file": "/etc/t", "poll_wait": 3}


@pytest.mark.parametrize(("text", "says"), [
    ("", None),
    ("- a\n- b\n", "x.yaml: expected a mapping of settings, got list"),
    ("a: [\n", "x.yaml: not valid YAML:"),
])
def test_read_mapping(tmp_path, text, says):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    if says is None:
        assert read_mapping(path) == {}
        return
    with pytest.raises(SettingsError) as err:
        read_mapping(path)
    assert str(err.value).startswith(f"{tmp_path}/{says}")


def test_missing_file_and_unknown_key_are_named(tmp_path):
    with pytest.raises(SettingsError, match="no-such.yaml: cannot read it: No such file or directory"):
        read_mapping(tmp_path / "no-such.yaml")
    with pytest.raises(SettingsError) as err:
        known_values(Example, {"poll-wiat": 3}, "worker.yaml: ")
    assert str(err.value) == "worker.yaml: poll-wiat: unknown setting; known settings are poll_wait, token_file"
