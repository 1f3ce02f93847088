"""dutlab-coordinator in a lab: its settings file (with a state file, so it can be restarted
mid-group), the process (stopped by PID with the lab), and the worker option that points at it."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .procs import BIN, free_port
from .server import LabError, LabServer


@dataclass
class Coordinator:
    lab: LabServer
    port: int
    config: Path
    name: str = "coordinator"

    @property
    def worker_args(self) -> tuple[str, ...]:
        """dutlab-worker options for MultiNode jobs through this coordinator."""
        return ("--coordinator", f"127.0.0.1:{self.port}")

    @property
    def log_file(self) -> Path:
        return self.lab.log_dir / f"{self.name}.daemon.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self, timeout: float = 15) -> Coordinator:
        self.lab.spawn(self.name, [str(BIN / "dutlab-coordinator"), "--config", str(self.config)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise LabError(f"dutlab-coordinator did not listen on 127.0.0.1:{self.port}:\n{self.lab.log(self.name)}")

    def stop(self) -> None:
        self.lab.stop(self.name)

    def restart(self) -> None:
        self.stop()
        self.start()


def add_coordinator(lab: LabServer, port: int = 0, name: str = "coordinator") -> Coordinator:
    """A started dutlab-coordinator on loopback whose groups live in lab.root/<name>.sqlite3."""
    port = port or free_port()
    config = lab.root / f"{name}.yaml"
    lab.log_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({
        "host": "127.0.0.1", "port": port, "state_file": str(lab.root / f"{name}.sqlite3"),
        "log_file": str(lab.log_dir / f"{name}.daemon.log"), "log_level": "DEBUG", "group_idle_timeout": 3600,
    }))
    return Coordinator(lab, port, config, name).start()
