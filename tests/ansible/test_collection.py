"""The collection as a whole: argument specs match the defaults, ansible-doc reads every plugin and
role, ansible-test sanity and ansible-lint pass, and the built tarball installs and its modules
run from the installed path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_harness import BIN, REPO, env, install_built_collection, play

pytestmark = pytest.mark.ansible

COLLECTION = REPO / "collection"
OUR_ROLES = ("server", "worker")
MODULES = ("device", "device_info", "device_type", "group", "job", "job_info", "token", "user", "worker")


def run(*argv: str, cwd: Path = REPO, timeout: float = 600,
        extra_env: dict | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, **env(extra_env))
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ)


@pytest.mark.parametrize("role", OUR_ROLES)
def test_argument_specs_match_the_defaults(role):
    """meta/argument_specs.yml documents every default, with the same value, and nothing else;
    options without a default there are required and have none in defaults/main.yml."""
    folder = COLLECTION / "roles" / role
    defaults = yaml.safe_load((folder / "defaults" / "main.yml").read_text()) or {}
    options = yaml.safe_load((folder / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    documented = {name: spec["default"] for name, spec in options.items() if "default" in spec}
    required = {name for name, spec in options.items() if spec.get("required")}
    assert documented == defaults
    assert required == set(options) - set(documented), "an option without default must be required"
    assert all(name.startswith(f"dutlab_{role}_") for name in options)


def test_ansible_doc_reads_every_module_and_role():
    out = run(str(BIN / "ansible-doc"), "--json", *(f"dutlab.lab.{m}" for m in MODULES))
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)
    assert sorted(docs) == sorted(f"dutlab.lab.{m}" for m in MODULES)
    for name, doc in docs.items():
        assert doc["doc"]["options"]["api_url"] and doc["examples"] and doc["return"], name
    for role in OUR_ROLES:
        out = run(str(BIN / "ansible-doc"), "-t", "role", f"dutlab.lab.{role}")
        assert out.returncode == 0 and "ENTRY POINT: *main*" in out.stdout, out.stderr


@pytest.mark.slow
def test_ansible_test_sanity_passes():
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    out = run(str(REPO / "scripts" / "ansible-test.sh"), "sanity", "--python", python, timeout=1800)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-6000:]


def test_ansible_lint_production_profile_passes():
    if not (BIN / "ansible-lint").exists():
        if os.environ.get("CI"):
            pytest.fail("ansible-lint is not installed: CI installs the test extra (pip install -e .[test,ansible])")
        pytest.skip("ansible-lint is not installed (pip install ansible-lint)")
    out = run(str(BIN / "ansible-lint"), "--nocolor", timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in out.stdout + out.stderr


def test_built_collection_installs_and_its_modules_run_from_there(lab_server, tmp_path):
    tarball, isolated = install_built_collection(tmp_path)
    listing = subprocess.run(["tar", "tzf", str(tarball)], capture_output=True, text=True, check=True).stdout.split()
    for member in ("README.md", "LICENSE", "meta/runtime.yml", "plugins/module_utils/_api.py",
                   "plugins/modules/device.py", "roles/server/tasks/main.yml", "roles/worker/meta/argument_specs.yml",
                   "playbooks/site.yml", "playbooks/retention.yml", "changelogs/changelog.yaml"):
        assert member in listing, member
    installed = Path(isolated["ANSIBLE_COLLECTIONS_PATH"])
    doc = run(str(BIN / "ansible-doc"), "dutlab.lab.device", cwd=tmp_path, extra_env=isolated)
    modules = installed / "ansible_collections" / "dutlab" / "lab" / "plugins" / "modules"
    assert str(modules) in doc.stdout, doc.stdout[:500]
    # the playbooks run by their names (the whole site converging: test_lab_e2e.py)
    check = run(str(BIN / "ansible-playbook"), "dutlab.lab.retention", "--syntax-check", cwd=tmp_path,
                extra_env=isolated)
    assert check.returncode == 0 and str(installed) in check.stdout, check.stdout + check.stderr

    tasks = [{"name": "type", "dutlab.lab.device_type": {"name": "installed", "api_url": lab_server.url,
                                                         "api_token": lab_server.admin_token}}]
    result = play([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], tmp_path, cwd=tmp_path,
                  envvars=isolated)
    assert result["type"]["changed"] and result["type"]["device_type"]["name"] == "installed"
    shutil.rmtree(installed)


def test_worker_tftp_root_follows_the_tftp_role_on_its_host(tmp_path):
    """dutlab_worker_tftp_root's default: the host's dutlab_tftp_root when it has one, else /srv/tftp."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": {"lab_workers": {"hosts": {"disp01": {}, "disp02": {}}},
                     "lab_tftp": {"hosts": {"disp01": {"dutlab_tftp_root": "/srv/boards"}}}}}}))
    defaults = str(COLLECTION / "roles" / "worker" / "defaults" / "main.yml")
    plays = [{"hosts": host, "gather_facts": False, "vars_files": [defaults],
              "tasks": [{"name": host, "ansible.builtin.set_fact": {"root": "{{ dutlab_worker_tftp_root }}"}}]}
             for host in ("disp01", "disp02")]
    run = play(plays, tmp_path, inventory=inventory)
    assert run["disp01"]["ansible_facts"]["root"] == "/srv/boards"
    assert run["disp02"]["ansible_facts"]["root"] == "/srv/tftp"
