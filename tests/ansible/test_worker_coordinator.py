"""The workers learn the MultiNode coordinator from the inventory: site.yml's first plays take the
lab_coordinator host's endpoint and secret (the coordinator role's endpoint tasks, the playbooks'
tasks/worker-coordinator.yml), and the worker role's worker.yaml names it, with the secret in a
file of its own, in a form dutlab-worker accepts. Runs the real plays and templates on localhost;
no daemon is installed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_harness import REPO, TARGET_PYTHON, play

from dutlab.dispatcher.worker.config import coordinator_endpoint, load_config

pytestmark = [pytest.mark.ansible]
ROLE = REPO / "collection" / "roles" / "worker"


def inventory(tmp_path: Path, workers: dict) -> Path:
    local = {"ansible_connection": "local", "ansible_python_interpreter": TARGET_PYTHON}
    doc = {"all": {"vars": local, "children": {
        "lab_coordinator": {"hosts": {"coord01": {"ansible_host": "192.0.2.5", "dutlab_coordinator_host": "0.0.0.0",
                                                  "dutlab_coordinator_port": 3099,
                                                  "dutlab_coordinator_secret": "s3cret-of-the-lab"}}},
        "lab_workers": {"hosts": workers}}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def plays(out: Path) -> list:
    """site.yml's coordinator plays, then the worker role's settings files rendered into `out`."""
    return [
        {"name": "Where the MultiNode coordinator listens", "hosts": "lab_coordinator", "gather_facts": False,
         "tasks": [{"name": "Take the coordinator's endpoint", "ansible.builtin.include_role": {
             "name": "dutlab.lab.coordinator", "tasks_from": "endpoint.yml"}}]},
        {"name": "Workers", "hosts": "lab_workers", "gather_facts": False, "tasks": [
            {"name": "The coordinator's address and secret",
             "ansible.builtin.include_tasks": str(REPO / "playbooks" / "tasks" / "worker-coordinator.yml")},
            {"name": "Role defaults", "ansible.builtin.include_vars": str(ROLE / "defaults" / "main.yml")},
            {"name": "Role vars", "ansible.builtin.include_vars": str(ROLE / "vars" / "main.yml")},
            {"name": "Render worker.yaml", "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "worker.yaml.j2"), "dest": f"{out}/{{{{ inventory_hostname }}}}.yaml",
                "mode": "0644"}},
        ]},
    ]


def test_workers_get_the_coordinator_from_the_inventory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    base = {"dutlab_worker_server_url": "http://lab:8000"}
    workers = {"disp01": dict(base),  # from the lab_coordinator host
               "disp02": {**base, "dutlab_worker_coordinator": {"host": "coord.example", "port": 3080}}}
    run = play(plays(out), tmp_path, inventory=inventory(tmp_path, workers))
    assert "s3cret-of-the-lab" not in run.stdout  # no_log on the fact that carries it
    told = run["Take the coordinator's address"]["ansible_facts"]["dutlab_worker_coordinator"]
    assert told in ({"host": "192.0.2.5", "port": 3099, "secret": True}, {"host": "coord.example", "port": 3080})

    first = load_config(str(out / "disp01.yaml"))
    assert first["coordinator"] == {"host": "192.0.2.5", "port": 3099,
                                    "secret_file": "/etc/dutlab/coordinator-client.secret"}
    assert "s3cret" not in (out / "disp01.yaml").read_text()  # worker.yaml is world-readable
    secret = tmp_path / "coordinator-client.secret"  # what the role's copy task writes there
    secret.write_text("s3cret-of-the-lab\n")
    endpoint = coordinator_endpoint({**first["coordinator"], "secret_file": str(secret)})  # as dutlab-worker reads it
    assert (endpoint.host, endpoint.port, endpoint.secret) == ("192.0.2.5", 3099, "s3cret-of-the-lab")

    second = load_config(str(out / "disp02.yaml"))
    assert second["coordinator"] == {"host": "coord.example", "port": 3080}  # the inventory's own wins
