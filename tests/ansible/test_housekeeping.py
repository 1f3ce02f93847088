"""Housekeeping from the collection: the roles' logrotate snippets (checked by logrotate itself, then
a real rotation) and the retention playbook (check mode lists, a run removes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_harness import REPO, play

pytestmark = pytest.mark.ansible

ROLES = REPO / "collection" / "roles"
JOB = ("job_name: old\ndevice_type: qemu\nvisibility: public\ntimeouts: {job: {minutes: 5}}\n"
       "context: {arch: amd64}\nactions:\n- boot: {method: qemu, media: tmpfs, prompts: ['# ']}\n")


def logrotate() -> str:
    found = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(found).exists():
        pytest.fail("logrotate is not installed (scripts/setup.sh installs it)")
    return found


def test_the_roles_logrotate_snippets_pass_logrotate_and_rotate(tmp_path):
    logs = {"server": tmp_path / "server-log", "worker": tmp_path / "worker-log"}
    plays = [{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLES / role / "defaults" / "main.yml")],
        "tasks": [{"name": f"render {role}", "ansible.builtin.template": {
            "src": str(ROLES / role / "templates" / "logrotate.j2"), "dest": str(tmp_path / f"{role}.conf"),
            "mode": "0644"},
            # task vars: above the role defaults read as vars_files
            "vars": {f"dutlab_{role}_log_dir": str(logs[role]), f"dutlab_{role}_user": "root",
                     **({"dutlab_server_group": "root"} if role == "server" else {})}}],
    } for role in ("server", "worker")]
    play(plays, tmp_path)
    for role, folder in logs.items():
        folder.mkdir(mode=0o750)
        log = folder / f"dutlab-{role}.log"
        log.write_text("a line the daemon wrote\n")
        conf, state = tmp_path / f"{role}.conf", tmp_path / f"{role}.state"
        check = subprocess.run([logrotate(), "-d", "-s", str(state), str(conf)], capture_output=True, text=True)
        assert check.returncode == 0 and "error" not in check.stderr.lower(), check.stderr
        assert str(log) in check.stderr  # the debug run names the file it would rotate
        forced = subprocess.run([logrotate(), "-f", "-s", str(state), str(conf)], capture_output=True, text=True)
        assert forced.returncode == 0, forced.stderr
        # copytruncate: the daemon's file stays (emptied) and the old lines are in .1
        assert log.read_text() == "" and (folder / f"dutlab-{role}.log.1").read_text() == "a line the daemon wrote\n"


def test_retention_playbook_lists_in_check_mode_and_removes(lab_server, tmp_path):
    lab = lab_server
    lab.manage("device-types", "add", "qemu", "--disable-health-checks")
    lab.manage("workers", "add", "w1")
    (tmp_path / "qemu01.jinja2").write_text("{% extends 'qemu.jinja2' %}\n")
    lab.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", "--dictionary",
               str(tmp_path / "qemu01.jinja2"))
    old = lab.api("POST", "/api/v1/jobs", {"definition": JOB}).json()["job_ids"][0]
    lab.api("POST", f"/api/v1/jobs/{old}/cancel")
    queued = lab.api("POST", "/api/v1/jobs", {"definition": JOB}).json()["job_ids"][0]
    inventory = f"[lab_servers]\nlab ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    extravars = {"dutlab_server_venv": str(Path(sys.executable).parent.parent),
                 "dutlab_server_config_dir": str(lab.config.parent), "dutlab_server_user": "root",
                 "retention_days": 0}
    book = REPO / "playbooks" / "retention.yml"
    listed = play(book, tmp_path, inventory=inventory, extravars=extravars, cmdline="--check")
    assert listed.changed == {} and listed["What went"]["msg"] == [
        f"would remove 1 job(s) finished more than 0 ago: {old} (1 output folder(s))"]
    assert lab.api("GET", f"/api/v1/jobs/{old}").status == 200
    removed = play(book, tmp_path, inventory=inventory, extravars=extravars)
    assert removed.changed == {"lab": 1}
    assert lab.api("GET", f"/api/v1/jobs/{old}").status == 404
    assert lab.api("GET", f"/api/v1/jobs/{queued}").json()["state"] == "Submitted"
