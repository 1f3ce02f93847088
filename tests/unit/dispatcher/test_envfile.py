"""env.yaml semantics (LAVA's): purge, then removes, then overrides; specs compose in order."""

from __future__ import annotations

import pytest

from dutlab.dispatcher import envfile

BASE = {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def test_no_spec_is_the_base_environment():
    assert envfile.build([None, {}], BASE) == BASE


def test_removes_then_overrides():
    env = envfile.build([{"removes": ["HOME", "NOT_SET"], "overrides": {"LANG": "en_US.UTF-8", "N": 3}}], BASE)
    assert env == {"PATH": "/usr/bin", "LANG": "en_US.UTF-8", "N": "3"}


def test_purge_starts_from_empty():
    env = envfile.build([{"purge": True, "overrides": {"PATH": "/bin"}}], BASE)
    assert env == {"PATH": "/bin"}


def test_later_spec_wins_and_its_purge_drops_earlier_overrides():
    server = {"overrides": {"A": "server", "B": "server"}}
    local = {"overrides": {"B": "local"}}
    assert envfile.build([server, local], BASE) | {} == {**BASE, "A": "server", "B": "local"}
    assert envfile.build([server, {"purge": True}], BASE) == {}


def test_base_is_not_modified():
    base = dict(BASE)
    envfile.build([{"purge": True}], base)
    assert base == BASE


def test_load_reads_yaml(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("purge: false\nremoves: [HOME]\noverrides:\n  HTTP_PROXY: http://proxy:3128\n")
    assert envfile.load(path) == {"purge": False, "removes": ["HOME"],
                                  "overrides": {"HTTP_PROXY": "http://proxy:3128"}}
    path.write_text("")
    assert envfile.load(path) == {"purge": False, "removes": [], "overrides": {}}


@pytest.mark.parametrize(("doc", "says"), [
    ({"purge": True, "remove": ["X"]}, "unknown key 'remove'"),
    ({"purge": "yes"}, "purge must be true or false"),
    ({"removes": "HOME"}, "removes must be a list"),
    ({"overrides": ["A=1"]}, "overrides must be a mapping"),
    ({"overrides": {"DEBUG": True}}, "overrides.DEBUG: True is not a string; quote it"),
    ({"overrides": {"EMPTY": None}}, "overrides.EMPTY: None is not a string"),
    (["purge"], "must be a mapping"),
])
def test_bad_specs_name_the_problem(doc, says):
    with pytest.raises(envfile.EnvFileError, match=says.replace(".", r"\.")):
        envfile.check(doc, "env.yaml")


def test_unreadable_file_names_the_path(tmp_path):
    with pytest.raises(envfile.EnvFileError, match="missing.yaml"):
        envfile.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("purge: [\n")
    with pytest.raises(envfile.EnvFileError, match="bad.yaml"):
        envfile.load(tmp_path / "bad.yaml")
