"""Jobs on the emulated u-boot board through the whole lab, as a test writer and a lab admin see them.

The real server and queue consumer, the real dutlab-worker (started with the board's TFTP root and
its address on the lab network, EmulatedBoardLab.worker_args()) and the board lab of
tests/labkit/board.py: QEMU virt + Debian's u-boot behind the real ser2net (console), pdudaemon
(power, through pduclient) and dnsmasq (DHCP + TFTP) in a network namespace. uboot01 is a
qemu-uboot-arm64 device with the dictionary an admin writes for such a board. Every job is
submitted to the REST API and read back through it: job health and errors, result rows, device
health and state, the log.

The lab and the board start once for the module and the jobs run one after the other. Each test
first waits until uboot01 is Idle and Good and leaves it so (a test that changes the dictionary
or the device type restores them), so the tests do not depend on their order. After every job the
board is off (finalize runs the dictionary's power_off_command).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit import REPO, Lab, free_port, start_lab
from labkit.board import ASSETS, EmulatedBoardLab, missing_prerequisites

pytestmark = [pytest.mark.qemu, pytest.mark.board]

BOARD, DEVICE_TYPE, WORKER = "uboot01", "qemu-uboot-arm64", "worker1"
EXAMPLE = REPO / "examples" / "jobs" / "uboot-tftp-ramdisk.yaml"
HEALTH_CHECK = REPO / "device-types" / "health-checks" / f"{DEVICE_TYPE}.yaml"
#: the results of the example job's test definition, as the API lists them
EXPECTED = [("uname", "pass", None, ""), ("false-case", "fail", None, ""),
            ("speed", "pass", "12.5000000000", "MB/s")]
INTERRUPT = "bootloader-interrupt: the interrupt prompt 'Hit any key to stop autoboot' did not appear within"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def with_assets(text: str) -> str:
    """A job text whose file:// URLs point at this run's QEMU assets (DUTLAB_ASSETS)."""
    return text.replace("file:///var/cache/dutlab/assets/arm64", f"file://{ASSETS}")


@dataclass
class Finished:
    """A finished job as the API gives it back."""

    job: dict
    results: list[dict]
    log: list[dict]

    @property
    def id(self) -> int:
        return self.job["id"]

    def cases(self, suite: str) -> list[tuple[str, str, str | None, str]]:
        return [(c["name"], c["result"], c["measurement"], c["unit"]) for c in self.results if c["suite"] == suite]

    def suites(self) -> set[str]:
        return {c["suite"] for c in self.results}

    def messages(self, lvl: str) -> list[str]:
        return [str(r["msg"]) for r in self.log if r.get("lvl") == lvl]

    def failed(self, error_type: str) -> str:
        """The error message of a job that must be Incomplete with `error_type`; the failure comment too."""
        job = self.job
        assert (job["health"], job["error_type"]) == ("Incomplete", error_type), job
        assert job["failure_comment"] == job["error_msg"], job
        return job["error_msg"]


