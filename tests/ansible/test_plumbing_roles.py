"""The lab plumbing roles (ser2net, dhcp, tftp, coordinator, backup), converged on this host.

Each role goes through what an admin relies on: a first converge changes the host, a second one
changes nothing, `--check --diff` on the converged host changes nothing, and the daemon does its
job for a real client: a telnet client gets a QEMU guest's shell through ser2net, a DHCP client
in a network namespace gets its static lease from dnsmasq, a TFTP client there fetches a file,
`dutlab-coordinator status-check` passes. Every daemon, QEMU, namespace and veth a test starts is
stopped or removed by the test, whatever the outcome.

Network: consoles and the coordinator listen on free loopback ports; DHCP and TFTP are served
on the host end of a veth pair whose other end lives in a namespace made for the test
(10.231.N.0/24, N random, on the veth only).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pexpect
import pytest
import yaml
from ansible_harness import REPO, env, play
from lab_hosts import build_wheel
from test_collection import test_argument_specs_match_the_defaults as argument_specs_match_the_defaults

from dutlab.dispatcher import tftp
from labkit import BIN, free_port

pytestmark = pytest.mark.ansible

ROLES = REPO / "collection" / "roles"
PLUMBING_ROLES = ("ser2net", "dhcp", "tftp", "coordinator", "backup")
ASSETS = Path(os.environ.get("DUTLAB_ASSETS") or "/var/cache/dutlab/assets") / "amd64"


# -- helpers shared with test_plumbing_playbooks.py --------------------------------------------------

def role_play(role: str, variables: dict, *, gather_facts: bool = False) -> list:
    return [{"name": f"converge {role}", "hosts": "localhost", "gather_facts": gather_facts,
             "roles": [{"role": f"dutlab.lab.{role}", "vars": variables}]}]


def converge_idempotent(plays: list, tmp_path: Path, **kwargs):
    """Converge, converge again (nothing changes), then --check --diff (nothing would change)."""
    first = play(plays, tmp_path, cmdline="--diff", **kwargs)
    assert first.changed, "the first converge changed nothing"
    second = play(plays, tmp_path, **kwargs)
    assert second.changed == {}, f"second converge changed: {second.changed_tasks()}"
    check = play(plays, tmp_path, cmdline="--check --diff", **kwargs)
    assert check.changed == {}, f"--check on a converged host would change: {check.changed_tasks()}"
    return first


def service(name: str, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["service", name, action], capture_output=True, text=True, timeout=60)


def remove_init_service(name: str) -> None:
    """Stop a service a role installed under a test's own name and remove its init script and rc links."""
    script = Path("/etc/init.d") / name
    if script.exists():
        subprocess.run([str(script), "stop"], capture_output=True, timeout=60)
        subprocess.run(["update-rc.d", "-f", name, "remove"], capture_output=True, timeout=60)
        script.unlink()


def pid_of(pidfile: str | Path) -> int | None:
    try:
        pid = int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


@contextlib.contextmanager
def kept_file(path: str | Path):
    """Put `path` back as it was (or remove it) when the block ends."""
    path = Path(path)
    saved = path.read_bytes() if path.exists() else None
    try:
        yield path
    finally:
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(saved)


