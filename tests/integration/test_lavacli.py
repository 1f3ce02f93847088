"""lavacli 3.1.0, run unchanged as a subprocess, against a live dutlab server over /RPC2.

The test plays the worker itself through /internal/v1 (docs/worker-api.md) so a job can be
Running and stream its log while lavacli follows it; no device is needed. The expected output
is what lavacli prints for LAVA's answers in the same situation (lava-interfaces.md §1).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from labkit import LabServer, http

LAVACLI = Path(sys.executable).parent / "lavacli"
QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"
JOB = """\
job_name: lavacli job
device_type: qemu
visibility: public
timeouts:
  job: {minutes: 5}
context: {arch: amd64}
actions:
- boot: {method: qemu, media: tmpfs, prompts: ['# ']}
"""


# Helpers ##########################################################################


@dataclass
class Lavacli:
    """lavacli with its own XDG_CONFIG_HOME; identity `dutlab` is the lab's admin."""

    lab: LabServer
    home: Path
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # unbuffered: a following `jobs logs` must show lines as they arrive, not when it exits
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.env.pop("FORCE_COLOR", None)

    def identity(self, name: str, username: str | None = None, token: str | None = None) -> None:
        extra = ["--username", username, "--token", token] if username else []
        self.run("identities", "add", name, "--uri", f"{self.lab.url}/RPC2", *extra, identity=None)

    def cmd(self, args: tuple[str, ...], identity: str | None) -> list[str]:
        return [str(LAVACLI), *(["-i", identity] if identity else []), *args]

    def run(self, *args: str, identity: str | None = "dutlab", ok: bool | None = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.cmd(args, identity), capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if ok is not None and (proc.returncode == 0) != ok:
            raise AssertionError(f"lavacli {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n"
                                 f"{proc.stderr}\n{self.lab.log('serve')}")
        return proc

    def fails(self, *args: str, identity: str | None = "dutlab") -> str:
        """stderr of a command that must fail (lavacli exits 1 and prints the fault)."""
        proc = self.run(*args, identity=identity, ok=False)
        assert proc.returncode == 1
        return proc.stderr.strip()

    def popen(self, *args: str, identity: str = "dutlab") -> Follower:
        return Follower(subprocess.Popen(self.cmd(args, identity), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=self.env))


class Follower:
    """A running lavacli whose output is read as it comes, character by character (`jobs wait`
    prints the state name without a newline)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.text = ""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while char := self.proc.stdout.read(1):
            with self.lock:
                self.text += char

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"lavacli did not print {text!r}; so far: {self.text!r}")
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> tuple[int, list[str], str]:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code, self.text.splitlines(), self.proc.stderr.read()


def record(msg: object, lvl: str = "target") -> str:
    return json.dumps({"dt": dt.datetime.now(dt.UTC).isoformat(), "lvl": lvl, "msg": msg})


class FakeWorker:
    """The worker side of docs/worker-api.md, driven by the test."""

    def __init__(self, lab: LabServer, name: str, token: str) -> None:
        self.lab, self.name, self.token = lab, name, token
        self.job_tokens: dict[int, str] = {}
        self.lines: dict[int, int] = {}

    def poll(self, wait: float = 0) -> dict:
        r = http("POST", f"{self.lab.url}/internal/v1/workers/{self.name}/poll",
                 {"protocol": 1, "version": "fake", "running": list(self.job_tokens), "wait": wait},
                 auth=f"Worker {self.token}")
        assert r.status == 200, r.text
        return r.json()

    def start(self, tries: int = 30) -> int:
        """Take the next job, fetch it and report it Running; return its id."""
        for _ in range(tries):
            offers = self.poll(wait=1)["start"]
            if offers:
                [offer] = offers
                job_id = offer["id"]
                self.job_tokens[job_id] = offer["token"]
                assert self.call(job_id, "GET", "").status == 200
                assert self.call(job_id, "POST", "/state", {"state": "Running"}).status == 200
                self.lines[job_id] = 0
                return job_id
        raise AssertionError(f"no job offered:\n{self.lab.log('serve')}\n{self.lab.log('consumer')}")

    def call(self, job_id: int, method: str, suffix: str, body=None):
        return http(method, f"{self.lab.url}/internal/v1/jobs/{job_id}{suffix}", body,
                    auth=f"Job {self.job_tokens[job_id]}")

    def log(self, job_id: int, *records: str) -> None:
        r = self.call(job_id, "POST", "/logs", {"index": self.lines[job_id], "lines": list(records)})
        assert r.status == 200, r.text
        self.lines[job_id] = r.json()["line_count"]

    def finish(self, job_id: int, result: str = "pass", error_type: str = "", error_msg: str = "") -> None:
        r = self.call(job_id, "POST", "/finish", {"result": result, "error_type": error_type,
                                                   "error_msg": error_msg, "log_line_count": self.lines[job_id]})
        assert r.status == 200, r.text
        del self.job_tokens[job_id]


@pytest.fixture
def cli(lab_server, tmp_path) -> Lavacli:
    cli = Lavacli(lab_server, tmp_path / "xdg")
    cli.identity("dutlab", "admin", lab_server.admin_token)
    cli.identity("anonymous")
    return cli


@pytest.fixture
def lab(lab_server, tmp_path) -> LabServer:
    """A qemu device on worker w1, which the test drives as `lab.worker`."""
    token = lab_server.add_worker("w1")
    lab_server.add_qemu_device("qemu01", worker="w1", dictionary=QEMU_DICT)
    # Offline until the test polls as the worker: jobs stay Submitted until then
    lab_server.worker = FakeWorker(lab_server, "w1", token)
    return lab_server


def job_file(tmp_path: Path, text: str = JOB, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def submit(cli: Lavacli, tmp_path: Path, text: str = JOB) -> int:
    return int(cli.run("jobs", "submit", job_file(tmp_path, text)).stdout.strip())


# Identities, system ###############################################################


def test_identities_version_whoami(cli, lab_server):
    config = yaml.safe_load((cli.home / "lavacli.yaml").read_text())
    assert config["dutlab"] == {"uri": f"{lab_server.url}/RPC2", "username": "admin",
                                "token": lab_server.admin_token}
    assert config["anonymous"] == {"uri": f"{lab_server.url}/RPC2"}
    assert cli.run("system", "version").stdout == "2025.12\n"
    assert cli.run("system", "api").stdout == "2\n"
    assert cli.run("system", "whoami").stdout == "admin\n"
    assert cli.run("system", "whoami", identity="anonymous").stdout == "<AnonymousUser>\n"
    # --uri works without any identity, as against LAVA
    out = cli.run("--uri", f"{lab_server.url}/RPC2/", "system", "version", identity=None).stdout
    assert out == "2025.12\n"


def test_wrong_token_is_an_http_401(cli, lab_server):
    cli.identity("wrong", "admin", "not-the-token")
    err = cli.fails("system", "version", identity="wrong")
    assert err.startswith("Unable to connect: 401 Client Error: Unauthorized for url:"), err
    # a valid token of another user is wrong too: the username must match
    bob = lab_server.add_user("bob")
    cli.identity("mixed", "admin", bob)
    assert "401" in cli.fails("system", "whoami", identity="mixed")


# Jobs #############################################################################


def test_submit_show_list_definition_cancel_resubmit(cli, lab, tmp_path):
    job_id = submit(cli, tmp_path)
    url = cli.run("jobs", "submit", "--url", job_file(tmp_path)).stdout.strip()
    assert url == f"http://127.0.0.1:{lab.port}/scheduler/job/{job_id + 1}"
    page = http("GET", url)  # the link leads to the job's web page (LAVA's job page URL)
    assert page.status == 200 and f"<h1>Job {job_id + 1} <small>lavacli job</small></h1>" in page.text, page.text[:300]

    show = cli.run("jobs", "show", str(job_id)).stdout.splitlines()
    assert len(show) == 14 and show[11].startswith("submit time : 20")
    assert show[:11] + show[12:] == [
        f"id          : {job_id}", "description : lavacli job", "submitter   : admin", "device-type : qemu",
        "device      : None", "health-check: False", "state       : Submitted", "Health      : Unknown",
        "pipeline    : True", "tags        : []", "visibility  : Public", "start time  : None", "end time    : None"]

    data = json.loads(cli.run("jobs", "show", str(job_id), "--json").stdout)
    assert set(data) == {"id", "description", "device", "device_type", "health_check", "pipeline", "health",
                         "state", "submitter", "submit_time", "start_time", "end_time", "tags", "visibility",
                         "failure_comment", "error_msg", "error_type"}
    assert data["submit_time"].startswith("20") and "T" in data["submit_time"] and data["end_time"] is None
    assert yaml.safe_load(cli.run("jobs", "show", str(job_id), "--yaml").stdout)["state"] == "Submitted"

    assert cli.run("jobs", "definition", str(job_id)).stdout == JOB + "\n"
    queue_out = cli.run("jobs", "queue", "qemu").stdout.splitlines()
    assert queue_out[0] == "Jobs (from 1 to 25):" and f"* {job_id}: admin (lavacli job) - qemu" in queue_out

    assert cli.run("jobs", "cancel", str(job_id + 1)).stdout == ""
    listed = cli.run("jobs", "list").stdout.splitlines()
    assert listed == ["Jobs (from 1 to 25):", f"* {job_id + 1}: Finished,Canceled [admin] (lavacli job) - qemu",
                      f"* {job_id}: Submitted,Unknown [admin] (lavacli job) - qemu"]
    assert cli.run("jobs", "list", "--state", "FINISHED", "--health", "CANCELED").stdout.splitlines()[1:] == \
        [f"* {job_id + 1}: Finished,Canceled [admin] (lavacli job) - qemu"]
    assert cli.run("jobs", "list", "--state", "RUNNING").stdout.splitlines() == ["Jobs (from 1 to 25):"]
    verbose = json.loads(cli.run("jobs", "list", "--verbose", "--json", "--limit", "1").stdout)
    assert [set(j) for j in verbose] == [{"id", "description", "device_type", "health", "state", "submitter",
                                          "actual_device", "start_time", "end_time", "error_msg", "error_type"}]
    assert cli.run("jobs", "cancel", str(job_id + 1)).returncode == 0  # finished: silently ignored
    assert cli.run("jobs", "autocancel", "--duration", "1", "--dry-run").stdout == ""  # nothing is running

    new = int(cli.run("jobs", "resubmit", str(job_id + 1)).stdout.strip())
    assert new == job_id + 2
    assert cli.run("jobs", "definition", str(new)).stdout == JOB + "\n"
    # the configuration exists once a job has started
    err = cli.fails("jobs", "config", str(job_id))
    assert err == f"Unable to call 'jobs.config': <Fault 404: \"Job '{job_id}' has not started yet\">"


def test_follow_streams_a_running_job_until_it_finishes(cli, lab, tmp_path):
    follower = cli.popen("jobs", "submit", job_file(tmp_path), "--follow", "--polling", "1")
    worker = lab.worker
    job_id = worker.start()
    worker.log(job_id, *(record(f"boot line {i}") for i in range(5)))
    follower.wait_for("boot line 4")  # printed while the job still runs
    assert follower.proc.poll() is None
    wait = cli.popen("jobs", "wait", str(job_id), "--polling", "1")
    wait.wait_for("Running")
    worker.log(job_id, record("start: 1 test", "info"),
               record({"definition": "0_smoke", "case": "ok", "result": "pass"}, "results"),
               record({"definition": "0_smoke", "case": "speed", "result": "pass", "measurement": 12.5,
                       "units": "MB/s"}, "results"),
               record({"definition": "0_smoke", "case": "bad", "result": "fail"}, "results"))
    follower.wait_for("'case': 'bad'")
    worker.log(job_id, record({"definition": "lava", "case": "job", "result": "fail"}, "results"),
               record("the end", "error"))
    worker.finish(job_id, "fail", "Test", "a test failed")
    code, lines, err = follower.finish()
    assert code == 0, err
    boot = [line for line in lines if "boot line" in line]
    assert [b.split(" ", 1)[1] for b in boot] == [f"boot line {i}" for i in range(5)]  # once each, in order
    assert lines[-2].endswith(" the end")
    assert lines[-1].endswith(" [lavacli] Failure comment: a test failed")
    code, waited, _ = wait.finish()
    assert code == 0 and waited[0].startswith("Running")

    # the whole log again, and slices of it by line number
    everything = cli.run("jobs", "logs", str(job_id)).stdout.splitlines()
    assert everything[:-1] == lines[:-1] and len(everything) == 12  # the comment line has a new time
    part = cli.run("jobs", "logs", str(job_id), "--start", "2", "--end", "4", "--polling", "1").stdout.splitlines()
    assert [p.split(" ", 1)[1] for p in part[:2]] == ["boot line 2", "boot line 3"]
    assert len(part) == 3 and "Failure comment" in part[2]  # printed once the job is finished
    results = cli.run("jobs", "logs", str(job_id), "--filters", "results", "--no-follow").stdout.splitlines()
    assert len(results) == 4 and all("'definition'" in r for r in results)
    raw = yaml.safe_load(cli.run("jobs", "logs", str(job_id), "--raw", "--start", "10").stdout)
    assert raw[0] == {"dt": raw[0]["dt"], "lvl": "error", "msg": "the end"} and len(raw) == 2

    show = json.loads(cli.run("jobs", "show", str(job_id), "--json").stdout)
    assert (show["state"], show["health"], show["device"]) == ("Finished", "Incomplete", "qemu01")
    assert (show["failure_comment"], show["error_type"], show["error_msg"]) == ("a test failed", "Test",
                                                                                 "a test failed")
    assert cli.run("jobs", "wait", str(job_id)).stdout == ""  # already finished: returns at once
    assert cli.run("jobs", "list", "--health", "INCOMPLETE").stdout.splitlines()[1:] == \
        [f"* {job_id}: Finished,Incomplete [admin] (lavacli job) - qemu"]

    errors = cli.run("jobs", "find-errors", "--limit", "5").stdout
    assert "[1] a test failed (Devices: qemu01)" in errors
    quiet = cli.run("jobs", "logs", str(job_id), "--quiet").stdout  # labels actions from jobs.definition
    assert "'case': 'bad'" in quiet or "bad" in quiet

    dest = tmp_path / "config"
    cli.run("jobs", "config", str(job_id), "--dest", str(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["definition.yaml", "device.yaml"]
    assert "qemu-system-x86_64" in (dest / "device.yaml").read_text()

    # results, as lavacli prints them from LAVA's export dicts
    assert cli.run("results", str(job_id)).stdout.splitlines() == [
        "Results:", "* 0_smoke.ok [pass]", "* 0_smoke.speed [pass]", "* 0_smoke.bad [fail]", "* lava.job [fail]"]
    assert cli.run("results", str(job_id), "0_smoke").stdout.splitlines()[1:] == [
        "* 0_smoke.ok [pass]", "* 0_smoke.speed [pass]", "* 0_smoke.bad [fail]"]
    assert cli.run("results", str(job_id), "0_smoke", "bad").stdout == "fail\n"
    [speed] = yaml.safe_load(cli.run("results", str(job_id), "0_smoke", "speed", "--yaml").stdout)
    assert set(speed) == {"name", "job", "suite", "result", "measurement", "unit", "level", "url", "id", "logged",
                          "log_start_line", "log_end_line", "metadata"}
    assert (float(speed["measurement"]), speed["unit"], speed["job"]) == (12.5, "MB/s", str(job_id))
    assert json.loads(cli.run("results", str(job_id), "lava", "--json").stdout)[0]["name"] == "job"
    err = cli.fails("results", str(job_id), "nope")
    assert err.startswith("Unable to call 'results': <Fault 404:"), err


def test_logs_no_follow_on_a_running_job_and_wait_timeout(cli, lab, tmp_path):
    job_id = submit(cli, tmp_path)
    worker = lab.worker
    assert worker.start() == job_id
    # nothing logged yet: nothing printed, and --no-follow returns at once
    assert cli.run("jobs", "logs", str(job_id), "--no-follow").stdout == ""
    worker.log(job_id, record("hello"))
    out = cli.run("jobs", "logs", str(job_id), "--no-follow").stdout.splitlines()
    assert len(out) == 1 and out[0].endswith(" hello")
    proc = cli.run("jobs", "wait", str(job_id), "--polling", "1", "--timeout", "1", ok=False)
    assert proc.returncode == 1 and proc.stdout.startswith("Running") and proc.stdout.endswith("timeout!\n")
    worker.finish(job_id)
    assert json.loads(cli.run("jobs", "show", str(job_id), "--json").stdout)["health"] == "Complete"


def test_validate_and_unsupported_actions(cli, lab, tmp_path):
    assert cli.run("jobs", "validate", job_file(tmp_path)).stdout == ""
    bad = JOB.replace("method: qemu", "method: barebox")
    proc = cli.run("jobs", "validate", job_file(tmp_path, bad, "bad.yaml"), ok=False)
    assert proc.stdout.splitlines()[0] == "key: actions[0].boot.method"
    assert proc.stdout.splitlines()[1].startswith("msg: The boot method 'barebox' is a LAVA method dutlab does not")
    assert "qemu" in proc.stdout and "minimal" in proc.stdout and "u-boot" in proc.stdout  # what is supported
    err = cli.fails("jobs", "submit", job_file(tmp_path, bad, "bad.yaml"))
    assert err.startswith(f"Unable to submit {tmp_path}/bad.yaml: <Fault 400: \"Problem with submitted job data: "
                          "actions[0].boot.method: The boot method 'barebox'"), err
    missing = JOB.replace("device_type: qemu", "device_type: beagle")
    err = cli.fails("jobs", "submit", job_file(tmp_path, missing, "missing.yaml"))
    assert "<Fault 404: \"Specified device or device type not found" in err
    # the definition is checked before anything is stored
    assert cli.run("jobs", "list").stdout.splitlines() == ["Jobs (from 1 to 25):"]


def test_errors_lavacli_prints_as_against_lava(cli, lab, tmp_path):
    err = cli.fails("jobs", "show", "999")
    assert err == "Unable to call 'jobs.show': <Fault 404: \"Job '999' was not found.\">"
    assert cli.fails("jobs", "logs", "nope").endswith("<Fault 404: \"Job 'nope' was not found.\">")
    err = cli.fails("jobs", "submit", job_file(tmp_path), identity="anonymous")
    assert err.endswith("<Fault 401: 'Authentication with user and token required for this API.'>"), err
    assert "<Fault 401:" in cli.fails("results", "1", identity="anonymous")

    bob = lab.add_user("bob")
    cli.identity("bob", "bob", bob)
    err = cli.fails("devices", "add", "qemu09", "--type", "qemu", "--worker", "w1", identity="bob")
    assert err == ("Unable to call 'devices.add': <Fault 403: \"User 'bob' is missing permission "
                   "lava_scheduler_app.add_device.\">")
    # a device restricted to its owner: bob may neither read its dictionary nor submit to it
    lab.manage("devices", "update", "qemu01", "--owner", "admin")
    err = cli.fails("devices", "dict", "get", "qemu01", identity="bob")
    assert err.startswith("Unable to call 'devices.dict': <Fault 403:"), err
    err = cli.fails("jobs", "submit", job_file(tmp_path), identity="bob")
    assert "<Fault 403:" in err and "restricted" in err
    # bob may not cancel the admin's job
    job_id = submit(cli, tmp_path)
    err = cli.fails("jobs", "cancel", str(job_id), identity="bob")
    assert err == f"Unable to cancel job {job_id}: <Fault 403: 'Permission denied.'>"
    # a private job is not shown to others
    private = JOB.replace("visibility: public", "visibility: personal")
    job_id = submit(cli, tmp_path, private)
    err = cli.fails("jobs", "show", str(job_id), identity="bob")
    assert err == f"Unable to call 'jobs.show': <Fault 403: \"Job '{job_id}' not available to user 'bob'.\">"
    assert f"* {job_id}:" not in cli.run("jobs", "list", identity="bob").stdout
    assert f"* {job_id}:" in cli.run("jobs", "list").stdout


# Workers: the files the server keeps for each (LAVA's dispatcher.d/<worker>.yaml, env.yaml) #


def test_worker_config_and_env_round_trip_and_reach_its_jobs(cli, lab, tmp_path):
    """`workers config|env|env-dut get|set|delete` as against LAVA; each job the worker fetches
    carries what is set then (the real worker applying it: test_worker.py)."""
    config = "# LAVA's dispatcher.d/w1.yaml\ndispatcher_ip: 192.0.2.7\nprefix: lab-\n"
    env = "purge: false\nremoves: [LANG]\noverrides:\n  http_proxy: http://proxy.lab:3128\n"
    env_dut = "overrides: {MIRROR: 'http://mirror.lab'}\n"
    shown = json.loads(cli.run("workers", "show", "w1", "--json").stdout)
    assert (shown["default_config"], shown["default_env"], shown["default_env_dut"]) == (True, True, True)
    assert "Worker 'w1' does not have a configuration" in cli.fails("workers", "config", "get", "w1")
    for noun, text in (("config", config), ("env", env), ("env-dut", env_dut)):
        assert cli.run("workers", noun, "set", "w1", job_file(tmp_path, text, f"{noun}.yaml")).stdout == ""
        assert cli.run("workers", noun, "get", "w1").stdout == text
    shown = json.loads(cli.run("workers", "show", "w1", "--json").stdout)
    assert (shown["default_config"], shown["default_env"], shown["default_env_dut"]) == (False, False, False)
    # refused as the worker would refuse it, and the stored file stays
    err = cli.fails("workers", "env", "set", "w1", job_file(tmp_path, "overrides: [A=1]\n", "bad.yaml"))
    assert "<Fault 400: 'env: overrides must be a mapping NAME: value'>" in err, err
    assert cli.run("workers", "env", "get", "w1").stdout == env

    first = submit(cli, tmp_path)
    assert lab.worker.start() == first
    package = lab.worker.call(first, "GET", "").json()
    assert package["dispatcher"] == {"dispatcher_ip": "192.0.2.7", "prefix": "lab-"}
    assert package["env"] == {"purge": False, "removes": ["LANG"], "overrides": {"http_proxy": "http://proxy.lab:3128"}}
    assert package["env_dut"]["overrides"] == {"MIRROR": "http://mirror.lab"}
    lab.worker.finish(first)
    # the next job sees the change
    cli.run("workers", "env", "set", "w1", job_file(tmp_path, "overrides: {http_proxy: ''}\n", "env2.yaml"))
    cli.run("workers", "config", "delete", "w1")
    second = submit(cli, tmp_path)
    assert lab.worker.start() == second
    package = lab.worker.call(second, "GET", "").json()
    assert (package["dispatcher"], package["env"]["overrides"]) == ({}, {"http_proxy": ""})
    assert "Worker 'w1' does not have a configuration" in cli.fails("workers", "config", "get", "w1")


# The reference's QEMU jobs ########################################################

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "lava-interfaces.md"
GOOD_JOBS = Path(__file__).resolve().parents[1] / "data" / "good-jobs"
# Verbatim copies of the reference's jobs, so the tests run where ../shared is absent.
REFERENCE_COPIES = {"5.7": GOOD_JOBS / "lava-qemu-amd64.yaml", "5.8": GOOD_JOBS / "lava-qemu-aarch64.yaml"}


def reference_block(section: str) -> str:
    """The YAML block of §5.7 / §5.8 in the reference, verbatim."""
    text = REFERENCE.read_text()
    start = text.index(f"### {section}")
    block = text[text.index("```yaml\n", start) + 8:]
    return block[:block.index("```")]


def reference_job(section: str) -> str:
    return reference_block(section) if REFERENCE.exists() else REFERENCE_COPIES[section].read_text()


@pytest.mark.parametrize("section", ["5.7", "5.8"])
def test_reference_copies_are_verbatim(section):
    if not REFERENCE.exists():
        pytest.skip("the LAVA reference is not next to this checkout: the copies cannot be compared")
    assert REFERENCE_COPIES[section].read_text() == reference_block(section)


@pytest.mark.parametrize("section", ["5.7", "5.8"])
def test_reference_qemu_jobs_are_accepted(cli, lab, tmp_path, section):
    text = reference_job(section)
    # only the URLs change: the image server of the lab instead of LAVA's
    text = text.replace("http://images.validation.linaro.org/", "http://images.lab.example/")
    assert "images.lab.example" in text
    path = job_file(tmp_path, text, f"{section}.yaml")
    assert cli.run("jobs", "validate", path).stdout == ""
    job_id = int(cli.run("jobs", "submit", path).stdout.strip())
    assert cli.run("jobs", "definition", str(job_id)).stdout == text + "\n"


def definitions_repository(tmp_path: Path) -> str:
    """examples/test-definitions (Linaro's layout) as a git repository; its file:// URL."""
    repo = tmp_path / "test-definitions"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "test-definitions", repo)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "test definitions"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env)
    return f"file://{repo}"