@dataclass
class BoardJobs:
    lab: Lab
    board: EmulatedBoardLab
    dictionary: str
    #: where a test puts images its jobs name in file:// URLs (one of the worker's file_roots)
    images: Path

    def device(self) -> dict:
        return self.lab.json("GET", f"/api/v1/devices/{BOARD}")

    def history(self) -> list[dict]:
        """uboot01's health history, oldest first (the API lists the newest first)."""
        return self.lab.json("GET", f"/api/v1/devices/{BOARD}/health-history?limit=1000")["results"][::-1]

    def ready(self) -> dict:
        """uboot01 once it is Idle and Good (a health check that is due runs first)."""
        device = self.lab.wait_health(BOARD, {"Good", "Bad"}, timeout=420, state="Idle")
        assert device["health"] == "Good", self.history()
        return device

    def run(self, job: dict | str, timeout: float = 420, health_check_follows: bool = False) -> Finished:
        """Submit a job to uboot01 (Idle and Good first), wait for it to finish, read it back.

        health_check_follows: the job sends the board to a health check, which may already be
        using it; the board's state is then checked after that (`ready()`), not here."""
        self.ready()
        text = job if isinstance(job, str) else yaml.safe_dump(job, sort_keys=False)
        job_id = self.lab.submit(text)
        finished = self.lab.wait_job(job_id, timeout=timeout)
        assert finished["actual_device"] == BOARD, finished
        if not health_check_follows:
            self.assert_board_off(f"job {job_id}")
        results = self.lab.json("GET", f"/api/v1/jobs/{job_id}/results")
        log = yaml.safe_load(self.lab.api("GET", f"/api/v1/jobs/{job_id}/logs").text) or []
        return Finished(finished, results, log)

    def assert_board_off(self, after: str) -> None:
        """The board is off and the TFTP root empty after every job, whatever its outcome."""
        assert not self.board.powered, f"{after} left the board powered on:\n{self.board.log('power')}"
        assert sorted(self.board.tftp_root.iterdir()) == [], f"{after} left files in the TFTP root"

    @contextmanager
    def changed(self, **sets: str) -> Iterator[None]:
        """uboot01 with these dictionary variables changed and the device type's health checks off
        (an infrastructure failure would send it to a health check with the broken dictionary);
        afterwards the dictionary, the health checks and the device's health are as before."""
        self.ready()
        dictionary = self.dictionary
        for key, value in sets.items():
            line = f"{{% set {key} = {json.dumps(value)} %}}"
            dictionary, found = re.subn(rf"{{% set {key} = .* %}}", lambda _m, line=line: line, dictionary)
            assert found == 1, (key, dictionary)
        self.lab.json("PATCH", f"/api/v1/device-types/{DEVICE_TYPE}", {"disable_health_checks": True})
        self.lab.json("PUT", f"/api/v1/devices/{BOARD}/dictionary", {"dictionary": dictionary})
        try:
            yield
        finally:
            self.lab.json("PUT", f"/api/v1/devices/{BOARD}/dictionary", {"dictionary": self.dictionary})
            if self.device()["health"] != "Good":
                self.lab.json("POST", f"/api/v1/devices/{BOARD}/health",
                              {"health": "Good", "reason": "dictionary restored after a failure test"})
            self.lab.json("PATCH", f"/api/v1/device-types/{DEVICE_TYPE}", {"disable_health_checks": False})

    def assert_unknown_after(self, out: Finished) -> None:
        """LAVA's rule: an Infrastructure error makes a Good device Unknown (here: no health check runs)."""
        device = self.device()
        assert (device["health"], device["state"]) == ("Unknown", "Idle"), device
        assert self.history()[-1]["reason"] == (f"job {out.id} ended with an Infrastructure error: "
                                                f"{out.job['error_msg']}"), self.history()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoardJobs]:
    missing = missing_prerequisites()
    if missing:
        _unavailable("the emulated board lab needs: " + ", ".join(missing) + " (scripts/setup.sh installs them)")
    initramfs = ASSETS / "initramfs.cpio.gz"
    if not (ASSETS / "vmlinuz").exists() or not initramfs.exists():
        _unavailable(f"no arm64 kernel and initramfs in {ASSETS}: run scripts/build-qemu-assets.sh --arch arm64")
    if b'case "$ROOT" in /dev/ram*) ROOT= ;; esac' not in gzip.decompress(initramfs.read_bytes()):
        _unavailable(f"{initramfs} predates root=/dev/ram0 support: rebuild it with scripts/build-qemu-assets.sh")
    root = tmp_path_factory.mktemp("board-jobs")
    board = EmulatedBoardLab(root / "board", BOARD, tftp_root=root / "tftp")
    board.start()
    try:
        server, stop = start_lab(root / "lab")
        try:
            server.add_worker(WORKER)
            images = root / "images"
            images.mkdir()
            server.start_worker(WORKER, None, *board.worker_args(),
                                "--file-roots", f"/var/cache/dutlab:{ASSETS.parent.resolve()}:{images}")
            server.add_device_type(DEVICE_TYPE)  # health checks on: the shipped health-checks/qemu-uboot-arm64.yaml
            if ASSETS.parent != Path("/var/cache/dutlab/assets"):
                server.json("PUT", f"/api/v1/device-types/{DEVICE_TYPE}/health-check",
                            {"health_check": with_assets(HEALTH_CHECK.read_text())})
            server.add_device(BOARD, DEVICE_TYPE, WORKER, board.dictionary(), description="emulated u-boot board")
            yield BoardJobs(server, board, board.dictionary(), images)
        finally:
            stop()
    finally:
        board.stop()
    assert board.leftovers() == [], f"the board lab left these behind: {board.leftovers()}"


