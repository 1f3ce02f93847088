"""`pip install .` gives namespaced packages, the console scripts and the shipped data."""

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
    # the web pages ship their templates and their one script and style sheet
    assert {"dutlab/service/web/templates/job.html", "dutlab/service/web/templates/overview.html",
            "dutlab/service/web/static/dutlab.js", "dutlab/service/web/static/dutlab.css"} <= set(names)
    assert any(n.endswith("data/share/dutlab/device-types/qemu.jinja2") for n in names)
    assert any(n.endswith("data/share/dutlab/device-types/health-checks/qemu.yaml") for n in names)
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
