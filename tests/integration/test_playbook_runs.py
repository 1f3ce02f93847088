"""Playbooks the server runs from the queue consumer on a schedule, recorded in /api/v1/playbook-runs."""

from __future__ import annotations

import time

import pytest

from labkit import start_lab

GOOD = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Leave a mark
      ansible.builtin.copy:
        dest: "{{ mark }}"
        content: "ran\\n"
        mode: "0644"
"""
BAD = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: the health check found qemu01 Bad
"""


def wait_runs(lab, count: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    runs = []
    while time.monotonic() < deadline:
        runs = lab.api("GET", "/api/v1/playbook-runs").json()["results"]
        if len([r for r in runs if r["status"] not in ("pending", "running")]) >= count:
            return runs
        time.sleep(0.5)
    raise AssertionError(f"runs: {runs}\n{lab.log('consumer')}")


@pytest.mark.ansible
def test_schedules_run_from_the_consumer_and_are_recorded(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "good.yml").write_text(GOOD)
    (books / "bad.yml").write_text(BAD)
    mark = tmp_path / "mark"
    inventory = "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3"
    lab, stop = start_lab(tmp_path, playbooks_dir=str(books), playbook_schedules=[
        {"name": "nightly", "playbook": "good.yml", "cron": "* * * * *", "inventory": inventory,
         "extravars": {"mark": str(mark)}},
        {"name": "checks", "playbook": "bad.yml", "cron": "* * * * *", "inventory": inventory},
        {"name": "never", "playbook": "good.yml", "cron": "0 0 31 2 *", "inventory": inventory},
    ])
    try:
        runs = {r["name"]: r for r in wait_runs(lab, 2)}
        assert set(runs) == {"nightly", "checks"}  # "never" is not due
        assert runs["nightly"]["status"] == "successful" and runs["nightly"]["trigger"] == "schedule"
        assert runs["nightly"]["stats"]["changed"] == {"localhost": 1}
        assert mark.read_text() == "ran\n"
        assert runs["checks"]["status"] == "failed"
        assert runs["checks"]["failures"][0]["message"] == "the health check found qemu01 Bad"
        # on demand, and errors
        r = lab.api("POST", "/api/v1/playbook-runs", {"name": "never"})
        assert r.status == 202
        assert lab.api("POST", "/api/v1/playbook-runs", {"name": "nope"}).status == 404
        assert lab.api("GET", "/api/v1/playbook-runs", token=None).status == 401
        shown = lab.api("GET", f"/api/v1/playbook-runs/{r.json()['id']}").json()
        assert shown["trigger"] == "api"
        assert len(wait_runs(lab, 3)) == 3
        # a consumer restart in the same minute does not run a schedule twice
        lab.restart("consumer")
        time.sleep(3)
        names = [r["name"] for r in lab.api("GET", "/api/v1/playbook-runs").json()["results"]]
        assert names.count("nightly") in (1, 2)  # 2 only if the minute rolled over meanwhile
    finally:
        stop()


@pytest.mark.ansible
def test_scheduled_backup_runs_from_the_consumer(tmp_path):
    """playbooks/backup.yml on a schedule: the archive is written and fetched, the run recorded."""
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    inventory = ("[lab_servers]\nlab ansible_connection=local "
                 "ansible_python_interpreter=/usr/bin/python3\n")
    lab, stop = start_lab(tmp_path, playbooks_dir=str(repo / "playbooks"), playbook_schedules=[
        {"name": "backup", "playbook": "backup.yml", "cron": "* * * * *", "inventory": inventory,
         "extravars": {"dutlab_server_venv": str(Path(sys.executable).parent.parent),
                       "dutlab_server_config_dir": str(tmp_path), "dutlab_server_user": "root",
                       "dutlab_server_group": "root", "dutlab_backup_dir": str(tmp_path / "archives"),
                       "backup_dest": str(tmp_path / "fetched")}},
    ])
    try:
        [run] = wait_runs(lab, 1, timeout=240)
        assert run["name"] == "backup" and run["trigger"] == "schedule", run
        assert run["status"] == "successful", run
        [archive] = (tmp_path / "archives").glob("dutlab-backup-*.tar.gz")
        fetched = tmp_path / "fetched" / "lab" / archive.name
        assert fetched.read_bytes() == archive.read_bytes()
    finally:
        stop()