@pytest.mark.qemu
@pytest.mark.slow
def test_reference_amd64_disk_image_job_runs(cli, lab_server, tmp_path):
    """§5.7 as it is, but for its two URLs: a qcow2.xz disk image booted from its own
    bootloader, auto_login as root, the smoke and meminfo definitions cloned from git."""
    from dispatcher_fixtures import assets_for

    disk = assets_for("amd64") / "disk.qcow2.xz"
    assert disk.exists(), f"{disk} is missing: run scripts/build-qemu-assets.sh --arch amd64"
    original = reference_job("5.7")
    text = original.replace("http://images.validation.linaro.org/kvm/debian-sid-2014_08_21-amd64.qcow2.xz",
                            f"file://{disk}")
    text = text.replace("https://github.com/Linaro/test-definitions", definitions_repository(tmp_path))
    changed = [(a, b) for a, b in zip(original.splitlines(), text.splitlines(), strict=True) if a != b]
    assert [a.split(":")[0].strip() for a, _ in changed] == ["url", "- repository", "- repository"]

    lab_server.start_worker()
    lab_server.add_qemu_device()
    path = job_file(tmp_path, text, "5.7.yaml")
    proc = cli.run("jobs", "submit", path, "--follow", "--polling", "1", timeout=900)
    out = proc.stdout
    job_id = json.loads(cli.run("jobs", "list", "--json", "--limit", "1").stdout)[0]["id"]
    show = json.loads(cli.run("jobs", "show", str(job_id), "--json").stdout)
    assert (show["state"], show["health"]) == ("Finished", "Complete"), out[-4000:]
    # booted from the disk (no -kernel), logged in as root, prompt of the Debian image
    command = next(line for line in out.splitlines() if "QEMU command:" in line).split()
    assert "format=qcow2,file=" in " ".join(command) and "-kernel" not in command, command
    assert "debian login:" in out and "root@debian:~#" in out
    results = cli.run("results", str(job_id)).stdout.splitlines()
    for case in ("pwd", "uname", "ip", "free", "df", "ps"):
        assert f"* 0_smoke-tests.{case} [pass]" in results, results
    suite = yaml.safe_load(cli.run("results", str(job_id), "1_meminfo", "--yaml").stdout)
    by_name = {case["name"]: case for case in suite}
    assert by_name["meminfo-read"]["result"] == "pass"
    assert float(by_name["MemTotal"]["measurement"]) > 100_000 and by_name["MemTotal"]["unit"] == "kB"
    assert all(case["result"] == "pass" for case in suite)
    # the definitions are recorded with the repository and commit they came from
    lava = yaml.safe_load(cli.run("results", str(job_id), "lava", "--yaml").stdout)
    assert {case["name"] for case in lava} >= {"0_smoke-tests", "1_meminfo", "job"}


