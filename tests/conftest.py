"""Shared fixtures: a real lab server on loopback (`lab_server`), an in-process database (`db`)
and the server's WSGI app on it (`app`), for handler tests that need no subprocess."""

from __future__ import annotations

import io
import json
import os
import sys
import wsgiref.util
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# one place for the QEMU test kernel/initramfs (scripts/build-qemu-assets.sh, the qemu health check)
os.environ.setdefault("DUTLAB_ASSETS", "/var/cache/dutlab/assets")

from labkit import Response, backend_urls, start_lab  # noqa: E402


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


class WsgiClient:
    """The server's Bottle app called in this process, as `LabServer.api` calls a real one.

    `admin_token` belongs to the superuser `admin` the fixture creates.
    """

    def __init__(self, wsgi, admin_token: str) -> None:
        self.wsgi, self.admin_token = wsgi, admin_token

    def api(self, method: str, path: str, body=None, token: str | None = "admin", auth: str | None = None,
            headers: dict | None = None) -> Response:
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        data = body.encode() if isinstance(body, str) else (body or b"")
        if token:
            hdrs["Authorization"] = f"Token {self.admin_token if token == 'admin' else token}"
        if auth:
            hdrs["Authorization"] = auth
        path, _, query = path.partition("?")
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data)}
        if "Content-Type" in hdrs:
            environ["CONTENT_TYPE"] = hdrs.pop("Content-Type")
        environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in hdrs.items()})
        wsgiref.util.setup_testing_defaults(environ)
        answer: dict = {}

        def start_response(status: str, response_headers: list, exc_info=None) -> None:
            headers = dict(response_headers)
            cookies = [value for name, value in response_headers if name.lower() == "set-cookie"]
            if cookies:  # one header per cookie: kept apart by newlines (their dates hold commas)
                headers["Set-Cookie"] = "\n".join(cookies)
            answer.update(status=int(status.split()[0]), headers=headers)

        chunks = self.wsgi(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        return Response(answer["status"], content, answer["headers"])


@pytest.fixture
def app(db, settings):
    """The app of `dutlab-server serve` on the `db` fixture's database, called in process."""
    from dutlab.service import auth
    from dutlab.service.app import make_app
    from dutlab.service.models import User

    admin = User.create(username="admin", is_superuser=True)
    _token, secret = auth.create_token(admin, "in-process tests")
    return WsgiClient(make_app(settings), secret)


def pytest_report_header(config):
    return [f"dutlab backends: database={os.environ.get('DUTLAB_TEST_DATABASE', 'sqlite')} "
            f"queue={os.environ.get('DUTLAB_TEST_QUEUE', 'sqlite')}"]


BACKEND_FIXTURES = {"lab_server", "db", "settings"}


def pytest_collection_modifyitems(config, items):
    # tests that touch the database or a real server run again on PostgreSQL + Redis in CI
    for item in items:
        if BACKEND_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.backend)
