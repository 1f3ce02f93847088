"""The files the server keeps for a worker: their checks (the server's and the worker's), what
a run gets from them, and env-dut in the test shell's environment on the device."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from dutlab.dispatcher.actions.overlay import LavaOverlay
from dutlab.dispatcher.context import JobContext
from dutlab.dispatcher.log import JobLogger
from dutlab.dispatcher.workerfiles import WorkerFileError, parse, run_settings


def test_lava_files_are_taken_as_they_are():
    lava = ("dispatcher_ip: 192.0.2.1\ndispatcher_download_dir: /srv/downloads\nprefix: a-\n"
            "http_url_format_string: 'http://cache/%s'\n")
    assert parse("dispatcher", lava)["dispatcher_download_dir"] == "/srv/downloads"
    assert parse("env", "purge: true\noverrides: {PATH: /usr/bin}\n") == {
        "purge": True, "removes": [], "overrides": {"PATH": "/usr/bin"}}
    assert parse("env-dut", "") == {"purge": False, "removes": [], "overrides": {}}
    assert parse("dispatcher", "# nothing yet\n") == {}


@pytest.mark.parametrize(("kind", "text", "says", "path"), [
    ("dispatcher", "dispatcher_ipp: 1.2.3.4\n", "unknown key 'dispatcher_ipp'; LAVA's dispatcher.yaml keys are",
     "dispatcher_ipp"),
    ("dispatcher", "dispatcher_download_dir: tmp\n", "must be an absolute path", "dispatcher_download_dir"),
    ("dispatcher", "dispatcher_ip: [1]\n", "dispatcher_ip must be a string", "dispatcher_ip"),
    ("dispatcher", "- a\n", "must be a mapping", ""),
    ("env", "purge: maybe\n", "purge must be true or false", ""),
    ("env", "overrides: {A: [\n", "not valid YAML", ""),
    ("env-dut", "purge: true\n", "purge cannot apply to the device's shell", "purge"),
    ("env-dut", "overrides: {'A;reboot': 1}\n", "is not a shell variable name", "overrides"),
    ("certificate", "", "use one of dispatcher, env, env-dut", ""),
])
def test_bad_files_say_what_to_fix(kind, text, says, path):
    with pytest.raises(WorkerFileError, match=says.replace("(", r"\(").replace(")", r"\)")) as err:
        parse(kind, text)
    assert err.value.path == path


def test_a_run_gets_the_tftp_address_the_download_folder_and_env_dut(tmp_path):
    info = {"dispatcher": {"dispatcher_ip": "192.0.2.1", "dispatcher_tftp_ip": "192.0.2.9",
                           "dispatcher_download_dir": "/srv/dl"},
            "env_dut": {"purge": False, "removes": ["X"], "overrides": {}}}
    got = run_settings(info, tmp_path)
    assert got == {"dispatcher_ip": "192.0.2.9", "work_dir": "/srv/dl", "env_dut": str(tmp_path / "env-dut.yaml")}
    assert yaml.safe_load((tmp_path / "env-dut.yaml").read_text())["removes"] == ["X"]
    assert run_settings({"dispatcher": {}, "env_dut": {}}, tmp_path / "none") == {
        "dispatcher_ip": "", "work_dir": "", "env_dut": ""}


def test_env_dut_is_the_test_shells_environment_between_the_device_and_the_job(tmp_path: Path):
    job = {"job_name": "t", "environment": {"JOB_VAR": "job", "SHARED": "job"}, "actions": [{"test": {}}]}
    ctx = JobContext(job_id=7, job=job, device={"hostname": "qemu01", "environment": {"DEVICE_VAR": "device"}},
                     logger=JobLogger(tmp_path / "output.yaml"), output_dir=tmp_path, work_dir=tmp_path,
                     tmp_dir=tmp_path / "tmp",
                     env_dut={"removes": ["DEVICE_VAR", "HOME"], "overrides": {"SHARED": "lab", "MIRROR": "m 1"}})
    LavaOverlay({}, []).run(ctx)
    environment = ctx.tmp_dir / "overlay" / "root" / "environment"
    shown = subprocess.run(["sh", "-c", f'HOME=/root; . {environment}; '
                            'echo "$MIRROR|$SHARED|$JOB_VAR|${DEVICE_VAR-unset}|${HOME-unset}|$LAVA_JOB_ID"'],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shown == "m 1|job|job|unset|unset|7"