def example() -> dict[str, Any]:
    return yaml.safe_load(with_assets(EXAMPLE.read_text()))


def variant(*, ramdisk: dict | None = None, boot: dict | None = None, steps: list[str] | None = None,
            tests: bool = True, **timeouts: Any) -> dict[str, Any]:
    """The example job with another ramdisk, boot keys, test steps (or no test), job timeouts."""
    job = example()
    deploy, boot_block, test = (next(iter(a.values())) for a in job["actions"])
    if ramdisk:
        deploy["ramdisk"] = ramdisk
    boot_block.update(boot or {})
    if steps:
        test["definitions"][0]["repository"]["run"]["steps"] = steps
    if not tests:
        job["actions"] = job["actions"][:2]
    job["timeouts"].update(timeouts)
    return job


def commands(*changed: str, ramdisk: str = "tftp {RAMDISK_ADDR} {RAMDISK}",
             bootargs: str = "console=ttyAMA0,115200 root=/dev/ram0") -> list[str]:
    """A boot command list given in the job: the ramdisk set's steps, this ramdisk line and bootargs."""
    return ["setenv autoload no", "dhcp", "setenv serverip {SERVER_IP}", "tftp {KERNEL_ADDR} {KERNEL}", ramdisk,
            f"setenv bootargs '{bootargs}'", *changed, "{BOOTX}"]


# -- jobs that complete -----------------------------------------------------------------------

def test_the_new_board_gets_its_health_check_and_becomes_good(lab: BoardJobs) -> None:
    lab.ready()
    source = lab.lab.json("GET", f"/api/v1/device-types/{DEVICE_TYPE}/health-check")["source"]
    assert source == ("file" if ASSETS.parent == Path("/var/cache/dutlab/assets") else "database")
    jobs = lab.lab.json("GET", f"/api/v1/jobs?device_type={DEVICE_TYPE}&limit=1000")["results"]
    first = min((j for j in jobs if j["health_check"]), key=lambda j: j["id"])
    assert (first["actual_device"], first["health"], first["state"]) == (BOARD, "Complete", "Finished"), first
    definition = lab.lab.api("GET", f"/api/v1/jobs/{first['id']}/definition").text
    assert definition == with_assets(HEALTH_CHECK.read_text())
    cases = lab.lab.json("GET", f"/api/v1/jobs/{first['id']}/results?suite=0_uboot-smoke")
    assert [(c["name"], c["result"]) for c in cases] == [("uname", "pass"), ("uboot-bootargs", "pass"),
                                                         ("device-tree", "pass")]
    passed = [h for h in lab.history() if h["reason"] == f"health check job {first['id']} passed"]
    assert [(h["old_health"], h["new_health"]) for h in passed] == [("Unknown", "Good")], lab.history()
    assert not lab.board.powered


def test_the_example_lava_job_completes_with_exactly_its_results(lab: BoardJobs) -> None:
    out = lab.run(with_assets(EXAMPLE.read_text()))
    assert (out.job["health"], out.job["error_type"], out.job["failure_comment"]) == ("Complete", "", ""), out.job
    assert out.suites() == {"lava", "0_smoke"}
    assert out.cases("0_smoke") == EXPECTED
    lava = {name: result for name, result, _, _ in out.cases("lava")}
    assert lava["job"] == lava["tftp-deploy"] == lava["uboot-action"] == "pass", lava
    typed = out.messages("input")
    assert f"setenv serverip {lab.board.server_ip}" in typed
    kernel = next(c for c in typed if c.startswith("tftp 0x40400000 "))
    assert re.fullmatch(rf"tftp 0x40400000 dutlab-{out.id}-\w+/kernel/vmlinuz", kernel), kernel
    assert "booti 0x40400000 0x44000000 0x40000000" in typed
    # the real dnsmasq served the job's folder to the board's address on the lab network
    assert f"{kernel.split()[2]} to {lab.board.board_ip}" in lab.board.log("dnsmasq", tail=100_000)
    assert (lab.device()["health"], lab.device()["state"]) == ("Good", "Idle")


