"""One lab harness for tests, benchmarks and the demo: a real dutlab server, queue consumer,
workers and devices on loopback, every process stopped by PID.

  procs     start/stop processes (own session, by PID + start time, descendants too), free ports
  client    http() for one request, Client for a kept-alive connection
  backends  SQLite, or PostgreSQL/Redis from DUTLAB_TEST_DATABASE / DUTLAB_TEST_QUEUE
  server    LabServer: config, admin bootstrap, serve + consumer, API and CLI helpers
  worker    Lab(LabServer): workers, dutlab-worker, QEMU and other devices, health waits
  lab       start_lab(): the tests' lab
  coordinator  add_coordinator(): dutlab-coordinator with a state file, restartable mid-group

benchmarks/ and scripts/ put <repo>/tests on sys.path and `import labkit`.
"""

from .backends import backend_urls, ensure_postgres, pg_available, pg_database, pg_version, stop_postgres
from .client import Client, HttpError, Response, http
from .coordinator import Coordinator, add_coordinator
from .lab import TEST_SETTINGS, TEST_WORKER_ARGS, start_lab
from .procs import BIN, REPO, Pid, Procs, cmdline, descendants, free_port, pick_port, stop_everything, stop_recorded
from .server import LabError, LabServer, bootstrap, write_config
from .worker import ASSETS, QEMU_DICTIONARY, Lab, file_root_args, qemu_available, smoke_job, worker_available

__all__ = [
    "ASSETS", "BIN", "QEMU_DICTIONARY", "REPO", "TEST_SETTINGS", "TEST_WORKER_ARGS", "Client", "Coordinator",
    "HttpError", "Lab", "add_coordinator",
    "LabError", "LabServer", "Pid", "Procs", "Response", "backend_urls", "bootstrap", "cmdline", "descendants",
    "ensure_postgres", "file_root_args", "free_port", "http", "pg_available", "pg_database", "pg_version", "pick_port",
    "qemu_available", "smoke_job", "start_lab", "stop_everything", "stop_postgres", "stop_recorded",
    "worker_available", "write_config",
]
