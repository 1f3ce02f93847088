"""One verdict per job definition, whoever asks: REST validate and submit, XML-RPC validate and
submit, and `dutlab-server manage jobs validate` refuse each of the 149 malformed jobs of
tests/data/bad-jobs with the same sentence and the same path (the one the file's header names),
and the same for definitions the schema accepts but the lab refuses (LAB_CASES) or the pipeline
dutlab-run would build on the device refuses (PIPELINE_CASES, in dutlab-run's own words).

Once in process (the `app` fixture, the CLI as a process on the same database) and once over
the wire (a real server, XML-RPC through xmlrpc.client as lavacli sends it).
"""

from __future__ import annotations

import json
import subprocess
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_jobs_api import BAD, DATA, JOB, add_queued_lab, header

import factories
from dutlab.service.states import DeviceHealth
from labkit import BIN

Rpc = Callable[..., object]
GOOD = JOB.format(visibility="public")
#: (file name, definition, path): valid for the schema, refused by the lab's checks
LAB_CASES = [
    ("unknown-device-type.yaml", GOOD.replace("device_type: qemu", "device_type: beagle"), "device_type"),
    ("no-usable-device.yaml", GOOD.replace("device_type: qemu", "device_type: retired"), "device_type"),
    ("unknown-tag.yaml", GOOD + "tags: [nope]\n", "tags[0]"),
    ("unknown-group.yaml", JOB.format(visibility="{group: [nobody]}"), "visibility.group[0]"),
    # a MultiNode group of two on a lab with one device of the type
    ("group-too-big.yaml", (DATA / "good-jobs" / "multinode.yaml").read_text().replace("count: 2", "count: 1")
     .replace("        tags: [tcg]\n", ""), "protocols.lava-multinode.roles.client.count"),
]
INLINE_TEST = """\
- test:
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke}
        run: {steps: [lava-test-case ok --result pass]}
"""
#: (file name, definition, path, part of the message): valid for the schema and the lab's checks,
#: refused by the pipeline dutlab-run builds on the device
PIPELINE_CASES = [
    ("test-without-deploy.yaml", GOOD + INLINE_TEST, "actions[1].test",
     "2 lava-test-shell: a test action needs a deploy action before it"),
    ("boot-method-the-type-lacks.yaml", GOOD.replace("method: qemu, media: tmpfs", "method: u-boot, commands: ramdisk"),
     "actions[0].boot", "qemu01 does not offer boot method 'u-boot' (it offers minimal, qemu)"),
    ("minimal-boot-without-console.yaml", GOOD.replace("method: qemu, media: tmpfs", "method: minimal"),
     "actions[0].boot", "1.1 connect-device: device qemu01 has no commands.connect to reach its console"),
    ("qemu-without-arch.yaml", GOOD.replace("context: {arch: amd64}\n", ""), "actions[0].boot",
     "the device configuration has no QEMU command"),
    ("user-command-the-device-lacks.yaml", GOOD + "- command: {name: relay_on}\n", "actions[1].command",
     "the device has no user command 'relay_on'"),
]


def cases(folder: Path) -> list[tuple[Path, str]]:
    """(file, path at fault) of every case: the corpus as it is, the lab cases written to `folder`."""
    out = [(path, header(path, "path")) for path in BAD]
    for name, text, want in LAB_CASES:
        (folder / name).write_text(text)
        out.append((folder / name, want))
    for name, text, want, _contains in PIPELINE_CASES:
        (folder / name).write_text(text)
        out.append((folder / name, want))
    return out


def lava_fault(path: str, message: str) -> tuple[int, str]:
    """What XML-RPC submit answers for a refused definition: LAVA's three wordings (a MultiNode
    role's lab checks, "role 'x': ...", count as the job's device_type and tags)."""
    field = path.rpartition(".")[2] if message.startswith("role '") else path
    if field == "device_type" and "does not exist" in message:
        return 404, f"Specified device or device type not found: {message}"
    if field in ("device_type", "count") or field.startswith("tags"):
        return 400, f"Device unavailable: {message}"
    return 400, f"Problem with submitted job data: {path + ': ' if path else ''}{message}"


