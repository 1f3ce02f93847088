"""Run real playbooks through ansible-runner and hand back what each task returned.

`play()` runs one playbook (a file, or plays given as Python data) and returns a `PlayRun`:
`status`, `stats` and `results[task name]` (the module result of the task's last run), so a test
runs a whole sequence of module calls in one ansible-playbook process and asserts in Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import ansible_runner
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: the managed host's Python: Debian's, with python3-apt (as on a real lab host)
TARGET_PYTHON = "/usr/bin/python3"
LOCALHOST = f"localhost ansible_connection=local ansible_python_interpreter={TARGET_PYTHON}"


class Unsafe(str):
    """A string Ansible must not template (a device dictionary is Jinja2 for the server, not for us)."""


def _unsafe(dumper: yaml.SafeDumper, value: Unsafe) -> yaml.Node:
    return dumper.represent_scalar("!unsafe", str(value), style="|" if "\n" in value else None)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, _unsafe)


def dump(data) -> str:
    """YAML for Ansible: `Unsafe` strings get the !unsafe tag."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120)


@dataclass
class PlayRun:
    status: str
    rc: int
    stats: dict
    stdout: str
    results: dict = field(default_factory=dict)
    failed_tasks: list = field(default_factory=list)

    def __getitem__(self, task: str) -> dict:
        assert task in self.results, f"task {task!r} did not run; ran: {list(self.results)}\n{self.stdout[-6000:]}"
        return self.results[task]

    @property
    def changed(self) -> dict:
        return self.stats.get("changed", {})

    def changed_tasks(self) -> list[str]:
        return [name for name, res in self.results.items() if res.get("changed")]


def env(extra: dict | None = None) -> dict:
    out = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out.update(extra or {})
    return out


def play(playbook: str | Path | list, tmp_path: Path, *, inventory: str | Path | None = None,
         extravars: dict | None = None, cmdline: str = "", envvars: dict | None = None,
         expect: str = "successful", cwd: Path | None = None) -> PlayRun:
    """Run `playbook` (a path, or plays as a list) and return what every task returned.

    :param inventory: an inventory file, or an INI string; default: localhost on Debian's Python
    :param expect: the ansible-runner status the run must end with ("successful" or "failed")
    """
    runner_dir = tmp_path / "runner"
    runner_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(playbook, list):
        path = tmp_path / f"play-{len(list(runner_dir.glob('artifacts/*')))}.yml"
        path.write_text(dump(playbook))
        playbook = path
    if inventory is None:
        inventory = LOCALHOST
    elif isinstance(inventory, Path):
        inventory = str(inventory)
    run = ansible_runner.run(
        private_data_dir=str(runner_dir), project_dir=str(cwd or REPO), playbook=str(playbook),
        inventory=inventory, extravars=extravars or {}, cmdline=cmdline, quiet=True,
        suppress_env_files=True, envvars=env(envvars), rotate_artifacts=0,
    )
    stdout = run.stdout.read()
    result = PlayRun(run.status, run.rc, run.stats or {}, stdout)
    for event in run.events:
        data = event.get("event_data", {})
        if event["event"] in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"):
            res = dict(data.get("res", {}))
            res["_event"] = event["event"]
            res.setdefault("failed", event["event"] == "runner_on_failed")
            result.results[data.get("task")] = res
            if event["event"] == "runner_on_failed" and not data.get("ignore_errors"):
                result.failed_tasks.append(data.get("task"))
    assert result.status == expect, f"playbook {playbook} ended {result.status} (wanted {expect}):\n{stdout[-12000:]}"
    return result


def api_play(tasks: list, *, url: str, token: str, name: str = "module test") -> list:
    """One play on localhost whose dutlab.lab modules talk to `url` with `token`."""
    return [{
        "name": name,
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"group/dutlab.lab.api": {"api_url": url, "api_token": token}},
        "tasks": tasks,
    }]


def install_built_collection(tmp_path: Path) -> tuple[Path, dict]:
    """Build the collection tarball, install it under `tmp_path` and return the tarball and the
    environment that makes only the installed copy visible (an ansible.cfg of its own: the
    checkout's settings without its collections path)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    built = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO / "collection"),
                            "--output-path", str(tmp_path), "--force"], capture_output=True, text=True,
                           timeout=300, env={**os.environ, **env()})
    assert built.returncode == 0, built.stderr
    [tarball] = tmp_path.glob("dutlab-lab-*.tar.gz")
    installed = tmp_path / "installed"
    cfg = tmp_path / "ansible.cfg"
    settings = (REPO / "ansible.cfg").read_text().replace("collections_path = ./", (
        f"collections_path = {installed}\ncollections_scan_sys_path = false")).replace(
        "inventory = examples/inventories/local.yml\n", "")
    cfg.write_text(settings)
    isolated = {"ANSIBLE_CONFIG": str(cfg), "ANSIBLE_COLLECTIONS_PATH": str(installed)}
    out = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(installed),
                          "--force"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, **env(isolated)})
    assert out.returncode == 0, out.stderr
    return tarball, isolated
