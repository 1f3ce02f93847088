"""An emulated u-boot board wired up from real lab parts, for tests and `make board-lab`.

    with EmulatedBoardLab(tmp_path, name="uboot01") as board:
        lab.add_device("uboot01", "qemu-uboot-arm64", board.dictionary())

What a lab admin has for a real board, and what stands in for it here:

  board            QEMU `virt` running Debian's u-boot (u-boot-qemu), started by the power script
  lab network      a bridge in a network namespace made for this lab; the board's NIC is a tap on it
  DHCP + TFTP      the real dnsmasq inside the namespace, configured by the dhcp/tftp roles' templates
                   (static lease by MAC; TFTP root = the worker's TFTP root given here)
  serial adapter   tests/labkit/uart.py: a pty at a stable path that outlives power cycles
  console server   the real ser2net 4 (the ser2net role's template): `telnet 127.0.0.1 <port>`
  PDU              the real pdudaemon (localcmdline driver) running tests/labkit/board_power.py;
                   dictionaries call `pduclient --daemon ... --command on|off|reboot`

Every process is started here and stopped by its pid in stop(); the namespace (with the bridge and
tap in it) is deleted. `leftovers()` lists whatever survived, so tests can assert there is none.
The namespace needs root, as do dnsmasq and QEMU's tap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from labkit.board_os import (
    PDUDAEMON_PORT,
    alive,
    free_loopback_address,
    ip,
    listening,
    netns_exists,
    stop_pid,
)
from labkit.board_power import power_off, running_pid
from labkit.procs import free_port
from labkit.role_config import render

HERE = Path(__file__).resolve().parent
UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
ASSETS = Path(os.environ.get("DUTLAB_ASSETS", "/var/cache/dutlab/assets")) / "arm64"
TOOLS = {
    "ip": "iproute2", "qemu-system-aarch64": "qemu-system-arm", "dnsmasq": "dnsmasq-base",
    "ser2net": "ser2net", "pdudaemon": "pdudaemon", "telnet": "telnet",
    "pduclient": "scripts/setup.sh (installs dutlab's pduclient)",
    "mkimage": "u-boot-tools",
}
STATE_FILE = "board-lab.json"


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the lab, as 'thing (how to get it)'; [] when it can run."""
    missing = [f"{tool} ({package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not UBOOT.exists():
        missing.append(f"{UBOOT} (apt-get install u-boot-qemu)")
    if os.geteuid() != 0:
        missing.append("root (network namespaces, taps)")
    return missing


def default_mac(name: str) -> str:
    """A stable MAC for a board name (QEMU's 52:54:00 prefix), the same in every lab."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


class EmulatedBoardLab:
    """One emulated u-boot board with its console server, PDU and lab network."""

    bridge = "dlbr0"
    tap = "dltap0"

    def __init__(self, root: Path | str, name: str = "uboot01", *, tftp_root: Path | str | None = None,
                 telnet_port: int | None = None, pdu_daemon: str | None = None, pdu_hostname: str | None = None,
                 pdu_port: int = 1, mac: str | None = None, subnet: str = "10.232.0", memory: int = 512,
                 reboot_delay: int = 1, dnsmasq_user: str = "root", netns: str | None = None,
                 services: bool = True) -> None:
        self.root = Path(root).resolve()
        self.name = name
        self.tag = uuid.uuid4().hex[:6]
        self.netns = netns or f"dutlab-{name}-{self.tag}"
        self.tftp_root = Path(tftp_root).resolve() if tftp_root else self.root / "tftp"
        #: False: only the board, its UART and outlet, and the namespace with the bridge (the
        #: "hardware"); ser2net, pdudaemon and dnsmasq then come from the roles (examples/inventories/boards.yml)
        self.services = services
        self.telnet_port = telnet_port or free_port()
        #: pduclient --daemon: "localhost" (pdudaemon on 127.0.0.1) or a loopback address of this lab
        self.pdu_daemon = pdu_daemon or free_loopback_address()
        self.pdu_hostname = pdu_hostname or f"pdu-{name}"
        self.pdu_port = pdu_port
        self.mac = (mac or default_mac(name)).lower()
        self.server_ip = f"{subnet}.1"
        self.board_ip = f"{subnet}.10"
        self.subnet = subnet
        self.memory = memory
        self.reboot_delay = reboot_delay
        # tests keep the TFTP root under pytest's 0700 folders, which dnsmasq's own user cannot enter
        self.dnsmasq_user = dnsmasq_user
        self.uart_path = self.root / "serial" / f"by-id-{name}"
        self.pids: dict[str, tuple[int, str]] = {}
        self._procs: dict[str, subprocess.Popen] = {}

    # -- what a device dictionary and a test need ---------------------------------------------------

    @property
    def connection_command(self) -> str:
        return f"telnet 127.0.0.1 {self.telnet_port}"

    def power_command(self, action: str) -> str:
        """The pduclient line a LAVA dictionary has for `action` (on, off or reboot)."""
        command = (f"pduclient --daemon {self.pdu_daemon} --hostname {self.pdu_hostname} "
                   f"--port {self.pdu_port} --command {action}")
        return command + (f" --delay {self.reboot_delay}" if action == "reboot" else "")

    def worker_args(self) -> tuple[str, ...]:
        """dutlab-worker options for the worker that drives this board: its TFTP root, and the
        worker's address on the board's network ({SERVER_IP}, LAVA's dispatcher_ip)."""
        return ("--tftp-root", str(self.tftp_root), "--dispatcher-ip", self.server_ip)

    def dictionary(self, extends: str = "qemu-uboot-arm64") -> str:
        """The device dictionary of this board, as a lab admin writes it for a real one."""
        sets = {
            "connection_command": self.connection_command,
            "power_on_command": self.power_command("on"),
            "power_off_command": self.power_command("off"),
            "hard_reset_command": self.power_command("reboot"),
            "device_mac": self.mac,
            "device_ip": self.board_ip,
        }
        lines = [f"{{% extends '{extends}.jinja2' %}}",
                 f"{{# {self.name}: emulated u-boot board (tests/labkit/board.py), TFTP root {self.tftp_root} #}}"]
        lines += [f"{{% set {key} = {json.dumps(value)} %}}" for key, value in sets.items()]
        return "\n".join(lines) + "\n"

    def unplug(self) -> None:
        """Pull the board's plug out of the outlet: the PDU still switches (and says so), the board stays dark."""
        outlet = self.root / "outlets" / f"{self.pdu_port}.json"
        outlet.rename(outlet.with_suffix(".unplugged"))

    def plug(self) -> None:
        outlet = self.root / "outlets" / f"{self.pdu_port}.json"
        outlet.with_suffix(".unplugged").rename(outlet)

    def pduclient(self, action: str) -> subprocess.CompletedProcess:
        """Run the dictionary's power command for `action`, as the worker would."""
        return subprocess.run(self.power_command(action), shell=True, capture_output=True, text=True, timeout=120)

    @property
    def powered(self) -> bool:
        return running_pid(self.root / "qemu.pid") is not None

    def log(self, name: str, tail: int = 4000) -> str:
        """The tail of logs/<name>.log: dnsmasq, uart, uart-events, ser2net, pdudaemon, qemu, power."""
        try:
            return (self.root / "logs" / f"{name}.log").read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # -- start and stop -------------------------------------------------------------------------------

    def __enter__(self) -> EmulatedBoardLab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> EmulatedBoardLab:
        missing = missing_prerequisites()
        if missing:
            raise RuntimeError("the emulated board lab needs: " + ", ".join(missing))
        for folder in ("logs", "serial", "outlets", "dnsmasq.d"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        # dutlab-run stages each job's files in a folder of its own in here (dutlab/dispatcher/tftp.py)
        self.tftp_root.mkdir(parents=True, exist_ok=True)
        try:
            self._network()
            self._uart()
            self._outlet()
            if self.services:
                self._dnsmasq()
                self._ser2net()
                self._pdudaemon()
        except BaseException:
            self.stop()
            raise
        self.save_state()
        return self

    def stop(self) -> None:
        """Power the board off and stop everything, by pid; delete the namespace. Idempotent."""
        for outlet in (self.root / "outlets").glob(f"{self.pdu_port}.*"):
            power_off(json.loads(outlet.read_text()))
        for name in ("pdudaemon", "ser2net", "uart", "dnsmasq"):
            if name in self.pids:
                pid, marker = self.pids.pop(name)
                stop_pid(pid, marker, self._procs.pop(name, None))
        if netns_exists(self.netns):
            ip("netns", "del", self.netns, check=False)
        (self.root / STATE_FILE).unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """Anything of this lab still running or still there ([] after a clean stop())."""
        out = [f"{name} pid {pid}" for name, (pid, marker) in self.pids.items() if alive(pid, marker)]
        # and any process at all that names this lab (a QEMU or power script started by pdudaemon)
        marks = (str(self.root).encode(), self.netns.encode(), f"-{self.tag}".encode())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(mark in cmdline for mark in marks):
                    words = cmdline.replace(b"\0", b" ").decode(errors="replace")
                    out.append(f"pid {entry.name}: {words[:200]}")
        if netns_exists(self.netns):
            out.append(f"network namespace {self.netns}")
        if self.uart_path.is_symlink():
            out.append(f"serial link {self.uart_path}")
        return out

    def save_state(self) -> Path:
        """What `stop_saved()` needs to stop this lab from another process (make board-lab-stop)."""
        path = self.root / STATE_FILE
        state = {key: getattr(self, key) for key in ("name", "tag", "netns", "telnet_port", "pdu_daemon",
                                                     "pdu_hostname", "pdu_port", "mac", "server_ip", "board_ip")}
        path.write_text(json.dumps({**state, "pids": self.pids, "tftp_root": str(self.tftp_root)}, indent=2))
        return path

    @classmethod
    def stop_saved(cls, root: Path | str) -> bool:
        """Stop the lab whose state file is in `root`; False when there is none."""
        path = Path(root) / STATE_FILE
        if not path.exists():
            return False
        state = json.loads(path.read_text())
        lab = cls(root, state["name"], tftp_root=state["tftp_root"], telnet_port=state["telnet_port"],
                  pdu_daemon=state["pdu_daemon"], pdu_port=state["pdu_port"])
        lab.tag, lab.netns = state["tag"], state["netns"]
        lab.pids = {name: tuple(value) for name, value in state["pids"].items()}
        lab.stop()
        return True

    # -- the parts ------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], marker: str, log: str = "") -> subprocess.Popen:
        log = open(self.root / "logs" / f"{log or name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self._procs[name] = proc
        self.pids[name] = (proc.pid, marker)
        return proc

    def _wait(self, name: str, ready, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            proc = self._procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before {what}:\n{self._logs(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no {what} after {timeout:.0f} s:\n{self._logs(name)}")
            time.sleep(0.05)

    def _logs(self, name: str) -> str:
        return self.log(name) + self.log(f"{name}-stdout")

    def _network(self) -> None:
        ns = ["-n", self.netns]
        ip("netns", "add", self.netns)
        ip(*ns, "link", "set", "lo", "up")
        ip(*ns, "link", "add", self.bridge, "type", "bridge")
        ip(*ns, "addr", "add", f"{self.server_ip}/24", "dev", self.bridge)
        ip(*ns, "link", "set", self.bridge, "up")
        ip(*ns, "tuntap", "add", "dev", self.tap, "mode", "tap")
        ip(*ns, "link", "set", self.tap, "master", self.bridge)
        ip(*ns, "link", "set", self.tap, "up")

    def _dnsmasq(self) -> None:
        conf_dir = self.root / "dnsmasq.d"
        main = render("dhcp", "dnsmasq.conf.j2", _dutlab_dnsmasq_user=self.dnsmasq_user,
                      _dutlab_dnsmasq_pid_file=str(self.root / "dnsmasq.pid"),
                      _dutlab_dnsmasq_lease_dir=str(self.root), _dutlab_dnsmasq_log_dir=str(self.root / "logs"),
                      _dutlab_dnsmasq_config_dir=str(conf_dir))
        (self.root / "dnsmasq.conf").write_text(main)
        (conf_dir / "dhcp.conf").write_text(render(
            "dhcp", "dhcp.conf.j2", dutlab_dhcp_interface=self.bridge, dutlab_dhcp_range_start=f"{self.subnet}.100",
            dutlab_dhcp_range_end=f"{self.subnet}.150", dutlab_dhcp_router="none",
            dutlab_dhcp_hosts=[{"name": self.name, "mac": self.mac, "ip": self.board_ip}]))
        (conf_dir / "tftp.conf").write_text(render("tftp", "tftp.conf.j2", dutlab_tftp_interface=self.bridge,
                                                   dutlab_tftp_root=str(self.tftp_root)))
        config = str(self.root / "dnsmasq.conf")
        test = subprocess.run(["dnsmasq", "--test", f"--conf-file={config}"], capture_output=True, text=True)
        if test.returncode:
            raise RuntimeError(f"dnsmasq --test {config}: {test.stderr.strip()}")
        # dnsmasq logs to logs/dnsmasq.log itself (log-facility); its stdout says only why it could not start
        self._spawn("dnsmasq", ["ip", "netns", "exec", self.netns, "dnsmasq", "--keep-in-foreground",
                                f"--conf-file={config}"], config, log="dnsmasq-stdout")
        self._wait("dnsmasq", lambda: "TFTP root is" in self.log("dnsmasq"), "TFTP service")

    def _uart(self) -> None:
        sock = self.root / "serial" / f"{self.name}.sock"
        self._spawn("uart", [sys.executable, str(HERE / "uart.py"), "--link", str(self.uart_path),
                             "--socket", str(sock), "--log", str(self.root / "logs" / "uart-events.log")],
                    str(self.uart_path))
        self._wait("uart", self.uart_path.is_symlink, f"serial device at {self.uart_path}")

    def _ser2net(self) -> None:
        config = self.root / "ser2net.yaml"
        board = {"name": self.name, "port": self.telnet_port, "device": str(self.uart_path)}
        config.write_text(render("ser2net", "ser2net.yaml.j2", dutlab_ser2net_boards=[board]))
        # -u: no UUCP lock files in /run/lock for a lab that must leave nothing behind
        self._spawn("ser2net", ["ser2net", "-n", "-u", "-c", str(config), "-P", str(self.root / "ser2net.pid")],
                    str(config))
        self._wait("ser2net", lambda: listening("127.0.0.1", self.telnet_port), f"telnet port {self.telnet_port}")

    def qemu_command(self) -> list[str]:
        """The board: QEMU virt + u-boot, serial to the UART relay, NIC on the lab bridge's tap."""
        sock = self.root / "serial" / f"{self.name}.sock"
        return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", str(self.memory),
                "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
                "-bios", str(UBOOT), "-chardev", f"socket,id=uart0,path={sock}", "-serial", "chardev:uart0",
                # u-boot's virtio-net-pci driver ignores QEMU's MAC (2023.01): the MMIO device keeps it
                "-netdev", f"tap,id=lan0,ifname={self.tap},script=no,downscript=no",
                "-device", f"virtio-net-device,netdev=lan0,mac={self.mac}",
                "-name", f"dutlab-board-{self.name}-{self.tag}"]

    def _outlet(self) -> None:
        outlet = {"netns": self.netns, "qemu": self.qemu_command(), "pidfile": str(self.root / "qemu.pid"),
                  "qemu_log": str(self.root / "logs" / "qemu.log"), "power_log": str(self.root / "logs" / "power.log")}
        (self.root / "outlets" / f"{self.pdu_port}.json").write_text(json.dumps(outlet, indent=2))

    def power_script(self, action: str, python: str = sys.executable) -> str:
        """The localcmdline command (cmd_on / cmd_off) of this board's outlet; %s is the port."""
        return f"{python} {HERE / 'board_power.py'} {self.root / 'outlets'} %s {action}"

    def _pdudaemon(self) -> None:
        listen = "127.0.0.1" if self.pdu_daemon == "localhost" else self.pdu_daemon
        pdu = {"name": self.pdu_hostname, "driver": "localcmdline",
               "options": {"cmd_on": self.power_script("on"), "cmd_off": self.power_script("off")}}
        config = self.root / "pdudaemon.conf"
        config.write_text(render("pdudaemon", "pdudaemon.conf.j2", dutlab_pdudaemon_listen_address=listen,
                                 dutlab_pdudaemon_pdus=[pdu], dutlab_pdudaemon_log_level="DEBUG"))
        self._spawn("pdudaemon", ["pdudaemon", f"--conf={config}", "--logfile=-"], str(config))
        self._wait("pdudaemon", lambda: listening(listen, PDUDAEMON_PORT), f"listener on {listen}:{PDUDAEMON_PORT}")