def test_a_mkimaged_ramdisk_with_header_u_boot_completes(lab: BoardJobs) -> None:
    uinitrd = lab.images / "uInitrd"
    made = subprocess.run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "ramdisk", "-C", "none", "-d",
                           str(ASSETS / "initramfs.cpio.gz"), str(uinitrd)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    out = lab.run(variant(ramdisk={"url": f"file://{uinitrd}", "compression": "gz", "header": "u-boot"}))
    assert out.job["health"] == "Complete", (out.job["error_type"], out.job["error_msg"])
    assert out.cases("0_smoke") == EXPECTED
    assert any(m.startswith("ramdisk uInitrd.uboot: test overlay appended as /lava-") and "with a u-boot header" in m
               for m in out.messages("info")), out.messages("info")
    assert any("AArch64 Linux RAMDisk Image" in m for m in out.messages("target"))


def test_an_explicit_command_list_in_the_job_completes(lab: BoardJobs) -> None:
    listed = commands("setenv dutlab_list yes", bootargs="console=ttyAMA0,115200 root=/dev/ram0 dutlab.job=list")
    out = lab.run(variant(boot={"commands": listed},
                          steps=["lava-test-case cmdline --shell grep -q dutlab.job=list /proc/cmdline"]))
    assert out.job["health"] == "Complete", (out.job["error_type"], out.job["error_msg"])
    assert out.cases("0_smoke") == [("cmdline", "pass", None, "")]
    assert "using the boot commands of the job definition, not the device's command sets" in out.messages("warning")
    typed = out.messages("input")
    first = typed.index("setenv autoload no")
    assert typed[first:first + 3] == ["setenv autoload no", "dhcp", f"setenv serverip {lab.board.server_ip}"]
    assert typed[first + 5:first + 8] == ["setenv bootargs 'console=ttyAMA0,115200 root=/dev/ram0 dutlab.job=list'",
                                          "setenv dutlab_list yes", "booti 0x40400000 0x44000000 0x40000000"], typed


def test_soft_reboots_are_recognised_by_their_shutdown_message(lab: BoardJobs) -> None:
    """Three boots in one job: the PDU powers the board for the first; the second and third reboot it
    from its shell (the boot's soft_reboot), recognised by the boot's shutdown-message, then by the
    device's (the dictionary renders LAVA's default). busybox prints no shutdown line, so the soft
    reboot commands print one; printf's %s keeps the typed line itself from matching."""
    marker = "lava-test-case {name} --shell test ! -e /dutlab-marker; touch /dutlab-marker"
    job = variant(steps=[marker.format(name="first-boot")])
    deploy, first, test = job["actions"]
    boot = first["boot"]
    by_job = {**boot, "soft_reboot": ["printf 'dutlab: going down for a soft reboot %s\\n' now", "reboot -f"],
              "parameters": {"shutdown-message": "dutlab: going down for a soft reboot now"}}
    by_device = {**boot, "soft_reboot": "printf 'The system is going down for reboot %s\\n' NOW; reboot -f"}

    def tested(name: str) -> dict:
        block = yaml.safe_load(yaml.safe_dump(test))
        definition = block["test"]["definitions"][0]
        definition["name"], definition["path"] = name, f"inline/{name}.yaml"
        definition["repository"]["metadata"]["name"] = name
        definition["repository"]["run"]["steps"] = [marker.format(name=name)]
        return block

    job["actions"] = [deploy, first, tested("before"), {"boot": by_job}, tested("after-job-message"),
                      {"boot": by_device}, tested("after-device-message")]
    power_before = len(lab.board.log("power", tail=100_000).splitlines())
    out = lab.run(job)
    assert out.job["health"] == "Complete", (out.job["error_type"], out.job["error_msg"])
    # each boot starts with a fresh root filesystem: the marker of the boot before is gone
    assert out.cases("0_before") == [("before", "pass", None, "")]
    assert out.cases("1_after-job-message") == [("after-job-message", "pass", None, "")]
    assert out.cases("2_after-device-message") == [("after-device-message", "pass", None, "")]
    info = out.messages("info")
    assert "soft reboot: the board printed 'dutlab: going down for a soft reboot now'" in info
    assert "soft reboot: the board printed 'The system is going down for reboot NOW'" in info
    assert sum(m.startswith("soft reboot: typing the boot's soft_reboot") for m in info) == 2
    # the PDU worked once: the first boot's hard_reset (pdudaemon: off, on), then finalize's off
    actions = [line.split()[1] for line in lab.board.log("power", tail=100_000).splitlines()[power_before:]]
    assert actions == ["off", "on", "off"], actions


# -- failures an admin sees -------------------------------------------------------------------

