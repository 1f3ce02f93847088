"""The restore drill (docs/backup.md): back up a running lab, wipe it, restore onto a fresh install.

Runs on SQLite and, with DUTLAB_TEST_DATABASE=postgresql://..., on PostgreSQL (pg_dump/pg_restore).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import yaml
from playhouse.db_url import connect

from dutlab.service.states import DeviceHealth
from labkit import TEST_SETTINGS, LabServer, backend_urls, http

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
JOB = """\
job_name: {name}
device_type: {device_type}
visibility: public
timeouts:
  job: {{minutes: 5}}
context: {{arch: amd64}}
actions:
- boot: {{method: qemu, media: tmpfs, prompts: ['# ']}}
"""


def rec(i: int, lvl: str = "target", msg: object = None) -> str:
    return json.dumps({"dt": "2026-01-01T00:00:00+00:00", "lvl": lvl,
                       "msg": msg if msg is not None else f"line {i}: µs ✓ \\ \"quoted\""})


def database_url(lab: LabServer) -> str:
    return yaml.safe_load(lab.config.read_text())["database"]


def table_rows(url: str) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every row of every table, ordered by its key: what a restore must give back."""
    db = connect(url)
    try:
        dump = {}
        for table in db.get_tables():
            if table.startswith("sqlite_"):
                continue
            columns = [c.name for c in db.get_columns(table)]
            key = "id" if "id" in columns else columns[0]
            dump[table] = (columns, db.execute_sql(f'SELECT * FROM "{table}" ORDER BY "{key}"').fetchall())
        return dump
    finally:
        db.close()


def checksums(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def drop_database(url: str) -> None:
    """Wipe a PostgreSQL test database (the fixture's own cleanup tolerates it being gone)."""
    import psycopg2

    base, _, name = url.rpartition("/")
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND usename = current_user", (name,))  # not an autovacuum worker (a superuser's)
    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


class FakeWorker:
    """The worker side of the worker API: takes a job, uploads its log and results, finishes it."""

    def __init__(self, lab: LabServer, name: str, token: str) -> None:
        self.lab, self.name, self.token = lab, name, token

    def poll(self, wait: float = 0.0) -> dict:
        r = http("POST", f"{self.lab.url}/internal/v1/workers/{self.name}/poll",
                 {"protocol": 1, "version": "test", "running": [], "wait": wait}, auth=f"Worker {self.token}")
        assert r.status == 200, r.text
        return r.json()

    def take(self) -> tuple[int, callable]:
        """Take the next job and mark it Running; returns its id and a caller of its job endpoints."""
        for _ in range(20):
            start = self.poll(wait=2)["start"]
            if start:
                break
        else:
            raise AssertionError("no job offered")
        job_id, token = start[0]["id"], start[0]["token"]

        def call(suffix: str, body: dict) -> dict:
            r = http("POST", f"{self.lab.url}/internal/v1/jobs/{job_id}{suffix}", body, auth=f"Job {token}")
            assert r.status == 200, r.text
            return r.json()

        call("/state", {"state": "Running"})
        return job_id, call

    def run_one(self, lines: int, result: str) -> int:
        job_id, call = self.take()
        log = [rec(i) for i in range(lines)] + [
            rec(lines, "results", {"definition": "0_smoke", "case": "ok", "result": "pass"}),
            rec(lines + 1, "results", {"definition": "0_smoke", "case": "speed", "result": result,
                                       "measurement": 12.5, "units": "MB/s"}),
            rec(lines + 2, "results", {"definition": "lava", "case": "job", "result": result}),
        ]
        for index in range(0, len(log), 100):
            call("/logs", {"index": index, "lines": log[index:index + 100]})
        call("/finish", {"result": result, "log_line_count": len(log), "description": "pipeline: []\n"})
        return job_id


WORKER_FILES = {"config": "# w1's dispatcher.yaml\ndispatcher_ip: 192.0.2.3\n",
                "env": "overrides: {http_proxy: 'http://proxy.lab:3128'}\n", "env-dut": "removes: [LANG]\n"}


def build_lab(lab: LabServer, tmp: Path) -> dict:
    """Users, groups, tokens, device types, devices with dictionaries and tags, finished and queued jobs."""
    etc = tmp / "etc"
    (etc / "device-types").mkdir(parents=True, exist_ok=True)
    (etc / "device-types" / "myboard.jinja2").write_text("{% extends 'qemu.jinja2' %}\n{% set memory = 128 %}\n")
    (etc / "health-checks").mkdir(parents=True, exist_ok=True)
    (etc / "health-checks" / "qemu.yaml").write_text(JOB.format(name="health", device_type="qemu"))
    alice = lab.add_user("alice", "--email", "alice@example.org")
    lab.add_user("bob")
    lab.manage("groups", "add", "devs", "--username", "alice", "--username", "bob", "--submitting")
    lab.manage("device-types", "add", "qemu", "--disable-health-checks", "--description", "emulated")
    lab.manage("device-types", "add", "qemu-spare", "--template", "qemu", "--disable-health-checks")
    worker = FakeWorker(lab, "w1", lab.manage("workers", "add", "w1").stdout.split()[-1])
    lab.manage("workers", "add", "w2", "--description", "spare worker")
    dictionary = tmp / "dict.jinja2"
    dictionary.write_text(QEMU_DICT)
    common = ["--device-type", "qemu", "--dictionary", str(dictionary)]
    lab.manage("devices", "add", "qemu01", "--worker", "w1", *common, "--owner", "alice", "--tags", "fast", "amd64")
    lab.manage("devices", "add", "qemu02", "--worker", "w2", *common, "--group", "devs", "--physical-user", "bob")
    lab.manage("devices", "add", "qemu03", "--worker", "w2", *common, "--offline")
    lab.manage("devices", "add", "qemu04", "--worker", "w2", *common)
    lab.manage("devices", "update", "qemu04", "--health", "RETIRED", "--reason", "broken serial")
    # LAVA's dispatcher.d/w1.yaml and env files, kept by the server (lab/worker_files.py)
    for kind, text in WORKER_FILES.items():
        (tmp / f"w1-{kind}.yaml").write_text(text)
        lab.manage("workers", kind, "set", "w1", str(tmp / f"w1-{kind}.yaml"))
    worker.poll()
    finished = []
    for lines, result in ((250, "pass"), (40, "fail")):
        r = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(name=f"drill {lines}", device_type="qemu")},
                    token=alice)
        assert r.status == 201, r.text
        assert worker.run_one(lines, result) == r.json()["job_ids"][0]
        finished.append(r.json()["job_ids"][0])
    # a job still running when the backup is taken: the restore must name it
    r = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(name="running", device_type="qemu")})
    running, call = worker.take()
    assert running == r.json()["job_ids"][0]
    call("/logs", {"index": 0, "lines": [rec(i) for i in range(5)]})
    # the only device of this type is on a worker that never came online: the job stays queued, and the
    # restore lists it as active
    lab.manage("devices", "add", "spare01", "--worker", "w2", "--device-type", "qemu-spare")
    r = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(name="queued", device_type="qemu-spare")})
    assert r.status == 201, r.text
    for job_id in finished:
        job = lab.wait_job(job_id)
        assert job["health"] in ("Complete", "Incomplete")
        assert len(lab.api("GET", f"/api/v1/jobs/{job_id}/results").json()) == 3
    return {"finished": finished, "running": running, "queued": r.json()["job_ids"][0], "alice": alice,
            "admin": lab.admin_token}


