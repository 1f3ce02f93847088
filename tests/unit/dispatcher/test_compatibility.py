"""Pipeline compatibility (lava-interfaces.md §8): a job's number is the highest of its methods';
a worker whose code offers less, or lacks a method, refuses it and says which side to upgrade."""

from __future__ import annotations

from pathlib import Path

import yaml

from dutlab.dispatcher.actions import boot_qemu, compatibility

ROOT = Path(__file__).resolve().parents[3]
JOB = yaml.safe_load((ROOT / "examples" / "jobs" / "qemu-smoke.yaml").read_text())


def test_a_job_needs_the_highest_number_of_its_methods(monkeypatch):
    assert compatibility.job_compatibility(JOB) == (compatibility.BASE, [])
    monkeypatch.setattr(boot_qemu, "COMPATIBILITY", 3, raising=False)
    assert compatibility.job_compatibility(JOB) == (3, [])
    assert compatibility.refusal(JOB, 3, 5, "w1", "1.0") == ""


def test_the_refusal_names_the_worker_to_upgrade():
    said = compatibility.refusal(JOB, 4, 12, "w1", "0.1.0", "0.2.0")
    assert said == ("job 12 needs pipeline compatibility 4, dutlab 0.1.0 on worker w1 offers 1 for its methods: "
                    "upgrade dutlab on worker w1 (the server runs dutlab 0.2.0)")
    newer = {"actions": [*JOB["actions"], {"boot": {"method": "barebox"}}]}
    assert compatibility.refusal(newer, 1, 13, "w1", "0.1.0") == (
        "job 13 uses boot barebox, which dutlab 0.1.0 on worker w1 does not have: upgrade dutlab on worker w1")


def test_block_methods_as_the_schema_selects_them():
    assert [compatibility.block_method(kind, params) for kind, params in (
        ("deploy", {"to": "tftp"}), ("boot", {"method": "u-boot"}), ("test", {"monitors": []}),
        ("command", {"name": "x"}), ("boot", "not a mapping"))] == ["tftp", "u-boot", "monitors", "command", ""]
