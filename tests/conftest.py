"""Shared fixtures: a real lab server on loopback (`lab_server`), an in-process database (`db`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# one place for the QEMU test kernel/initramfs (scripts/build-qemu-assets.sh, the qemu health check)
os.environ.setdefault("DUTLAB_ASSETS", "/var/cache/dutlab/assets")

from labtools import backend_urls, start_lab  # noqa: E402


@pytest.fixture
def lab_server(tmp_path):
    """A running `dutlab-server serve` + `consumer` with an admin user (`.admin_token`)."""
    lab, stop = start_lab(tmp_path)
    try:
        yield lab
    finally:
        stop()


@pytest.fixture
def settings(tmp_path):
    """Settings for in-process tests, on the backend chosen by DUTLAB_TEST_DATABASE."""
    from dutlab.service.config import from_dict

    database, _queue, cleanup = backend_urls(tmp_path)
    s = from_dict({
        "data_dir": str(tmp_path / "data"),
        "database": database,
        "queue": "memory:",
        "template_dirs": [str(tmp_path / "etc" / "device-types")],
        "health_checks_dir": str(tmp_path / "etc" / "health-checks"),
        "secret_key_file": str(tmp_path / "etc" / "secret_key"),
    })
    yield s
    cleanup()


@pytest.fixture
def db(settings):
    """A migrated database bound to the models, with the queue in memory.

    Imports the task module as the server's entry points do: it registers the tasks and
    subscribes the scheduling pass to the domain's events (service/events.py).
    """
    from dutlab.service import migrations, queue, tasks  # noqa: F401 (tasks: see above)
    from dutlab.service.db import database, open_database

    open_database(settings.database)
    queue.configure(settings)
    migrations.migrate()
    yield database
    database.close()


def pytest_report_header(config):
    return [f"dutlab backends: database={os.environ.get('DUTLAB_TEST_DATABASE', 'sqlite')} "
            f"queue={os.environ.get('DUTLAB_TEST_QUEUE', 'sqlite')}"]


BACKEND_FIXTURES = {"lab_server", "db", "settings"}


def pytest_collection_modifyitems(config, items):
    # tests that touch the database or a real server run again on PostgreSQL + Redis in CI
    for item in items:
        if BACKEND_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.backend)
