"""Job definition schema: LAVA's own examples pass, every malformed job names its path."""

import json
import re
from pathlib import Path

import pytest

from dutlab.dispatcher.schema.common import JobDefinitionError, timeout_seconds
from dutlab.dispatcher.schema.job import SUPPORTED, validate_job
from dutlab.dispatcher.schema.loader import parse_job
from dutlab.service.templating import shipped_device_types_dir

DATA = Path(__file__).resolve().parents[2] / "data"
GOOD = sorted((DATA / "good-jobs").glob("*.yaml"))
BAD = sorted((DATA / "bad-jobs").glob("*.yaml"))
HEADER = re.compile(r"# (path|contains):[ ]?(.*)")


def _expectations(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = HEADER.fullmatch(line)
        if not match:
            break
        found[match.group(1)] = match.group(2)
    return found


def _first_error(text: str) -> JobDefinitionError:
    with pytest.raises(JobDefinitionError) as info:
        parse_job(text)
    return info.value


def test_corpora_are_big_enough():
    assert len(BAD) >= 60
    assert len(GOOD) >= 3


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_jobs_validate(path):
    job = parse_job(path.read_text())
    assert job["actions"]


def test_shipped_health_check_validates():
    job = parse_job((shipped_device_types_dir() / "health-checks" / "qemu.yaml").read_text())
    assert job["device_type"] == "qemu"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_job_names_the_path(path):
    text = path.read_text()
    expected = _expectations(text)
    assert "path" in expected, f"{path.name} must start with '# path: <expected path>'"
    error = _first_error(text)
    assert error.path == expected["path"], error.message
    assert expected.get("contains", "") in error.message
    # one sentence: capitalised, ends with a period, one line
    assert error.message[0].isupper() and error.message.endswith("."), error.message
    assert "\n" not in error.message
    assert str(error) == (f"{error.path}: {error.message}" if error.path else error.message)


def test_json_is_accepted():
    job = parse_job((DATA / "good-jobs" / "lava-qemu-amd64.yaml").read_text())
    assert parse_job(json.dumps(job)) == job


def test_json_with_wrong_types_names_the_path():
    job = parse_job((DATA / "good-jobs" / "lava-qemu-amd64.yaml").read_text())
    job["actions"][1]["boot"]["prompts"] = {"root": "#"}
    error = _first_error(json.dumps(job))
    assert error.path == "actions[1].boot.prompts"


def test_validate_job_returns_the_job_unchanged():
    job = parse_job((DATA / "good-jobs" / "lava-qemu-aarch64.yaml").read_text())
    assert validate_job(job) is job


def test_first_error_is_deterministic():
    text = (DATA / "bad-jobs" / "priority-word.yaml").read_text()
    text = text.replace("visibility: public", "visibility: secret")
    # visibility comes before priority in the schema, whatever the document order
    assert _first_error(text).path == "visibility"


def test_extra_context_variables():
    job = parse_job((DATA / "good-jobs" / "lava-qemu-amd64.yaml").read_text())
    job["context"]["kvm"] = True
    with pytest.raises(JobDefinitionError):
        validate_job(job)
    assert validate_job(job, extra_context_variables=["kvm"]) is job


def test_unsupported_method_lists_supported_ones():
    text = (DATA / "bad-jobs" / "boot-unknown-method.yaml").read_text()
    message = _first_error(text).message
    assert all(method in message for method in SUPPORTED["boot"])


@pytest.mark.parametrize(
    ("mapping", "seconds"),
    [({"seconds": 30}, 30), ({"minutes": 2}, 120), ({"hours": 1, "skip": True}, 3600), ({"days": 1}, 86400)],
)
def test_timeout_seconds(mapping, seconds):
    assert timeout_seconds(mapping) == seconds


@pytest.mark.parametrize("mapping", [{}, {"minutes": 1, "seconds": 1}, {"minutes": 0}, {"minutes": True}, 5])
def test_timeout_seconds_rejects(mapping):
    with pytest.raises(JobDefinitionError):
        timeout_seconds(mapping)