@contextlib.contextmanager
def qemu_on_pty(tmp_path: Path):
    """A QEMU guest whose serial port is a pty: yields the pty's path, kills QEMU at the end."""
    manifest_file = ASSETS / "manifest.json"
    if not manifest_file.exists():
        pytest.skip(f"no QEMU assets in {ASSETS}: run scripts/build-qemu-assets.sh --arch amd64")
    manifest = json.loads(manifest_file.read_text())
    if shutil.which(manifest["qemu_binary"]) is None:
        pytest.skip(f"{manifest['qemu_binary']} is not installed (apt-get install {manifest['qemu_package']})")
    log = tmp_path / "qemu.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [manifest["qemu_binary"], "-m", "256", "-nodefaults", "-no-reboot",
             "-kernel", str(ASSETS / "vmlinuz"), "-initrd", str(ASSETS / "initramfs.cpio.gz"),
             "-append", manifest["kernel_args"], "-serial", "pty", "-monitor", "none", "-display", "none"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"char device redirected to (/dev/pts/\d+)", log.read_text())):
            assert proc.poll() is None, f"QEMU exited with {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"QEMU named no pty in 30 s: {log.read_text()}"
            time.sleep(0.1)
        yield found.group(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def console_shell(port: int, prompt: str, log: Path) -> pexpect.spawn:
    """telnet to a console and wait for the guest's shell prompt (it may still be booting)."""
    client = pexpect.spawn("telnet", ["127.0.0.1", str(port)], encoding="utf-8", timeout=10,
                           codec_errors="replace", logfile=open(log, "a"))  # noqa: SIM115
    client.expect("Escape character")
    deadline = time.monotonic() + 120
    while True:
        client.sendline("")
        try:
            client.expect_exact(prompt, timeout=3)
            return client
        except pexpect.TIMEOUT:
            assert time.monotonic() < deadline, f"no prompt {prompt!r} on port {port}; see {log}"


@contextlib.contextmanager
def lab_netns():
    """A namespace with one end of a veth pair; the host end gets 10.231.N.1/24.

    Yields (namespace, host interface, client interface, prefix) where prefix is "10.231.N".
    """
    tag = uuid.uuid4().hex[:6]
    ns, host_if, client_if = f"dlt-{tag}", f"dlh{tag}", f"dlc{tag}"
    prefix = f"10.231.{random.randint(1, 254)}"

    def ip(*args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)

    try:
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", client_if)
        ip("link", "set", client_if, "netns", ns)
        ip("addr", "add", f"{prefix}.1/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "set", client_if, "up")
        yield ns, host_if, client_if, prefix
    finally:
        ip("link", "del", host_if, check=False)
        ip("netns", "del", ns, check=False)


# -- argument specs and docs ------------------------------------------------------------------------

@pytest.mark.parametrize("role", PLUMBING_ROLES)
def test_argument_specs_match_defaults(role):
    """The server and worker roles' check, on ours (ansible-lint runs on the whole repository there too)."""
    argument_specs_match_the_defaults(role)


def test_ansible_doc_reads_the_plumbing_roles():
    for role in PLUMBING_ROLES:
        out = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", f"dutlab.lab.{role}"], cwd=REPO,
                             capture_output=True, text=True, timeout=120, env={**os.environ, **env()})
        assert out.returncode == 0 and "ENTRY POINT: *main*" in out.stdout, out.stderr


# -- ser2net ------------------------------------------------------------------------------------------

@pytest.fixture
def system_ser2net():
    """This host's ser2net service and /etc/ser2net.yaml, put back as they were afterwards."""
    if shutil.which("ser2net") is None:
        pytest.skip("ser2net is not installed (apt-get install ser2net)")
    with kept_file("/etc/ser2net.yaml"):
        try:
            yield
        finally:
            service("ser2net", "stop")


def ser2net_vars(tmp_path: Path, boards: list) -> dict:
    return {"dutlab_ser2net_boards": boards, "dutlab_ser2net_trace_dir": str(tmp_path / "trace")}


def test_ser2net_console_of_a_qemu_board(system_ser2net, tmp_path):
    port = free_port()
    with qemu_on_pty(tmp_path) as pty:
        board = {"name": "qemu-board-01", "device": pty, "port": port, "trace": True}
        plays = role_play("ser2net", ser2net_vars(tmp_path, [board]))
        converge_idempotent(plays, tmp_path)
        config = yaml.safe_load(Path("/etc/ser2net.yaml").read_text().replace("&qemu-board-01", ""))
        assert config["connection"]["accepter"] == f"telnet(rfc2217),tcp,127.0.0.1,{port}"
        assert config["connection"]["connector"] == f"serialdev,{pty},115200n81,local"

        pid = pid_of("/run/ser2net.pid")
        assert pid, "ser2net is not running after the converge"
        console = console_shell(port, "dutlab:~# ", tmp_path / "console.log")
        console.sendline("echo hi-from-$((6*7))")
        console.expect_exact("hi-from-42")
        console.expect_exact("dutlab:~# ")
        console.close()
        trace = (tmp_path / "trace" / "qemu-board-01.log").read_text(errors="replace")
        assert "hi-from-42" in trace

        # the config changes (a second board) -> the handler restarts ser2net once
        other = {"name": "qemu-board-02", "device": "/dev/ttyS3", "port": free_port(), "baud": 9600,
                 "parity": "e", "max_connections": 2}
        changed = play(role_play("ser2net", ser2net_vars(tmp_path, [board, other])), tmp_path)
        assert changed.changed_tasks() == ["Configure | ser2net connections", "Restart ser2net"]
        assert pid_of("/run/ser2net.pid") not in (None, pid), "ser2net was not restarted"
        assert "serialdev,/dev/ttyS3,9600e81,local" in Path("/etc/ser2net.yaml").read_text()
        console = console_shell(port, "dutlab:~# ", tmp_path / "console.log")
        console.close()


def test_ser2net_refuses_shared_ports(tmp_path):
    boards = [{"name": "b1", "device": "/dev/ttyUSB0", "port": 7001},
              {"name": "b2", "device": "/dev/ttyUSB1", "port": 7002},
              {"name": "b3", "device": "/dev/ttyUSB2", "port": 7001}]
    run = play(role_play("ser2net", ser2net_vars(tmp_path, boards)), tmp_path, expect="failed")
    msg = run["Preflight | Every console port is used by one board only"]["msg"]
    assert "port 7001: b1, b3" in msg and "b2" not in msg, msg


# -- dhcp and tftp (one dnsmasq instance, dutlab-dnsmasq) ---------------------------------------------

DNSMASQ_FILES = ("/etc/dutlab/dnsmasq.conf", "/etc/dutlab/dnsmasq.d", "/etc/init.d/dutlab-dnsmasq",
                 "/etc/systemd/system/dutlab-dnsmasq.service", "/var/lib/dutlab/dnsmasq", "/var/log/dutlab/dnsmasq.log")
DUTLAB_FOLDERS = ("/etc/dutlab", "/var/lib/dutlab", "/var/log/dutlab")


@pytest.fixture
def dnsmasq_instance():
    """dutlab-dnsmasq as the roles install it; stopped and removed afterwards."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    existed = {folder for folder in DUTLAB_FOLDERS if Path(folder).exists()}
    try:
        yield
    finally:
        if Path("/etc/init.d/dutlab-dnsmasq").exists():
            service("dutlab-dnsmasq", "stop")
        subprocess.run(["update-rc.d", "-f", "dutlab-dnsmasq", "remove"], capture_output=True, timeout=60)
        for path in map(Path, DNSMASQ_FILES):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for folder in set(DUTLAB_FOLDERS) - existed:
            if Path(folder).is_dir() and not any(Path(folder).iterdir()):
                Path(folder).rmdir()


def dhcp_client(ns: str, interface: str, tmp_path: Path) -> dict:
    """One DHCP exchange with busybox udhcpc in the namespace; the lease's options as a dict."""
    script = tmp_path / "udhcpc.sh"
    env_file = tmp_path / "lease.env"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {env_file}\nexit 0\n')
    script.chmod(0o755)
    proc = subprocess.run(["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", interface, "-n", "-q",
                           "-t", "5", "-T", "2", "-O", "bootfile", "-s", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and env_file.exists(), f"no lease: {proc.stdout}{proc.stderr}"
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)


@pytest.fixture
def served_dirs():
    """Folders dnsmasq (user dnsmasq) can read: not under pytest's 0700 tmp; removed afterwards."""
    base = Path(f"/var/tmp/dutlab-test-{uuid.uuid4().hex[:8]}")
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def tftp_get(ns: str, server: str, name: str, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "tftp", "-m", "binary", server, "-c", "get", name, str(dest)],
                          capture_output=True, text=True, timeout=60)


def staged_job(root: Path) -> Path:
    """A job's kernel staged in the TFTP root by dutlab-run's own code, as a deploy to: tftp does it."""
    folder = tftp.make_job_folder(root, 42)
    kernel = folder / "kernel" / "Image"
    kernel.parent.mkdir()
    kernel.write_bytes(os.urandom(200_000))
    kernel.chmod(0o600)  # dutlab-run's downloads are private until published
    tftp.publish(folder)
    return kernel


def test_dhcp_and_tftp_network_boot(dnsmasq_instance, served_dirs, tmp_path):
    """dhcp + tftp on one host: one dnsmasq gives the static lease and serves its boot file."""
    boot = tmp_path / "u-boot.bin"
    boot.write_bytes(os.urandom(50_000))
    with lab_netns() as (ns, host_if, client_if, prefix):
        mac = "02:00:5e:10:00:42"
        subprocess.run(["ip", "-n", ns, "link", "set", client_if, "address", mac], check=True)
        variables = {
            "dutlab_dhcp_interface": host_if,
            "dutlab_dhcp_range_start": f"{prefix}.100", "dutlab_dhcp_range_end": f"{prefix}.150",
            "dutlab_dhcp_router": "none",
            "dutlab_dhcp_boot_file": "pxelinux.0",
            "dutlab_dhcp_hosts": [
                {"name": "rpi4-01", "mac": mac.upper(), "ip": f"{prefix}.42", "boot_file": "rpi4-01/u-boot.bin"},
                {"name": "bbb-01", "mac": "02:00:5e:10:00:43", "ip": f"{prefix}.43"},
            ],
            "dutlab_tftp_interface": host_if,
            "dutlab_tftp_root": str(served_dirs / "tftp"),
            "dutlab_tftp_files": [{"src": str(boot), "dest": "rpi4-01/u-boot.bin"}],
        }
        plays = [{"name": "network boot", "hosts": "localhost", "gather_facts": False,
                  "roles": [{"role": "dutlab.lab.dhcp"}, {"role": "dutlab.lab.tftp"}], "vars": variables}]
        converge_idempotent(plays, tmp_path)
        assert service("dutlab-dnsmasq", "status").returncode == 0
        systemd_verify(Path("/etc/systemd/system/dutlab-dnsmasq.service"))
        dnsmasqs = [pid for pid in os.listdir("/proc") if pid.isdigit()
                    and "--conf-file=/etc/dutlab/dnsmasq.conf" in _cmdline(pid)]
        assert len(dnsmasqs) == 1, f"one dutlab-dnsmasq serves DHCP and TFTP, found {dnsmasqs}"
        listening = subprocess.run(["ss", "-Hlunp"], capture_output=True, text=True).stdout
        ours = [line for line in listening.splitlines() if f'pid={dnsmasqs[0]},' in line]
        assert any(f"%{host_if}:67 " in line for line in ours), listening
        assert any(f"{prefix}.1:69 " in line for line in ours), listening
        assert all(f"%{host_if}:" in line or f"{prefix}.1:" in line for line in ours), ours

        lease = dhcp_client(ns, client_if, tmp_path)
        assert lease["ip"] == f"{prefix}.42"
        assert lease["hostname"] == "rpi4-01"
        assert lease["bootfile"] == "rpi4-01/u-boot.bin"
        assert lease["siaddr"] == f"{prefix}.1"
        assert "router" not in lease and "dns" not in lease
        leases = Path("/var/lib/dutlab/dnsmasq/leases").read_text()
        assert f"{mac} {prefix}.42 rpi4-01" in leases

        # the client takes its address and fetches its boot file from siaddr
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{lease['ip']}/24", "dev", client_if], check=True)
        got = tmp_path / "fetched-u-boot.bin"
        fetch = tftp_get(ns, lease["siaddr"], lease["bootfile"], got)
        assert got.exists() and got.read_bytes() == boot.read_bytes(), fetch.stdout + fetch.stderr


def _cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def test_tftp_serves_the_root_and_the_job_folders(dnsmasq_instance, served_dirs, tmp_path):
    """The root dnsmasq serves is where dutlab-run stages a job's files; the old `jobs` link goes."""
    root = served_dirs / "tftp"
    root.mkdir(mode=0o755)
    (served_dirs / "worker" / "tmp").mkdir(parents=True)
    (root / "jobs").symlink_to(served_dirs / "worker" / "tmp")  # what earlier versions of the role made
    loader = tmp_path / "pxelinux.0"
    loader.write_bytes(b"not really pxelinux\n")
    with lab_netns() as (ns, host_if, client_if, prefix):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{prefix}.2/24", "dev", client_if], check=True)
        variables = {
            "dutlab_tftp_interface": host_if,
            "dutlab_tftp_root": str(root),
            "dutlab_tftp_files": [{"src": str(loader), "dest": "pxelinux.0"}],
        }
        first = converge_idempotent(role_play("tftp", variables), tmp_path)
        assert "Configure | Remove the old link to the worker's job folders" in first.changed_tasks()
        assert not (root / "jobs").is_symlink() and (served_dirs / "worker" / "tmp").is_dir()
        assert "dhcp-range" not in Path("/etc/dutlab/dnsmasq.d/tftp.conf").read_text()

        got = tmp_path / "got"
        fetch = tftp_get(ns, f"{prefix}.1", "pxelinux.0", got)
        assert got.read_bytes() == loader.read_bytes(), fetch.stdout + fetch.stderr
        kernel = staged_job(root)
        fetch = tftp_get(ns, f"{prefix}.1", kernel.relative_to(root).as_posix(), got)
        assert got.read_bytes() == kernel.read_bytes(), fetch.stdout + fetch.stderr
        # nothing outside the root is served
        got.unlink()
        fetch = tftp_get(ns, f"{prefix}.1", "../../../etc/passwd", got)
        assert not got.exists() or got.stat().st_size == 0, "TFTP served a file outside its root"

    # a setting of the old link is refused, naming what replaced it
    refused = play(role_play("tftp", {**variables, "dutlab_tftp_worker_dir": "/var/lib/dutlab/worker"}), tmp_path,
                   expect="failed")
    message = refused["Preflight | No settings of the old job folder link"]["msg"]
    assert "dutlab_worker_tftp_root" in message, message


def test_dhcp_refuses_clashing_leases(tmp_path):
    variables = {
        "dutlab_dhcp_interface": "lo", "dutlab_dhcp_range_start": "10.231.0.100",
        "dutlab_dhcp_range_end": "10.231.0.150",
        "dutlab_dhcp_hosts": [{"name": "b1", "mac": "02:00:00:00:00:01", "ip": "10.231.0.5"},
                              {"name": "b2", "mac": "02:00:00:00:00:02", "ip": "10.231.0.5"},
                              {"name": "b3", "mac": "02-00-00-00-00-03", "ip": "10.231.0.7"}]}
    run = play(role_play("dhcp", variables), tmp_path, expect="failed")
    msg = run["Preflight | Static leases have a unique name, MAC and address each"]["msg"]
    assert "ip 10.231.0.5 is used by b1, b2" in msg and "b3: mac 02-00-00-00-00-03" in msg, msg


# -- coordinator -------------------------------------------------------------------------------------

def systemd_verify(*units: Path) -> None:
    """`systemd-analyze verify`; unknown keys and bad values only warn, so any output fails."""
    out = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


@pytest.fixture(scope="session")
def dutlab_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@contextlib.contextmanager
def coordinator_host(base: Path, wheel: Path):
    """Variables for a coordinator whose files live under `base`, under a unique service name."""
    tag = uuid.uuid4().hex[:6]
    name, user = f"dutlab-coordinator-{tag}", "dutlab-coordinator"
    user_existed = subprocess.run(["id", user], capture_output=True).returncode == 0
    variables = {
        # a virtualenv of Debian's Python, as on a lab host (the project's venv lives under /root)
        "dutlab_coordinator_source": str(wheel),
        "dutlab_coordinator_venv": str(base / "venv"),
        "dutlab_coordinator_port": free_port(),
        "dutlab_coordinator_config_dir": str(base / "etc"),
        "dutlab_coordinator_log_dir": str(base / "log"),
        "dutlab_coordinator_state_dir": str(base / "state"),
        "dutlab_coordinator_systemd_dir": str(base / "systemd"),
        "dutlab_coordinator_service_name": name,
    }
    try:
        yield variables
    finally:
        remove_init_service(name)
        if not user_existed:
            subprocess.run(["userdel", user], capture_output=True, timeout=60)
            subprocess.run(["groupdel", user], capture_output=True, timeout=60)


def status_check(variables: dict, *extra: str) -> subprocess.CompletedProcess:
    binary = variables["dutlab_coordinator_venv"] + "/bin/dutlab-coordinator"
    port = str(variables["dutlab_coordinator_port"])
    return subprocess.run([binary, "status-check", "--host", "127.0.0.1", "--port", port, "--timeout", "20", *extra],
                          capture_output=True, text=True, timeout=60)


def test_coordinator_converges_and_passes_its_status_check(served_dirs, dutlab_wheel, tmp_path):
    with coordinator_host(served_dirs, dutlab_wheel) as variables:
        variables["dutlab_coordinator_secret"] = "s3cret-for-the-test"
        variables["dutlab_coordinator_settings"] = {"max_groups": 50, "group_idle_timeout": 3600}
        first = converge_idempotent(role_play("coordinator", variables), tmp_path)
        assert "s3cret-for-the-test" not in first.stdout

        etc = served_dirs / "etc"
        config = yaml.safe_load((etc / "coordinator.yaml").read_text())
        assert config == {"host": "127.0.0.1", "port": variables["dutlab_coordinator_port"],
                          "secret_file": str(etc / "coordinator.secret"), "max_groups": 50,
                          "group_idle_timeout": 3600, "log_file": str(served_dirs / "log" / "coordinator.log"),
                          "log_level": "INFO", "state_file": str(served_dirs / "state" / "groups.sqlite3")}
        secret = etc / "coordinator.secret"
        assert secret.read_text() == "s3cret-for-the-test\n"
        assert oct(secret.stat().st_mode & 0o777) == "0o600"
        assert secret.owner() == "dutlab-coordinator"

        name = variables["dutlab_coordinator_service_name"]
        assert service(name, "status").returncode == 0
        pid = pid_of(f"/run/{name}.pid")
        assert pid and Path(f"/proc/{pid}").owner() == "dutlab-coordinator"
        checked = status_check(variables, "--secret-file", str(secret))
        assert checked.returncode == 0 and "status check complete. No errors" in checked.stdout, checked
        assert status_check(variables).returncode == 1, "the coordinator answered a request without the secret"
        systemd_verify(served_dirs / "systemd" / f"{name}.service")

        # the secret goes away: the config changes, the handler restarts the daemon, no secret needed
        del variables["dutlab_coordinator_secret"]
        changed = play(role_play("coordinator", variables), tmp_path)
        assert "Restart dutlab coordinator" in changed.changed_tasks()
        assert not secret.exists()
        assert pid_of(f"/run/{name}.pid") not in (None, pid)
        checked = status_check(variables)
        assert checked.returncode == 0 and "status check complete. No errors" in checked.stdout, checked

        # a setting the daemon does not know fails the converge before the file is replaced
        before = (etc / "coordinator.yaml").read_text()
        variables["dutlab_coordinator_settings"] = {"max_groupz": 5}
        refused = play(role_play("coordinator", variables), tmp_path, expect="failed")
        result = refused["Configure | coordinator.yaml"]
        assert "max_groupz: unknown setting" in result["msg"] + result.get("stderr", ""), result
        assert (etc / "coordinator.yaml").read_text() == before



# -- backup ------------------------------------------------------------------------------------------

@pytest.fixture
def cron_service():
    """cron as the role leaves it: stopped again afterwards when it was not running before."""
    was_running = shutil.which("crontab") is not None and service("cron", "status").returncode == 0
    yield
    if not was_running and Path("/etc/init.d/cron").exists():
        service("cron", "stop")


def test_backup_schedule_and_retention(lab_server, cron_service, tmp_path):
    tag = uuid.uuid4().hex[:6]
    script, cron_file = Path(f"/usr/local/sbin/dutlab-backup-{tag}"), Path(f"/etc/cron.d/dutlab-backup-{tag}")
    archives = tmp_path / "backups"
    variables = {
        "dutlab_backup_dir": str(archives), "dutlab_backup_keep": 2,
        "dutlab_backup_minute": "*/30", "dutlab_backup_hour": "1-5", "dutlab_backup_weekday": "1",
        "dutlab_backup_server_venv": str(BIN.parent), "dutlab_backup_server_config": str(lab_server.config),
        "dutlab_backup_user": "root", "dutlab_backup_script": str(script),
        "dutlab_backup_cron_file": cron_file.name,
    }
    try:
        converge_idempotent(role_play("backup", variables), tmp_path)
        assert f"*/30 1-5 * * 1 root {script} >> {archives}/backup.log 2>&1" in cron_file.read_text()
        assert oct(archives.stat().st_mode & 0o777) == "0o700"
        assert service("cron", "status").returncode == 0

        made = []
        for _ in range(3):
            run = subprocess.run([str(script)], capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
            assert run.returncode == 0, run.stderr
            made.append(Path(run.stdout.strip().splitlines()[-1]))
            time.sleep(1.1)  # archive names carry the second
        kept = sorted(archives.glob("dutlab-backup-*.tar.gz"))
        assert kept == sorted(made[1:]), f"made {made}, kept {kept}"
        assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in kept)
        assert f"removed {made[0]} (keeping the 2 newest)" in run.stderr, run.stderr
        with tarfile.open(made[-1]) as archive:
            assert archive.getnames()[-1] == "MANIFEST.json"

        # switched off: the entry stays, commented out
        play(role_play("backup", {**variables, "dutlab_backup_enabled": False}), tmp_path)
        assert f"#*/30 1-5 * * 1 root {script}" in cron_file.read_text()
    finally:
        script.unlink(missing_ok=True)
        cron_file.unlink(missing_ok=True)


# -- playbooks/plumbing.yml --------------------------------------------------------------------------

@pytest.mark.slow
def test_plumbing_playbook_converges_every_group(system_ser2net, dnsmasq_instance, served_dirs, dutlab_wheel,
                                                 tmp_path):
    """One host in lab_serial, lab_dhcp, lab_tftp and lab_coordinator; a worker learns the coordinator."""
    with lab_netns() as (_ns, host_if, _client_if, prefix), coordinator_host(served_dirs, dutlab_wheel) as coord:
        plumbing = {
            **ser2net_vars(tmp_path, [{"name": "board-1", "device": "/dev/ttyS3", "port": free_port()}]),
            "dutlab_dhcp_interface": host_if, "dutlab_dhcp_range_start": f"{prefix}.100",
            "dutlab_dhcp_range_end": f"{prefix}.150",
            "dutlab_tftp_interface": host_if, "dutlab_tftp_root": str(served_dirs / "tftp"),
            **coord,
        }
        local = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"vars": local, "children": {
            "lab_serial": {"hosts": {"lab-host": plumbing}},
            "lab_dhcp": {"hosts": {"lab-host": {}}},
            "lab_tftp": {"hosts": {"lab-host": {}}},
            "lab_coordinator": {"hosts": {"lab-host": {}}},
            "lab_workers": {"hosts": {"worker-a": {}}},
        }}}))
        playbook = REPO / "playbooks" / "plumbing.yml"
        first = play(playbook, tmp_path, inventory=inventory, cmdline="--diff")
        assert first.changed
        again = play(playbook, tmp_path, inventory=inventory)
        assert again.changed == {}, again.changed_tasks()
        told = again["Take the coordinator's address"]["ansible_facts"]["dutlab_worker_coordinator"]
        assert told == {"host": "127.0.0.1", "port": coord["dutlab_coordinator_port"], "secret": False}
        assert service("dutlab-dnsmasq", "status").returncode == 0
        assert service("ser2net", "status").returncode == 0
        conf = Path("/etc/dutlab/dnsmasq.d")
        assert sorted(p.name for p in conf.iterdir()) == ["dhcp.conf", "tftp.conf"]
