"""`pip install .` gives namespaced packages, the console scripts and the shipped data, which is
found wherever pip puts the package (`--prefix` too: templates are package data)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_runs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("dutlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dutlab/service/__init__.py" in names and "dutlab/dispatcher/__init__.py" in names
    assert not any(n.startswith(("service/", "dispatcher/")) for n in names)  # no bare top-level packages
    assert "dutlab/dispatcher/shell/lava-test-case" in names
    assert {"dutlab/device_types/qemu.jinja2", "dutlab/device_types/health-checks/qemu.yaml"} <= set(names)
    assert not any(".data/" in n for n in names)  # nothing under <prefix>/share that only sys.prefix finds
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: GPL-3.0-or-later" in metadata
    assert "voluptuous" not in metadata and "pyserial" not in metadata  # declared only when imported
    # the web pages ship their templates and their one script and style sheet
    assert {"dutlab/service/web/templates/job.html", "dutlab/service/web/templates/overview.html",
            "dutlab/service/web/static/dutlab.js", "dutlab/service/web/static/dutlab.css"} <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("dutlab-server", "dutlab-worker", "dutlab-run", "dutlab-coordinator"):
        assert script in entry_points
    # unpack instead of `pip install`: pip would uninstall the checkout's editable install first
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = ("import dutlab.service.cli as c, sys; assert c.__file__.startswith(sys.argv[1]), c.__file__; "
             "c.main(sys.argv[2:])")
    out = subprocess.run([sys.executable, "-c", probe, str(site), "--help"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "manage" in out.stdout and "migrate" in out.stdout


@pytest.mark.slow
def test_pip_install_prefix_finds_the_templates(tmp_path):
    """`pip install --prefix` (or --user): the templates come with the package, not from sys.prefix."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    [wheel] = tmp_path.glob("dutlab-*.whl")
    prefix = tmp_path / "prefix"
    # --ignore-installed: the checkout's own editable install stays as it is
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--prefix",
                    str(prefix), str(wheel)], check=True, capture_output=True)
    [site] = prefix.glob("lib/python3*/site-packages")
    probe = ("import sys; from dutlab.service.templating import shipped_device_types_dir, load_device_config; "
             "d = shipped_device_types_dir(); assert str(d).startswith(sys.argv[1]), d; "
             "c = load_device_config(\"{% extends 'qemu.jinja2' %}\", hostname='q', device_type='qemu', "
             "context={'arch': 'arm64'}, search_path=[d]); "
             "print(c['actions']['boot']['methods']['qemu']['parameters']['command'], "
             "(d / 'health-checks' / 'qemu.yaml').is_file())")
    out = subprocess.run([sys.executable, "-c", probe, str(site)], env=dict(os.environ, PYTHONPATH=str(site)),
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["qemu-system-aarch64", "True"]