def fault_or_value(call: Callable[[], object]) -> object:
    try:
        return call()
    except xmlrpc.client.Fault as fault:
        return fault


def corpus_failures(api, rpc: Rpc, cli_rows: dict[str, dict], bad: list[tuple[Path, str]]) -> list[str]:
    """Every disagreement between the five answers for each bad job (empty: one verdict)."""
    failures = []
    for path, want in bad:
        text = path.read_text()
        checked = api("POST", "/api/v1/jobs/validate", {"definition": text})
        verdict = checked.json()
        if checked.status != 200 or verdict.get("valid") is not False or verdict.get("path") != want:
            failures.append(f"{path.name}: REST validate {checked.status} {verdict} (want path {want!r})")
            continue
        error = verdict["error"]
        submitted = api("POST", "/api/v1/jobs", {"definition": text})
        if (submitted.status, submitted.json()) != (400, {"error": error, "path": want}):
            failures.append(f"{path.name}: REST submit {submitted.status} {submitted.json()}, validate said {error!r}")
        answer = rpc("scheduler.jobs.validate", text)
        if answer != {"path": want, "msg": error}:
            failures.append(f"{path.name}: XML-RPC validate {answer!r}, REST said {want!r}: {error!r}")
        fault = rpc("scheduler.jobs.submit", text)
        got = (fault.faultCode, fault.faultString) if isinstance(fault, xmlrpc.client.Fault) else fault
        if got != lava_fault(want, error):
            failures.append(f"{path.name}: XML-RPC submit {got!r}, want {lava_fault(want, error)!r}")
        row = cli_rows.get(str(path))
        if row != {"file": str(path), "valid": False, "path": want, "error": error}:
            failures.append(f"{path.name}: manage jobs validate {row!r}, REST said {want!r}: {error!r}")
    return failures


def cli_verdicts(run: Callable[..., subprocess.CompletedProcess], bad: list[tuple[Path, str]]) -> dict[str, dict]:
    """`manage jobs validate --json` of every case in one run: exit 1 and one row per file."""
    proc = run("jobs", "validate", "--json", *(str(path) for path, _ in bad))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    return {row["file"]: row for row in json.loads(proc.stdout)}


# In process ########################################################################


def wsgi_rpc(app) -> Rpc:
    def call(method: str, *params: object) -> object:
        r = app.api("POST", "/RPC2", xmlrpc.client.dumps(params, method, allow_none=True),
                    headers={"Content-Type": "text/xml"})
        return fault_or_value(lambda: xmlrpc.client.loads(r.body, use_builtin_types=True)[0][0])

    return call


@pytest.fixture
def lab(app, settings, tmp_path):
    """A device type qemu with one device on an offline worker, a type with only a retired device,
    and a CLI on the same database."""
    offline = factories.worker("w1", online=False)
    factories.device("qemu01", factories.device_type("qemu"), offline)
    factories.device("old01", factories.device_type("retired"), offline, health=DeviceHealth.RETIRED)
    config = tmp_path / "server.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": settings.data_dir, "database": settings.database, "queue": "memory:",
        "template_dirs": settings.template_dirs, "health_checks_dir": settings.health_checks_dir,
        "secret_key_file": settings.secret_key_file}))

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "dutlab-server"), "--config", str(config), "manage", *args],
                              capture_output=True, text=True, timeout=300)

    app.manage = manage
    return app


def test_every_front_end_gives_the_same_verdict_in_process(lab, tmp_path):
    assert len(BAD) >= 149  # the corpus grows with every new check
    bad = cases(tmp_path)
    failures = corpus_failures(lab.api, wsgi_rpc(lab), cli_verdicts(lab.manage, bad), bad)
    assert not failures, "\n".join(failures)
    assert lab.api("GET", "/api/v1/jobs").json()["count"] == 0  # nothing was stored


