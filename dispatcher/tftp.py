"""The worker's TFTP root, one folder in it per job, and the address boards reach it on.

A bootloader fetches files by their path relative to the TFTP server's root. A deploy to:
tftp stages a job's kernel, ramdisk and DTB in ``<tftp root>/dutlab-<job id>-<random>/``
(``kernel/``, ``ramdisk/``, ``dtb/`` as LAVA lays them out), readable by the TFTP server's
own user; the folder belongs to the job and finalize removes it.

``{SERVER_IP}`` in the boot commands is the worker setting ``dispatcher_ip`` (as LAVA's);
without it, the worker's address on the route to its default gateway, else its first
address that is not loopback.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

from .errors import ConfigurationError, InfrastructureError

#: where an admin sets the TFTP root, for error messages
ROOT_SETTING = "the worker's tftp_root setting (dutlab-run --tftp-root)"
IP_SETTING = "the worker's dispatcher_ip setting (dutlab-run --dispatcher-ip)"
RTF_GATEWAY = 0x2


def check_root(root: Path) -> None:
    """InfrastructureError unless dutlab-run can make a job folder in ``root``."""
    if not root.is_dir():
        raise InfrastructureError(f"the TFTP root {root} does not exist on this worker: create it as the TFTP "
                                  f"server's root directory, or point {ROOT_SETTING} at it")
    if not os.access(root, os.W_OK | os.X_OK):
        raise InfrastructureError(f"the TFTP root {root} is not writable by dutlab-run (uid {os.getuid()}): "
                                  f"give the worker's user write access, or change {ROOT_SETTING}")


def make_job_folder(root: Path, job_id: int) -> Path:
    """A new folder for one job's files in the TFTP root, readable by the TFTP server."""
    check_root(root)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"dutlab-{job_id}-", dir=root))
        folder.chmod(0o755)  # mkdtemp makes it 0700; dnsmasq or tftpd read it as their own user
    except OSError as exc:
        raise InfrastructureError(f"cannot create a job folder in the TFTP root {root}: {exc.strerror} "
                                  f"(check {ROOT_SETTING})") from None
    return folder


def publish(folder: Path) -> None:
    """Make everything under ``folder`` readable by the TFTP server, whatever our umask was."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


# -- the address boards fetch from -------------------------------------------------------------

def server_address(configured: str) -> tuple[str, str]:
    """(address, where it came from) for ``{SERVER_IP}``."""
    if configured:
        return configured, "dispatcher_ip"
    gateway = default_gateway(_read("/proc/net/route"))
    if gateway:
        address = _source_address(gateway)
        if address:
            return address, f"the worker's address on its route to the default gateway {gateway}"
    for address in global_addresses(_ip_addresses()):
        return address, "the worker's first address that is not loopback"
    raise ConfigurationError(f"the boot commands need {{SERVER_IP}} but this worker has no address besides "
                             f"loopback: set {IP_SETTING}")


def default_gateway(route_table: str) -> str:
    """The IPv4 default gateway in the text of /proc/net/route ('' when there is none)."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[1] != "00000000":
            continue
        if int(fields[3], 16) & RTF_GATEWAY:
            return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    return ""


def global_addresses(ip_output: str) -> list[str]:
    """The IPv4 addresses in ``ip -4 -o addr show``, loopback left out, in order."""
    found = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", ip_output)
    return [address for address in found if not address.startswith("127.")]


def _source_address(gateway: str) -> str:
    # Connecting a UDP socket sends nothing: the kernel only picks the source address of the route.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((gateway, 69))
        except OSError:
            return ""
        return str(sock.getsockname()[0])


def _ip_addresses() -> str:
    if shutil.which("ip") is None:
        return ""
    proc = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10)
    return proc.stdout


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