def fresh_install(tmp: Path) -> tuple[LabServer, callable]:
    tmp.mkdir()
    database, queue, cleanup = backend_urls(tmp)
    return LabServer.create(tmp, database=database, queue=queue, settings=TEST_SETTINGS), cleanup


def test_restore_drill(lab_server, tmp_path):
    lab = lab_server
    built = build_lab(lab, tmp_path)
    # the queue consumer would still touch rows (worker heartbeats); the web server keeps running:
    # the backup is taken online
    lab.stop("consumer")
    url = database_url(lab)
    before = table_rows(url)
    logs = checksums(tmp_path / "data" / "jobs")
    config_files = checksums(tmp_path / "etc")
    assert {f"{j}/output.yaml" for j in built["finished"]} <= set(logs)

    archive = tmp_path / "backups" / "lab.tar.gz"
    out = lab.cli("backup", "--output", str(archive))
    assert out.stdout.strip().splitlines()[-1] == str(archive)
    assert archive.stat().st_mode & 0o077 == 0  # password hashes and the secret key inside
    assert table_rows(url) == before  # nothing moved meanwhile, so the comparison below is exact
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert names[-1] == "MANIFEST.json" and set(manifest["members"]) == set(names[:-1])
    assert manifest["dutlab_version"] == lab.cli("version").stdout.strip()
    assert manifest["schema_version"] >= 1 and manifest["database"] in ("sqlite", "postgresql")
    assert manifest["counts"]["worker_files"] == len(WORKER_FILES) and before["worker_file"][1]
    assert {"config/server.yaml", "config/secret_key", "config/template_dirs/0/myboard.jinja2",
            "config/health_checks/qemu.yaml"} <= set(names)

    # the disaster: the server stops and its data is gone
    lab.stop()
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "etc")
    if url.startswith("postgres"):
        drop_database(url)

    new, cleanup = fresh_install(tmp_path / "new")
    try:
        new.cli("migrate")  # as a provisioning run leaves it; an unmigrated database works too
        out = new.cli("restore", str(archive)).stdout
        assert "restore complete" in out and f"jobs {built['running']} were active" in out
        after = table_rows(database_url(new))
        assert set(after) == set(before)
        for table, (columns, rows) in before.items():
            assert after[table][0] == columns, table
            if table == "device":
                compare_devices(columns, rows, after[table][1])
            elif table == "health_history":
                compare_history(columns, rows, after[table][1], before["device"])
            else:
                assert after[table][1] == rows, table
        assert checksums(tmp_path / "new" / "data" / "jobs") == logs
        assert checksums(tmp_path / "new" / "etc") == config_files
        assert (new.config.parent / "server.yaml.from-backup").read_bytes() == archive_member(archive,
                                                                                             "config/server.yaml")
        check_restored_server(new, built, tmp_path / "new" / "data" / "jobs")
    finally:
        new.stop()
        cleanup()