def test_pipeline_refusals_are_the_words_dutlab_run_would_use(lab, settings, tmp_path):
    """Each job only the pipeline refuses gets, at submission, the message dutlab-run itself gives
    when it is handed the job and the device's configuration: one verdict, before the job is queued."""
    from dutlab.service import devicecfg
    from dutlab.service.models import Device

    device = Device.get(Device.hostname == "qemu01")
    for name, text, want, contains in PIPELINE_CASES:
        verdict = lab.api("POST", "/api/v1/jobs/validate", {"definition": text}).json()
        assert (verdict["valid"], verdict["path"]) == (False, want), (name, verdict)
        assert contains in verdict["error"], (name, verdict["error"])
        (tmp_path / name).write_text(text)
        config = tmp_path / f"{name}.device.yaml"
        config.write_text(devicecfg.render(device, settings, yaml.safe_load(text).get("context") or {}))
        out = tmp_path / f"{name}.out"
        run = subprocess.run([str(BIN / "dutlab-run"), str(tmp_path / name), "--device", str(config), "--output-dir",
                              str(out), "--work-dir", str(tmp_path / "work")], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 1, (name, run.stdout, run.stderr)
        result = yaml.safe_load((out / "result.yaml").read_text())
        assert (result["error_type"], result["error_msg"]) == ("Job", verdict["error"]), name
    # what the pipeline accepts is stored with its description and compatibility
    good = lab.api("POST", "/api/v1/jobs", {"definition": GOOD})
    assert good.status == 201, good.text
    job_id = good.json()["job_ids"][0]
    description = yaml.safe_load((Path(settings.output_dir) / str(job_id) / "description.yaml").read_text())
    assert description["job"]["id"] == job_id and description["compatibility"] >= 1
    assert [a["name"] for a in description["pipeline"]] == ["boot-qemu-image", "finalize"]


def test_manage_jobs_validate_prints_one_verdict_per_file(lab, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(JOB.format(visibility="public"))
    typo = tmp_path / "typo.yaml"
    typo.write_text(JOB.format(visibility="public").replace("qemu, media", "qemuu, media"))
    assert lab.manage("jobs", "validate", str(good)).stdout == f"{good}: valid\n"
    proc = lab.manage("jobs", "validate", str(good), str(typo))
    assert proc.returncode == 1
    first, second = proc.stdout.splitlines()
    assert first == f"{good}: valid"
    assert second.startswith(f"{typo}: invalid at actions[0].boot.method: ") and "qemuu" in second
    # the lab's checks, not only the schema's: the same answer as a submission
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(JOB.format(visibility="public").replace("device_type: qemu", "device_type: beagle"))
    line = lab.manage("jobs", "validate", str(unknown)).stdout.strip()
    assert line.startswith(f"{unknown}: invalid at device_type: device type 'beagle' does not exist")
    missing = lab.manage("jobs", "validate", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr and missing.stdout == ""


# Over the wire #####################################################################


@pytest.fixture
def served(lab_server, tmp_path):
    """As `lab` above, on a real server."""
    lab = add_queued_lab(lab_server, tmp_path)
    lab.manage("device-types", "add", "retired", "--disable-health-checks")
    lab.manage("devices", "add", "old01", "--device-type", "retired", "--worker", "w1")
    lab.manage("devices", "update", "old01", "--health", "RETIRED")
    return lab


def test_every_front_end_gives_the_same_verdict_over_http(served, tmp_path):
    host = served.url.split("//", 1)[1]
    proxy = xmlrpc.client.ServerProxy(f"http://admin:{served.admin_token}@{host}/RPC2", allow_none=True)

    def rpc(method: str, *params: object) -> object:
        return fault_or_value(lambda: getattr(proxy, method)(*params))

    bad = cases(tmp_path)
    rows = cli_verdicts(lambda *args: served.manage(*args, check=False), bad)
    failures = corpus_failures(served.api, rpc, rows, bad)
    assert not failures, "\n".join(failures)
    assert served.api("GET", "/api/v1/jobs").json()["count"] == 0
