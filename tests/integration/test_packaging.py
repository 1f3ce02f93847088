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
    assert any(n.endswith("data/share/dutlab/device-types/qemu.jinja2") for n in names)
    assert any(n.endswith("data/share/dutlab/device-types/health-checks/qemu.yaml") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("dutlab-server", "dutlab-worker", "dutlab-run", "dutlab-coordinator"):
        assert script in entry_points
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--prefix", str(prefix), str(wheel)],
                   check=True, capture_output=True)
    site = next(prefix.glob("lib/python*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, str(prefix / "bin" / "dutlab-server"), "--help"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "manage" in out.stdout and "migrate" in out.stdout