def compare_devices(columns: list[str], old: list[tuple], new: list[tuple]) -> None:
    health = columns.index("health")
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
        assert a[:health] + a[health + 1:] == b[:health] + b[health + 1:]
        want = DeviceHealth.RETIRED if a[health] == DeviceHealth.RETIRED else DeviceHealth.MAINTENANCE
        assert b[health] == want


def compare_history(columns: list[str], old: list[tuple], new: list[tuple], devices: tuple) -> None:
    """The old history unchanged, plus one 'restored from backup' entry per device that changed."""
    assert new[:len(old)] == old
    reason, actor = columns.index("reason"), columns.index("actor")
    added = new[len(old):]
    assert all(r[reason].startswith("restored from backup lab.tar.gz") and "check before use" in r[reason]
               for r in added)
    assert {r[actor] for r in added} == {"dutlab-restore"}
    dev_columns, dev_rows = devices
    health = dev_columns.index("health")
    moved = [d for d in dev_rows if d[health] not in (DeviceHealth.RETIRED, DeviceHealth.MAINTENANCE)]
    assert len(added) == len(moved) >= 2


def archive_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read()


def check_restored_server(new: LabServer, built: dict, jobs: Path) -> None:
    """The restored lab serves the old logs to the old tokens, and new rows get fresh ids."""
    new.start()
    for job_id in built["finished"]:
        log = http("GET", f"{new.url}/api/v1/jobs/{job_id}/logs", token=built["alice"])
        assert log.status == 200 and log.body == (jobs / str(job_id) / "output.yaml").read_bytes()
    for kind, text in WORKER_FILES.items():  # the per-worker files, byte for byte
        assert new.api("GET", f"/api/v1/workers/w1/files/{kind}", token=built["admin"]).json()["text"] == text
    for hostname, health in (("qemu01", "Maintenance"), ("qemu02", "Maintenance"), ("qemu04", "Retired")):
        assert new.api("GET", f"/api/v1/devices/{hostname}", token=built["alice"]).json()["health"] == health
    r = new.api("POST", "/api/v1/jobs", {"definition": JOB.format(name="after restore", device_type="qemu")},
                token=built["alice"])
    assert r.status == 201, r.text
    assert r.json()["job_ids"][0] == built["queued"] + 1


def rewrite_archive(src: Path, dest: Path, manifest_changes: dict | None = None,
                    member_changes: dict[str, bytes] | None = None) -> Path:
    """A copy of `src` with a doctored manifest or member (checksums left as they were)."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w:gz") as tout:
        for member in tin:
            data = tin.extractfile(member).read()
            if member.name == "MANIFEST.json" and manifest_changes:
                data = json.dumps({**json.loads(data), **manifest_changes}).encode()
            data = (member_changes or {}).get(member.name, data)
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
    return dest


def test_restore_refusals(lab_server, tmp_path):
    lab = lab_server
    lab.add_user("carol")
    archive = Path(lab.cli("backup").stdout.strip().splitlines()[-1])
    assert archive.parent == tmp_path / "data" / "backups" and archive.name.startswith("dutlab-backup-")
    # the live install is not empty and its server is running
    r = lab.cli("restore", str(archive), check=False)
    assert r.returncode != 0 and "not empty" in r.stderr and "something listens" in r.stderr

    new, cleanup = fresh_install(tmp_path / "new")
    try:
        cases = {
            "old.tar.gz": ({"dutlab_version": "0.0.1"}, None, "Install dutlab 0.0.1"),
            "schema.tar.gz": ({"schema_version": 99}, None, "holds database schema 99"),
            "kind.tar.gz": ({"database": "postgresql" if "sqlite" in database_url(new) else "sqlite"}, None,
                            "set 'database:'"),
            "damaged.tar.gz": (None, {"config/server.yaml": b"tampered: true\n"}, "checksum mismatch"),
        }
        for name, (manifest, members, message) in cases.items():
            doctored = rewrite_archive(archive, tmp_path / name, manifest, members)
            r = new.cli("restore", str(doctored), check=False)
            assert r.returncode == 1 and message in r.stderr, (name, r.stderr)
        r = new.cli("restore", str(tmp_path / "nothing.tar.gz"), check=False)
        assert r.returncode == 1 and "cannot read the archive" in r.stderr
        # refusals changed nothing: the unmigrated, empty install takes the real archive
        out = new.cli("restore", str(archive)).stdout
        assert "restore complete" in out
        users = table_rows(database_url(new))["user"][1]
        assert [u[1] for u in users] == ["admin", "carol"]
        # now it holds data: a second restore needs --force, which replaces it
        r = new.cli("restore", str(archive), check=False)
        assert r.returncode == 1 and "not empty" in r.stderr
        assert "restore complete" in new.cli("restore", str(archive), "--force").stdout
    finally:
        new.stop()
        cleanup()
