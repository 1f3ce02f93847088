"""The server and worker roles converge playbooks/site.yml on this host, as an admin would run it.

Converge (changes) → probes (HTTP, worker Online, files and modes, systemd-analyze verify on the
rendered units) → converge again (changed = 0) → --check --diff (changed = 0). Paths live in one
temp folder and service names are unique (lab_hosts.RoleLab); the services are stopped after.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from ansible_harness import REPO, play
from lab_hosts import RoleLab, build_wheel, mode

from labkit import free_port, http

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

SITE = REPO / "playbooks" / "site.yml"


@pytest.fixture(scope="session")
def dutlab_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def role_lab(dutlab_wheel):
    lab = RoleLab(source=dutlab_wheel)
    try:
        yield lab
    finally:
        lab.cleanup()


def wait_worker(lab: RoleLab, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    worker = {}
    while time.monotonic() < deadline:
        worker = lab.api("GET", f"/api/v1/workers/{lab.worker_name}").json()
        if worker.get("state") == state:
            return worker
        time.sleep(0.5)
    raise AssertionError(f"worker {lab.worker_name} is {worker.get('state')}, not {state}\n{lab.log()}")


def verify_units(folder: Path) -> None:
    units = sorted(folder.glob("*.service"))
    assert len(units) == 3, units
    out = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60)
    # unknown keys and bad values only warn: any output is a failure
    noise = [line for line in out.stderr.splitlines() if "Failed to open" not in line or "/dev/" not in line]
    assert out.returncode == 0 and not noise, out.stderr


#: notification settings as an admin gives them (docs/notifications.md); the server must start with them
NOTIFY_VARS = {"dutlab_server_email_host": "smtp.example.org", "dutlab_server_email_port": 587,
               "dutlab_server_email_starttls": True, "dutlab_server_email_username": "lab",
               "dutlab_server_email_password": "mail-pw", "dutlab_server_admins": ["ops@example.org", "admin"],
               "dutlab_server_callback_allowed_hosts": ["*.kernelci.example"], "dutlab_server_callback_timeout": 7}


def test_site_converges_idempotently_and_runs_the_lab(role_lab, tmp_path):
    inventory = role_lab.inventory(server=NOTIFY_VARS)
    first = play(SITE, tmp_path, inventory=inventory, cmdline="--diff")
    assert first.changed, first.stdout[-3000:]
    server_yaml = yaml.safe_load((role_lab.etc / "server.yaml").read_text())
    assert server_yaml["email"] == {"host": "smtp.example.org", "port": 587, "sender": "dutlab@localhost",
                                    "username": "lab", "password": "mail-pw", "starttls": True, "ssl": False,
                                    "sendmail": "", "timeout": 30}
    assert (server_yaml["admins"], server_yaml["callback_allowed_hosts"], server_yaml["callback_timeout"]) == (
        ["ops@example.org", "admin"], ["*.kernelci.example"], 7)

    # the server answers, the worker is Online, the token files are private
    assert role_lab.api("GET", "/api/v1/system/version").status == 200
    wait_worker(role_lab, "Online")
    etc = role_lab.etc
    assert mode(etc / "admin-token") == "0600 root:root"
    assert mode(etc / "worker-token") == "0600 root:root"
    assert mode(etc / "server.yaml") == "0640 root:dutlab"
    assert mode(role_lab.root / "data" / "secret_key") == "0600 dutlab:dutlab"
    assert (etc / "admin-password").exists() and mode(etc / "admin-password") == "0600 root:root"
    # the worker stages TFTP jobs in its root; dnsmasq or tftpd read it as their own user
    assert mode(role_lab.root / "tftp") == "0755 root:root"
    settings = yaml.safe_load((etc / "worker.yaml").read_text())
    assert (settings["tftp_root"], settings["dispatcher_ip"]) == (str(role_lab.root / "tftp"), ""), settings
    for name in role_lab.services:
        status = subprocess.run(["service", name, "status"], capture_output=True, text=True)
        assert status.returncode == 0, f"{name}: {status.stdout}{status.stderr}\n{role_lab.log()}"
    verify_units(role_lab.root / "systemd")

    second = play(SITE, tmp_path, inventory=inventory)
    assert second.changed == {}, second.changed_tasks()
    check = play(SITE, tmp_path, inventory=inventory, cmdline="--check --diff")
    assert check.changed == {}, check.changed_tasks()

    # a restart of the worker keeps it registered with the same token
    subprocess.run(["service", role_lab.services[0], "restart"], check=True, capture_output=True)
    wait_worker(role_lab, "Online")

    # a worker host that lost its token file gets a new token (the old one stops working)
    old_token = (etc / "worker-token").read_text()
    (etc / "worker-token").unlink()
    renewed = play(SITE, tmp_path, inventory=inventory)
    assert renewed.changed == {role_lab.worker_name: 3}, renewed.changed_tasks()
    assert "Restart dutlab worker" in renewed.changed_tasks()
    assert (etc / "worker-token").read_text() != old_token
    assert mode(etc / "worker-token") == "0600 root:root"
    wait_worker(role_lab, "Online")


def test_preflight_says_what_to_change(role_lab, tmp_path):
    inventory = role_lab.inventory(server={"dutlab_server_listen": "8000"}, workers=False)
    run = play(SITE, tmp_path, inventory=inventory, expect="failed")
    [failed] = run.failed_tasks
    assert failed == "Check the settings"
    assert "dutlab_server_listen must be host:port, for example 127.0.0.1:8000 (it is 8000)" in run.stdout
    assert not (role_lab.root / "venv").exists()  # nothing was installed


def _service_running(name: str) -> bool:
    return subprocess.run(["service", name, "status"], capture_output=True).returncode == 0


def _psql(sql: str, database: str = "postgres") -> str:
    out = subprocess.run(["su", "postgres", "-c", f"psql -XtAc \"{sql}\" {database}"], capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip()


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_lsclusters") is None, reason="PostgreSQL is not installed")
def _serving_children(parent: int, timeout: float = 30) -> list[int]:
    """The `serve` processes forked by the server service's process, once there are two."""
    deadline = time.monotonic() + timeout
    while True:
        kids = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError):
                continue
            if entry.name.isdigit() and int(stat[1]) == parent and b"serve" in argv:
                kids.append(int(entry.name))
        if len(kids) >= 2 or time.monotonic() > deadline:
            return sorted(kids)
        time.sleep(0.2)


