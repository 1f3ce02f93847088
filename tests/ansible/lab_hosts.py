"""A throwaway lab installed by the real roles on this host, and everything needed to remove it.

`RoleLab` lays out an inventory whose paths (virtualenv, /etc/dutlab, data, logs, unit files) live
in one temp folder and whose service names are unique (the init scripts must sit in /etc/init.d),
so a converge never touches a real /etc/dutlab or dutlab-server service. `cleanup()` stops the
services the roles started, removes their init scripts and rc links, the folder, and the system
user when the test created it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ansible_harness import REPO, TARGET_PYTHON, dump

from labkit import free_port, http


def build_wheel(dest: Path) -> Path:
    """The dutlab wheel the roles install (what a release ships)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    [wheel] = dest.glob("dutlab-*.whl")
    return wheel


@dataclass
class RoleLab:
    source: Path
    user: str = "dutlab"
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dutlab-role-", dir="/var/tmp")))
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    port: int = field(default_factory=free_port)
    user_existed: bool = False

    def __post_init__(self) -> None:
        # the service user must reach its data folder: no 0700 pytest folder on the way
        self.root.chmod(0o755)
        self.user_existed = _user_exists(self.user)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker_name(self) -> str:
        return f"worker-{self.tag}"

    @property
    def services(self) -> list[str]:
        return [f"dutlab-{self.tag}-{s}" for s in ("worker", "consumer", "server")]

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def admin_token(self) -> str:
        return (self.etc / "admin-token").read_text().strip()

    def server_vars(self, **extra) -> dict:
        out = {
            "dutlab_server_source": str(self.source),
            "dutlab_server_venv": str(self.root / "venv"),
            "dutlab_server_config_dir": str(self.etc),
            "dutlab_server_data_dir": str(self.root / "data"),
            "dutlab_server_log_dir": str(self.root / "log"),
            "dutlab_server_logrotate_dir": str(self.root / "logrotate.d"),
            "dutlab_server_listen": f"127.0.0.1:{self.port}",
            "dutlab_server_admin_token_file": str(self.etc / "admin-token"),
            "dutlab_server_service_name": f"dutlab-{self.tag}-server",
            "dutlab_server_consumer_service_name": f"dutlab-{self.tag}-consumer",
            "dutlab_server_systemd_dir": str(self.root / "systemd"),
            "dutlab_server_user": self.user,
            "dutlab_server_group": self.user,
            # fast heartbeats: a stopped test worker goes Offline quickly
            "dutlab_server_settings": {"worker_heartbeat_timeout": 10, "scheduler_sweep": 2},
        }
        out.update(extra)
        return out

    def worker_vars(self, **extra) -> dict:
        out = {
            "dutlab_worker_source": str(self.source),
            "dutlab_worker_venv": str(self.root / "venv"),
            "dutlab_worker_config_dir": str(self.etc),
            "dutlab_worker_token_file": str(self.etc / "worker-token"),
            "dutlab_worker_work_dir": str(self.root / "worker"),
            "dutlab_worker_log_dir": str(self.root / "worker-log"),
            "dutlab_worker_logrotate_dir": str(self.root / "logrotate.d"),
            "dutlab_worker_tftp_root": str(self.root / "tftp"),
            "dutlab_worker_service_name": f"dutlab-{self.tag}-worker",
            "dutlab_worker_systemd_dir": str(self.root / "systemd"),
            "dutlab_worker_poll_wait": 5,
            "dutlab_worker_qemu_arches": ["amd64"],
        }
        out.update(extra)
        return out

    def inventory(self, server: dict | None = None, worker: dict | None = None, objects: dict | None = None,
                  workers: bool = True) -> Path:
        children = {"lab_servers": {"hosts": {"lab-server": self.server_vars(**(server or {}))}, "vars": objects or {}}}
        if workers:
            children["lab_workers"] = {"hosts": {self.worker_name: self.worker_vars(**(worker or {}))}}
        doc = {"all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": TARGET_PYTHON},
            "children": children,
        }}
        path = self.root / "inventory.yml"
        path.write_text(dump(doc))
        return path

    def api(self, method: str, path: str, body=None):
        return http(method, self.url + path, body, token=self.admin_token())

    def log(self) -> str:
        out = []
        for folder in ("log", "worker-log"):
            for f in sorted((self.root / folder).glob("*.log")) if (self.root / folder).is_dir() else []:
                out.append(f"--- {f}\n{f.read_text()[-3000:]}")
        return "\n".join(out)

    def cleanup(self) -> None:
        for name in self.services:
            script = Path("/etc/init.d") / name
            if script.exists():
                subprocess.run([str(script), "stop"], capture_output=True, timeout=60)
                subprocess.run(["update-rc.d", "-f", name, "remove"], capture_output=True, timeout=60)
                script.unlink()
        shutil.rmtree(self.root, ignore_errors=True)
        if not self.user_existed and _user_exists(self.user):
            subprocess.run(["userdel", self.user], capture_output=True, timeout=60)
            if _group_exists(self.user):
                subprocess.run(["groupdel", self.user], capture_output=True, timeout=60)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def mode(path: Path) -> str:
    st = path.stat()
    return f"{st.st_mode & 0o7777:04o} {pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"


def pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False