def test_a_pdu_command_that_fails_is_an_infrastructure_error_with_its_output(lab: BoardJobs) -> None:
    broken = lab.board.power_command("reboot").replace(lab.board.pdu_hostname, "pdu-nosuch")
    said = subprocess.run(broken, shell=True, capture_output=True, text=True, timeout=60)
    assert said.returncode != 0 and said.stderr.strip(), said
    with lab.changed(hard_reset_command=broken):
        out = lab.run(variant(tests=False))
        assert out.failed("Infrastructure") == (f"hard_reset: {broken!r} failed with exit code {said.returncode}: "
                                                f"{said.stderr.strip()[-300:]}")
        lab.assert_unknown_after(out)


def test_a_refused_console_connection_names_host_port_ser2net_and_the_device_node(lab: BoardJobs) -> None:
    closed = free_port()
    with lab.changed(connection_command=f"telnet 127.0.0.1 {closed}"):
        out = lab.run(variant(tests=False))
        assert out.failed("Infrastructure") == (
            f"connect-device: telnet could not connect to 127.0.0.1:{closed} (Connection refused): check that "
            f"ser2net runs on 127.0.0.1 with port {closed} in its configuration, and that the board's serial "
            "device node exists")
        lab.assert_unknown_after(out)


def test_a_board_that_never_shows_the_interrupt_prompt_names_it_and_the_wait(lab: BoardJobs) -> None:
    with lab.changed():
        lab.board.unplug()  # the PDU switches the outlet, the board stays dark
        try:
            out = lab.run(variant(tests=False, connections={"bootloader-interrupt": {"seconds": 15}}))
        finally:
            lab.board.plug()
        message = out.failed("Infrastructure")
        assert message.startswith(f"{INTERRUPT} 15 s (last console output: "), message
        assert message.endswith("; check that the board is powered (its power commands ran, the PDU port is "
                                f"right) and that its console is this connection ({lab.board.connection_command})")
        lab.assert_unknown_after(out)


def test_a_missing_tftp_file_is_an_infrastructure_error_and_the_board_gets_a_health_check(lab: BoardJobs) -> None:
    missing = "dutlab-no-such-folder/initramfs.cpio.gz"
    out = lab.run(variant(boot={"commands": commands(ramdisk=f"tftp {{RAMDISK_ADDR}} {missing}")}, tests=False),
                  health_check_follows=True)
    message = out.failed("Infrastructure")
    head, tail = message.split("\" after ", 1)
    # dnsmasq's own words: "file /<tftp root>/dutlab-no-such-folder/initramfs.cpio.gz not found for 10.232.0.10"
    assert head.startswith("bootloader-commands: u-boot printed \"TFTP error: 'file ") and missing in head, message
    assert tail == (f"'tftp 0x44000000 {missing}': the board could not fetch '{missing}'; check the TFTP server "
                    "(its root must be the worker's TFTP root) and the board's network link")
    assert not any(m.startswith("booti") for m in out.messages("input"))  # the boot ended at once
    off = lab.board.power_command("off")
    assert f"running on the worker: {off}" in out.messages("info")[-10:]  # finalize switched the board off
    # LAVA's rule: the Good device became Unknown, and the scheduler sent it to a health check that passed
    lab.ready()
    history = lab.history()
    unknown = next(i for i, h in enumerate(history) if h["reason"].startswith(f"job {out.id} ended with an "
                                                                              "Infrastructure error: "))
    assert (history[unknown]["old_health"], history[unknown]["new_health"]) == ("Good", "Unknown")
    good = history[unknown + 1]
    assert good["new_health"] == "Good" and good["reason"].startswith("health check job "), history
    check = lab.lab.job(int(good["reason"].split()[3]))
    assert check["health_check"] and check["health"] == "Complete" and check["id"] > out.id, check
    lab.assert_board_off(f"health check {check['id']}")


def test_a_kernel_panic_is_a_boot_error_and_the_board_stays_good(lab: BoardJobs) -> None:
    listed = commands(bootargs="console=ttyAMA0,115200 root=/dev/ram0 dutlab.panic=1")
    out = lab.run(variant(boot={"commands": listed}, tests=False))
    message = out.failed("Job")
    assert message.startswith("the boot failed: 'Kernel panic - not syncing"), message
    assert lab.device()["health"] == "Good"  # not the lab's fault: no health check