def test_server_on_postgresql_and_redis_behind_nginx(role_lab, tmp_path):
    pg_was_running = _service_running("postgresql")
    nginx_was_running = shutil.which("nginx") is not None and _service_running("nginx")
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = f"dutlab_{role_lab.tag}"
    nginx_port = free_port()
    site = Path("/etc/nginx/sites-enabled") / f"dutlab-{role_lab.tag}-server.conf"
    try:
        inventory = role_lab.inventory(workers=False, server={
            "dutlab_server_database": "postgresql", "dutlab_server_postgresql_name": name,
            "dutlab_server_postgresql_user": name, "dutlab_server_postgresql_password": f"pw-{role_lab.tag}",
            "dutlab_server_queue": "redis", "dutlab_server_redis_manage": False,
            "dutlab_server_redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "dutlab_server_nginx": True, "dutlab_server_nginx_port": nginx_port,
            "dutlab_server_nginx_server_name": "localhost", "dutlab_server_processes": 2,
        })
        first = play(SITE, tmp_path, inventory=inventory, cmdline="--diff")
        assert first.changed
        config = (role_lab.etc / "server.yaml").read_text()
        assert yaml.safe_load(config)["processes"] == 2
        parent = int(Path(f"/run/dutlab-{role_lab.tag}-server.pid").read_text().split()[0])
        children = _serving_children(parent)
        assert len(children) == 2, f"server pid {parent} has serving children {children}\n{role_lab.log()}"
        assert f"postgresql://{name}:pw-{role_lab.tag}@127.0.0.1:5432/{name}" in config
        assert f"redis://127.0.0.1:{redis_port}/0" in config
        assert _psql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'device'", name) == "1"
        through_nginx = http("GET", f"http://127.0.0.1:{nginx_port}/api/v1/system/version")
        assert through_nginx.status == 200 and through_nginx.json()["api_version"] == 1
        assert role_lab.api("GET", "/api/v1/devices").status == 200

        second = play(SITE, tmp_path, inventory=inventory)
        assert second.changed == {}, second.changed_tasks()
        check = play(SITE, tmp_path, inventory=inventory, cmdline="--check --diff")
        assert check.changed == {}, check.changed_tasks()
    finally:
        role_lab.cleanup()
        redis.terminate()
        redis.wait(10)
        for link in (site, Path("/etc/nginx/sites-available") / site.name):
            link.unlink(missing_ok=True)
        if shutil.which("nginx"):
            subprocess.run(["service", "nginx", "reload" if nginx_was_running else "stop"], capture_output=True)
        _psql(f'DROP DATABASE IF EXISTS "{name}"')
        _psql(f'DROP ROLE IF EXISTS "{name}"')
        if not pg_was_running:
            subprocess.run(["service", "postgresql", "stop"], capture_output=True)
