"""output.yaml: one JSON-in-YAML record per line, flushed, masked, always loadable."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from dutlab.dispatcher.log import JobLogger, read_log


def test_each_record_is_one_line_of_yaml_and_json(tmp_path: Path) -> None:
    logger = JobLogger(tmp_path / "output.yaml")
    assert logger.info("hello") == 0
    assert logger.target("ünïcode \x1b[6n and \x7f") == 1
    assert logger.results({"definition": "lava", "case": "job", "result": "pass"}) == 2
    lines = (tmp_path / "output.yaml").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(line.startswith("- {") for line in lines)
    record = json.loads(lines[1][2:])
    assert list(record) == ["dt", "lvl", "msg"]
    assert datetime.fromisoformat(record["dt"]).utcoffset().total_seconds() == 0
    assert record["dt"].endswith("+00:00")
    assert lines[1] == "- " + json.dumps(record, ensure_ascii=False)
    loaded = yaml.safe_load((tmp_path / "output.yaml").read_text(encoding="utf-8"))
    assert loaded == read_log(tmp_path / "output.yaml")
    assert loaded[1]["msg"] == "ünïcode \x1b[6n and \ufffd"
    assert loaded[2]["msg"] == {"definition": "lava", "case": "job", "result": "pass"}


def test_lines_are_flushed_as_written(tmp_path: Path) -> None:
    logger = JobLogger(tmp_path / "output.yaml")
    logger.debug("one")
    assert len((tmp_path / "output.yaml").read_text().splitlines()) == 1


def test_secrets_are_masked(tmp_path: Path) -> None:
    logger = JobLogger(tmp_path / "output.yaml", secrets=["s3cret"])
    logger.add_secret("tok")
    logger.info("password s3cret and tok")
    logger.results({"definition": "x", "case": "s3cret", "result": "pass"})
    text = (tmp_path / "output.yaml").read_text()
    assert "s3cret" not in text and "[MASKED] and [MASKED]" in text


def test_unknown_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown log level 'event'"):
        JobLogger(tmp_path / "output.yaml").log("event", "x")