# End to end: a real dutlab-worker boots QEMU while lavacli follows ##############

E2E_JOB = """\
device_type: qemu
job_name: lavacli arm64 kernel+initrd

timeouts:
  job:
    minutes: 5
  action:
    minutes: 3
priority: medium
visibility: public
context:
  arch: arm64
  machine: virt
  cpu: cortex-a57

metadata:
  source: dutlab tests
  path: tests/integration/test_lavacli.py

actions:
- deploy:
    timeout:
      minutes: 2
    to: tmpfs
    images:
      kernel:
        image_arg: -kernel {kernel}
        url: file://ASSETS/vmlinuz
      initrd:
        image_arg: -initrd {initrd}
        url: file://ASSETS/initramfs.cpio.gz

- boot:
    timeout:
      minutes: 3
    method: qemu
    media: tmpfs
    prompts:
    - 'PROMPT'

- test:
    timeout:
      minutes: 2
    definitions:
    - from: inline
      name: arch
      path: inline/arch.yaml
      repository:
        metadata:
          format: Lava-Test Test Definition 1.0
          name: arch
        run:
          steps:
          - lava-test-case machine --shell 'uname -m | grep -qx aarch64'
"""


@pytest.mark.qemu
@pytest.mark.slow
def test_follow_a_real_qemu_job_end_to_end(cli, lab_server, tmp_path):
    from dispatcher_fixtures import PROMPT, assets_for

    text = E2E_JOB.replace("ASSETS", str(assets_for("arm64"))).replace("PROMPT", PROMPT)
    lab_server.start_worker()
    lab_server.add_qemu_device()
    path = job_file(tmp_path, text)
    assert cli.run("jobs", "validate", path).stdout == ""
    proc = cli.run("jobs", "submit", path, "--follow", "--polling", "1", timeout=600)
    out = proc.stdout
    assert "qemu-system-aarch64" in out and "'case': 'machine'" in out, out[-3000:]
    job_id = json.loads(cli.run("jobs", "list", "--json", "--limit", "1").stdout)[0]["id"]
    show = json.loads(cli.run("jobs", "show", str(job_id), "--json").stdout)
    assert (show["state"], show["health"], show["device"]) == ("Finished", "Complete", "qemu01"), out[-3000:]
    results = cli.run("results", str(job_id)).stdout.splitlines()
    assert any(line.endswith(".machine [pass]") for line in results), results
    assert "* lava.job [pass]" in results
