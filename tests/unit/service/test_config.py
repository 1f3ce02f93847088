"""Settings: defaults, unknown keys and bad values refused naming the key."""

from __future__ import annotations

import os
import stat

import pytest

from dutlab.service.config import ConfigError, from_dict, load


def test_defaults_derive_from_data_dir():
    s = from_dict({"data_dir": "/srv/lab"})
    assert s.database == "sqlite:////srv/lab/dutlab.sqlite3"
    assert s.queue == "sqlite:////srv/lab/queue.sqlite3"
    assert s.output_dir == "/srv/lab/jobs"


@pytest.mark.parametrize("data, key", [
    ({"databse": "sqlite:///x"}, "databse"),
    ({"threads": "many"}, "threads"),
    ({"threads": -1}, "threads"),
    ({"database": "mysql://x"}, "database"),
    ({"queue": "amqp://x"}, "queue"),
    ({"listen": "localhost"}, "listen"),
    ({"template_dirs": "/etc"}, "template_dirs"),
    ({"email": {"hots": "x"}}, "email.hots"),
    ({"open_submission": "yes"}, "open_submission"),
    ({"email": {"starttls": True, "ssl": True}}, "email.ssl"),
    ({"callback_allowed_hosts": "*.example.org"}, "callback_allowed_hosts"),
    ({"admins": [{"name": "x"}]}, "admins"),
])
def test_bad_settings_are_refused_with_their_key(data, key):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert str(err.value).startswith(key + ":")


def test_load_names_the_file(tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text("listen: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError):
        load(str(tmp_path / "missing.yaml"))


def test_secret_key_generated_once_mode_0600(tmp_path):
    s = from_dict({"secret_key_file": str(tmp_path / "etc" / "secret_key")})
    first = s.secret_key()
    assert first == s.secret_key() and len(first) == 64
    mode = stat.S_IMODE(os.stat(tmp_path / "etc" / "secret_key").st_mode)
    assert mode == 0o600
