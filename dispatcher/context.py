"""JobContext: the typed state that actions share (who writes what is a grep away)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .console import Console
    from .log import JobLogger
    from .multinode import Group

DEFAULT_RESULTS_DIR = "/lava-%s"


@dataclass
class Overlay:
    """The /lava-<id> tree built on the worker and how it reaches the DUT."""

    #: the directory on the worker whose contents become /lava-<id> on the DUT
    root: Path
    #: /lava-<id> as the DUT sees it
    dut_path: str
    #: ext2 image attached to QEMU as an extra drive (None when inside the initramfs)
    image: Path | None = None
    #: filesystem label of the image, so the DUT finds the drive whatever its name
    label: str = ""
    #: the overlay was appended to the initramfs (``overlays: {lava: true}``)
    in_ramdisk: bool = False
    #: one list of test directories (``tests/<index>_<name>``) per test action
    stages: list[list[str]] = field(default_factory=list)
    #: per test definition directory: metadata logged with its ENDRUN result
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TftpFiles:
    """deploy to: tftp: the job's folder in the worker's TFTP root, and what a bootloader fetches."""

    #: ``<tftp root>/dutlab-<job id>-...``, removed by finalize
    folder: Path
    #: kernel, ramdisk, dtb -> path relative to the TFTP root (``{KERNEL}``, ``{RAMDISK}``, ``{DTB}``)
    files: dict[str, str] = field(default_factory=dict)
    #: the deploy's ``kernel.type``: image, zimage or uimage (``{BOOTX}``: booti, bootz, bootm)
    kernel_type: str = ""
    #: the staged ramdisk is a u-boot image, which carries its own size
    ramdisk_header: bool = False


@dataclass
class JobContext:
    job_id: int
    job: dict[str, Any]
    device: dict[str, Any]
    logger: JobLogger
    output_dir: Path
    work_dir: Path
    #: per-job scratch directory (downloads, overlay); removed by finalize
    tmp_dir: Path
    #: monotonic time the running action must end by (set by the pipeline runner)
    deadline: float = math.inf
    #: longest single wait for the DUT in the running action (set by the pipeline runner)
    connection_timeout: float = math.inf
    #: deploy: image name -> file on the worker, ready for QEMU
    images: dict[str, Path] = field(default_factory=dict)
    #: deploy: image_arg strings with {name} already replaced, in job order
    image_args: list[str] = field(default_factory=list)
    overlay: Overlay | None = None
    #: boot: the connected serial console
    console: Console | None = None
    #: boot: regexes that mean "a shell is ready"
    prompts: list[str] = field(default_factory=list)
    #: test: index of the next test action (the overlay stage it runs)
    test_stage: int = 0
    #: command: device user commands whose "undo" finalize must run
    undo_commands: list[str] = field(default_factory=list)
    #: worker settings for bootloader boots: the TFTP server's root, and the address boards reach
    #: it on (``{SERVER_IP}``; '' means the worker's own address, found at boot time)
    tftp_root: Path = Path("/srv/tftp")
    dispatcher_ip: str = ""
    #: the folders file:// URLs may name (the worker's file_roots and the job's folders); None: any
    file_roots: tuple[Path, ...] | None = None
    #: deploy to: tftp: the staged files
    tftp: TftpFiles | None = None
    #: boot: the bootloader commands with their placeholders filled in (bootloader-overlay)
    bootloader_commands: list[str] = field(default_factory=list)
    #: the worker's env-dut.yaml from the server (removes, overrides) for the test shell
    env_dut: dict[str, Any] = field(default_factory=dict)
    #: the coordinator settings file (dutlab-run --coordinator; None: LAVA's lava-coordinator.conf)
    coordinator: Path | None = None
    #: a MultiNode sub-job's group, once multinode-setup joined it
    multinode: Group | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait_timeout(self) -> float:
        """How long one wait for the DUT may take: connection timeout within the action's."""
        return min(self.connection_timeout, self.remaining())

    @property
    def context(self) -> dict[str, Any]:
        return self.job.get("context") or {}

    @property
    def arch(self) -> str:
        return str(self.context.get("arch") or self.device.get("arch") or "amd64")

    def constant(self, *keys: str, default: Any = None) -> Any:
        """A value from the device configuration's ``constants`` by path."""
        node: Any = self.device.get("constants") or {}
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return default if node is None else node

    @property
    def results_dir(self) -> str:
        """/lava-<id> on the DUT (the device may change the pattern)."""
        pattern = self.constant("posix", "lava_test_results_dir", default=DEFAULT_RESULTS_DIR)
        return pattern % self.job_id if "%s" in pattern else pattern

    def test_actions(self) -> list[dict[str, Any]]:
        return [a["test"] for a in self.job.get("actions", []) if "test" in a]
