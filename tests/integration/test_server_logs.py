"""The server's logs: an access line per request (into the server log, or `serve --access-log`),
`--log-file`, and files that logrotate may move away while the server runs."""

from __future__ import annotations

import re
import time
from pathlib import Path

from labkit import BIN, free_port, http

ACCESS = re.compile(r'127\.0\.0\.1 "GET /api/v1/jobs\?limit=1 HTTP/1\.1" 200 \d+ [\d.]+ms')


def wait_for_text(path: Path, pattern: re.Pattern, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if pattern.search(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{path} has no line like {pattern.pattern}:\n{text[-2000:]}")


def test_access_lines_log_files_and_rotation(lab_server, tmp_path):
    lab = lab_server
    assert lab.api("GET", "/api/v1/jobs?limit=1").status == 200
    line = next(x for x in wait_for_text(lab.log_dir / "serve.log", ACCESS).splitlines() if ACCESS.search(x))
    assert " dutlab.access INFO " in line and lab.admin_token not in line  # tokens travel in headers only

    port = free_port()
    server_log, access_log = tmp_path / "server.log", tmp_path / "access.log"
    lab.spawn("serve-files", [str(BIN / "dutlab-server"), "--config", str(lab.config), "--log-file", str(server_log),
                              "serve", "--listen", f"127.0.0.1:{port}", "--access-log", str(access_log)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server_log.exists() or "listening on" not in server_log.read_text():
        assert time.monotonic() < deadline, (lab.log_dir / "serve-files.log").read_text()
        time.sleep(0.05)
    assert http("GET", f"{url}/api/v1/jobs?limit=1", token=lab.admin_token).status == 200
    wait_for_text(access_log, ACCESS)
    assert not ACCESS.search(server_log.read_text())  # --access-log: those lines go there only
    assert (lab.log_dir / "serve-files.log").read_text() == ""  # nothing on stderr with --log-file

    # logrotate moves the file away (no copytruncate): the next line goes to a new file
    access_log.rename(tmp_path / "access.log.1")
    assert http("GET", f"{url}/api/v1/system/version").status == 200
    wait_for_text(access_log, re.compile(r'"GET /api/v1/system/version HTTP/1\.1" 200'))
    assert "system/version" not in (tmp_path / "access.log.1").read_text()
    lab.stop("serve-files")
