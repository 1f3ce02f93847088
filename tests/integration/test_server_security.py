"""Issue 18's login and at-rest rules on a real `dutlab-server serve` over loopback: throttled
logins (429 + Retry-After, allowed again after the window), logins that take as long for an
unknown user as for an existing one, private files, the start-up warning, HTML headers, and a
real dutlab-worker that refuses a job's file:// URL outside its file_roots."""

from __future__ import annotations

import base64
import stat
import statistics
import time
from pathlib import Path

import pytest

from labkit import ASSETS, LabServer, http, start_lab, worker_available

LOGIN = "/api/v1/tokens"


def login(lab, username: str, password: str, basic: bool = False):
    if basic:
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        return lab.api("POST", LOGIN, {}, token=None, headers={"Authorization": f"Basic {credentials}"})
    return lab.api("POST", LOGIN, {"username": username, "password": password}, token=None)


def test_failed_logins_are_throttled_per_user_and_per_address(tmp_path):
    lab, stop = start_lab(tmp_path, login_failures_per_user=3, login_failures_per_address=8, login_window=3)
    try:
        lab.add_user("alice")  # password pw-alice
        for _ in range(3):
            assert login(lab, "alice", "guess").status == 401
        refused = login(lab, "alice", "pw-alice")  # the right password, too late
        assert refused.status == 429, refused.text
        wait = int(refused.headers["Retry-After"])
        assert 1 <= wait <= 3 and refused.json()["retry_after"] == wait
        assert "too many failed logins for user 'alice'" in refused.json()["error"]
        assert login(lab, "alice", "pw-alice", basic=True).status == 429
        assert login(lab, "bob", "guess").status == 401  # other names are not held up by alice's
        time.sleep(wait)
        assert login(lab, "alice", "pw-alice").status == 201
        # one address: failures for many names add up (bob's may still be in the window)
        statuses = [login(lab, f"ghost{i}", "guess").status for i in range(9)]
        assert statuses[-1] == 429 and statuses.count(401) in (7, 8) and 429 not in statuses[:7], statuses
        assert login(lab, "alice", "pw-alice").status == 429
        # API tokens are never throttled: lavacli and the collection keep working
        assert lab.api("POST", LOGIN, {"description": "still fine"}).status == 201
    finally:
        stop()


def test_an_unknown_user_takes_as_long_as_an_existing_one(tmp_path):
    lab, stop = start_lab(tmp_path, login_failures_per_user=0, login_failures_per_address=0)
    try:
        lab.add_user("alice")
        lab.manage("users", "add", "retired", "--passwd", "pw-retired")
        lab.manage("users", "update", "retired", "--not-active")
        times: dict[str, list[float]] = {"alice": [], "nobody-at-all": [], "retired": []}
        for _ in range(15):  # interleaved, so a busy moment of the machine hits every name alike
            for name, samples in times.items():
                started = time.perf_counter()
                assert login(lab, name, "wrong-password").status == 401
                samples.append(time.perf_counter() - started)
        medians = {name: statistics.median(samples) for name, samples in times.items()}
        assert max(medians.values()) < 2 * min(medians.values()), medians
    finally:
        stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_queue_key_and_backups_are_private_and_a_broad_mode_is_reported(tmp_path):
    lab = LabServer.create(tmp_path)  # SQLite: the files this test is about
    try:
        lab.cli("migrate")  # creates the database, as the server role's bootstrap does
        lab.manage("users", "add", "admin", "--superuser", "--passwd", "admin-pw")
        lab.start()
        data = tmp_path / "data"
        files = [data / "dutlab.sqlite3", data / "queue.sqlite3"]
        files += [Path(f"{f}{suffix}") for f in files for suffix in ("-wal", "-shm") if Path(f"{f}{suffix}").exists()]
        assert len(files) >= 4
        for path in [*files, tmp_path / "etc" / "secret_key"]:
            assert mode(path) == 0o600, (path, oct(mode(path)))
        archive = Path(lab.cli("backup").stdout.strip().splitlines()[-1])
        assert mode(archive) == 0o600
        assert "mode 0" not in lab.log("serve")
        (data / "dutlab.sqlite3").chmod(0o644)
        lab.restart("serve")
        log = lab.log("serve")
        assert f"{data / 'dutlab.sqlite3'} has mode 0644" in log and f"chmod 600 {data / 'dutlab.sqlite3'}" in log
        page = http("GET", lab.url + "/")
        assert page.status == 200 and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
    finally:
        lab.stop()


@pytest.mark.slow
def test_a_worker_refuses_a_file_url_outside_its_file_roots(tmp_path):
    ok, why = worker_available()
    if not ok:
        pytest.skip(why)
    lab, stop = start_lab(tmp_path)
    try:
        lab.add_worker("worker1")
        lab.add_qemu_device("qemu01", "worker1", health="Good")
        lab.start_worker("worker1")
        lab.wait_worker_online("worker1")
        job = f"""\
job_name: reads the worker's files
device_type: qemu
visibility: public
timeouts: {{job: {{minutes: 2}}}}
context: {{arch: amd64}}
actions:
- deploy:
    to: tmpfs
    images:
      kernel: {{url: "file:///etc/passwd", image_arg: "-kernel {{kernel}}"}}
      initrd: {{url: "file://{ASSETS}/amd64/initramfs.cpio.gz", image_arg: "-initrd {{initrd}}"}}
- boot: {{method: qemu, media: tmpfs, prompts: ['# ']}}
"""
        job_id = lab.submit(job)
        done = lab.wait_job(job_id, timeout=120)
        assert done["health"] == "Incomplete" and done["error_type"] == "Job", done
        assert "file:///etc/passwd" in done["error_msg"] and "file_roots" in done["error_msg"]
        assert "/var/cache/dutlab" in done["error_msg"]
        logs = lab.api("GET", f"/api/v1/jobs/{job_id}/logs").text
        assert "root:x:0:0" not in logs
        assert lab.json("GET", "/api/v1/devices/qemu01")["health"] == "Good"  # the job's fault, not the device's
    finally:
        stop()
