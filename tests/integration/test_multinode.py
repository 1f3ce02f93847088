"""MultiNode jobs end to end (docs/multinode.md).

First lavacli 3.1.0 against a real server, with the test playing the worker (no QEMU): sub-ids
from submit, show/definition/list/cancel/resubmit/logs/results on sub-ids and on the group.
Then one lab for the rest of the module: server, consumer, dutlab-coordinator (with a state
file), two real dutlab-workers and three QEMU devices; the jobs boot the QEMU test assets and
talk through the coordinator over the serial console: the two-role example submitted unchanged
through lavacli, a three-node lava-sync/lava-wait-all job during which the coordinator is
restarted, and an essential role that fails.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from test_lavacli import QEMU_DICT, FakeWorker, Lavacli, job_file, record

from labkit import ASSETS, REPO, add_coordinator, http, qemu_available, start_lab, worker_available

GROUP = """\
job_name: lavacli group
visibility: public
timeouts:
  job: {minutes: 5}
protocols:
  lava-multinode:
    roles:
      server: {device_type: qemu, count: 1, context: {arch: amd64}}
      client: {device_type: qemu, count: 1, context: {arch: amd64}}
actions:
- boot: {role: [server, client], method: qemu, media: tmpfs, prompts: ['# ']}
"""


def example_job() -> str:
    """examples/jobs/qemu-multinode.yaml, its images taken from ASSETS (as labkit.smoke_job does)."""
    text = (REPO / "examples" / "jobs" / "qemu-multinode.yaml").read_text()
    return text.replace("file:///var/cache/dutlab/assets", f"file://{ASSETS}")


# lavacli on sub-ids (the test plays the worker) ###################################


@pytest.fixture
def cli(lab_server, tmp_path) -> Lavacli:
    cli = Lavacli(lab_server, tmp_path / "xdg")
    cli.identity("dutlab", "admin", lab_server.admin_token)
    return cli


def start_group(worker: FakeWorker, size: int, tries: int = 30) -> list[int]:
    """Poll until the group's `size` sub-jobs are offered at once; fetch them and report Running."""
    for _ in range(tries):
        offers = worker.poll(wait=1)["start"]
        if offers:
            assert len(offers) == size, offers  # all of the group in one answer, never a part
            for offer in offers:
                worker.job_tokens[offer["id"]] = offer["token"]
                worker.lines[offer["id"]] = 0
                assert worker.call(offer["id"], "POST", "/state", {"state": "Running"}).status == 200
            return [offer["id"] for offer in offers]
    raise AssertionError("the group was never offered")


def test_lavacli_works_on_sub_ids_and_on_the_group(cli, lab_server, tmp_path):
    lab = lab_server
    worker = FakeWorker(lab, "w1", lab.add_worker("w1"))
    for name in ("qemu01", "qemu02"):
        lab.add_qemu_device(name, worker="w1", dictionary=QEMU_DICT)
    path = job_file(tmp_path, GROUP, "group.yaml")
    ids = cli.run("jobs", "submit", path).stdout.split()
    first = int(ids[0].split(".")[0])
    assert ids == [f"{first}.0", f"{first}.1"]
    show = json.loads(cli.run("jobs", "show", ids[1], "--json").stdout)
    assert (show["id"], show["state"], show["device_type"]) == (ids[1], "Submitted", "qemu")
    assert cli.run("jobs", "show", str(first + 1)).stdout.startswith(f"id          : {ids[1]}\n")  # by number too
    assert cli.run("jobs", "definition", ids[1]).stdout == GROUP + "\n"  # the whole group's submission
    listed = cli.run("jobs", "list").stdout.splitlines()
    assert listed[1:] == [f"* {ids[1]}: Submitted,Unknown [admin] (lavacli group) - qemu",
                          f"* {ids[0]}: Submitted,Unknown [admin] (lavacli group) - qemu"]
    rest = lab.json("GET", f"/api/v1/jobs/{ids[1]}")
    assert (rest["id"], rest["sub_id"], rest["role"], rest["group"]) == (first + 1, ids[1], "client", first)
    assert [j["sub_id"] for j in lab.json("GET", f"/api/v1/jobs?group={first}")["results"]] == ids[::-1]

    cli.run("jobs", "cancel", ids[1])  # one sub-job: the whole group
    for sub in ids:
        shown = json.loads(cli.run("jobs", "show", sub, "--json").stdout)
        assert (shown["state"], shown["health"]) == ("Finished", "Canceled")

    again = cli.run("jobs", "resubmit", ids[0]).stdout.split()  # the whole group again
    second = int(again[0].split(".")[0])
    assert again == [f"{second}.0", f"{second}.1"]
    running = start_group(worker, 2)
    assert sorted(running) == [second, second + 1]
    package = worker.call(second + 1, "GET", "").json()
    proto = yaml.safe_load(package["definition"])["protocols"]["lava-multinode"]
    assert proto["roles"] == {str(second): "server", str(second + 1): "client"} and proto["role"] == "client"
    worker.log(second + 1, record("client says hello"),
               record({"definition": "0_client", "case": "multinode-wait-ready", "result": "pass",
                       "message": {str(second): {"value": "42"}}}, "results"))
    worker.finish(second + 1)
    logs = cli.run("jobs", "logs", again[1], "--no-follow").stdout.splitlines()
    assert logs[0].endswith(" client says hello")
    assert cli.run("results", again[1]).stdout.splitlines() == ["Results:", "* 0_client.multinode-wait-ready [pass]"]
    [case] = yaml.safe_load(cli.run("results", again[1], "0_client", "multinode-wait-ready", "--yaml").stdout)
    assert case["metadata"]["message"] == {str(second): {"value": "42"}}
    cli.run("jobs", "cancel", again[0])  # the running server: Canceling, until its worker ends it
    assert json.loads(cli.run("jobs", "show", again[0], "--json").stdout)["state"] == "Canceling"
    assert worker.poll()["cancel"] == [second]

    err = cli.fails("jobs", "submit", job_file(tmp_path, GROUP.replace("client: {device_type: qemu, count: 1",
                                                                       "client: {device_type: qemu, count: 2"),
                                               "big.yaml"))
    assert "<Fault 400: \"Device unavailable: role 'client' needs 2 devices of type 'qemu'" in err, err
    page = http("GET", f"{lab.url}/scheduler/job/{ids[1]}")  # lavacli's --url link: the job's page
    assert page.status == 200 and f"<h1>Job {ids[1]} " in page.text


# The QEMU lab ###################################################################


@pytest.fixture(scope="module")
def mlab(tmp_path_factory):
    ok, why = worker_available()
    ok2, why2 = qemu_available()
    if not (ok and ok2):
        pytest.skip(why or why2)
    lab, stop = start_lab(tmp_path_factory.mktemp("multinode"))
    try:
        lab.coordinator = add_coordinator(lab)
        lab.add_worker("worker1")
        lab.add_worker("worker2")
        for name, worker in (("qemu01", "worker1"), ("qemu02", "worker1"), ("qemu03", "worker2")):
            lab.add_qemu_device(name, worker, health="Good")
        for worker in ("worker1", "worker2"):  # several workers share one coordinator
            lab.start_worker(worker, None, *lab.coordinator.worker_args)
            lab.wait_worker_online(worker)
        yield lab
    finally:
        stop()


def wait_group(lab, ids: list, timeout: float = 420) -> list[dict]:
    return [lab.wait_job(sub, timeout=timeout) for sub in ids]


def results(lab, sub_id) -> dict[str, dict]:
    return {f"{c['suite']}.{c['name']}": c for c in lab.json("GET", f"/api/v1/jobs/{sub_id}/results")}


def explain(lab, ids) -> str:
    parts = []
    for sub in ids:
        text = lab.api("GET", f"/api/v1/jobs/{sub}/logs").text
        parts.append(f"--- job {sub}:\n" + "\n".join(text.splitlines()[-40:]))
    return "\n".join(parts) + "\n--- coordinator:\n" + lab.coordinator.log()[-5000:]


@pytest.mark.qemu
def test_two_role_example_submitted_through_lavacli_completes(mlab, tmp_path):
    cli = Lavacli(mlab, tmp_path / "xdg")
    cli.identity("dutlab", "admin", mlab.admin_token)
    path = tmp_path / "qemu-multinode.yaml"
    path.write_text(example_job())
    ids = cli.run("jobs", "submit", str(path)).stdout.split()
    assert len(ids) == 2 and all("." in sub for sub in ids)
    server, client = wait_group(mlab, ids)
    assert (server["health"], client["health"]) == ("Complete", "Complete"), explain(mlab, ids)
    assert {server["actual_device"], client["actual_device"]} <= {"qemu01", "qemu02", "qemu03"}
    got = results(mlab, ids[1])
    wait = got["0_client.multinode-wait-server-ready"]
    assert wait["result"] == "pass"
    assert wait["metadata"]["message"] == {str(server["id"]): {"value": "42"}}
    assert got["0_client.got-value"]["result"] == "pass"  # the value reached the client's test
    assert got["0_client.multinode-sync-done"]["result"] == "pass"
    sent = results(mlab, ids[0])
    assert sent["0_server.multinode-send-server-ready"]["result"] == "pass"
    assert sent["0_server.multinode-sync-done"]["result"] == "pass" and sent["0_server.kernel"]["result"] == "pass"
    printed = cli.run("results", ids[1]).stdout.splitlines()
    assert "* 0_client.multinode-wait-server-ready [pass]" in printed and "* lava.job [pass]" in printed
    log = mlab.api("GET", f"/api/v1/jobs/{ids[1]}/logs").text
    assert "<LAVA_WAIT_COMPLETE" in log and "MultiNode group" in log


def group_job(name: str, roles: dict, actions: list, minutes: int = 15) -> str:
    """A MultiNode job on the QEMU assets: `roles` {role: (count, extra role keys)}."""
    return yaml.safe_dump({
        "job_name": name, "visibility": "public",
        "timeouts": {"job": {"minutes": minutes}, "action": {"minutes": 6}, "connection": {"minutes": 2}},
        "protocols": {"lava-multinode": {"timeout": {"minutes": 5}, "roles": {
            role: {"device_type": "qemu", "count": count, "context": {"arch": "amd64"}, **extra}
            for role, (count, extra) in roles.items()}}},
        "actions": actions}, sort_keys=False)


def deploy(roles: list[str], kernel: str = "vmlinuz") -> dict:
    assets = ASSETS / "amd64"
    images = {"kernel": {"url": f"file://{assets}/{kernel}", "image_arg": "-kernel {kernel}"}}
    if kernel == "vmlinuz":
        images["initrd"] = {"url": f"file://{assets}/initramfs.cpio.gz", "image_arg": "-initrd {initrd}"}
    return {"deploy": {"role": roles, "to": "tmpfs", "images": images}}


def boot(roles: list[str]) -> dict:
    return {"boot": {"role": roles, "method": "qemu", "media": "tmpfs", "prompts": ["dutlab:~# "]}}


def role_tests(role: str, steps: list[str]) -> dict:
    return {"test": {"role": [role], "definitions": [{
        "from": "inline", "name": role, "path": f"inline/{role}.yaml",
        "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": role},
                       "run": {"steps": steps}}}]}}


THREE = group_job("three nodes", {"server": (1, {}), "client": (2, {})}, [
    deploy(["server", "client"]), boot(["server", "client"]),
    role_tests("server", [
        "lava-sync booted",
        "sleep 12",  # the clients are in lava-wait meanwhile: the test restarts the coordinator then
        "lava-send ready port=5201",
        "lava-send done from=server",
        "lava-wait-all done",
        'lava-test-case members --shell test "$(lava-group | wc -l)" -eq 3']),
    role_tests("client", [
        "lava-sync booted",
        "lava-wait ready",
        "lava-test-case port --shell grep -q ':port=5201$' /tmp/lava_multi_node_cache.txt",
        "lava-send done from=client",
        "lava-wait-all done",
        "lava-test-case heard-all --shell test \"$(grep -c ':from=' /tmp/lava_multi_node_cache.txt)\" -eq 3",
        "lava-wait-all ready server"]),
])


@pytest.mark.qemu
def test_three_nodes_sync_and_wait_all_survive_a_coordinator_restart(mlab):
    ids = mlab.json("POST", "/api/v1/jobs", {"definition": THREE})["job_ids"]
    assert len(ids) == 3
    # restart the coordinator while both clients wait for "ready" (the server sleeps before sending it)
    deadline = time.monotonic() + 360
    waiting: set = set()
    while len(waiting) < 2 and time.monotonic() < deadline:
        for sub in ids[1:]:
            if "<LAVA_MULTI_NODE> <LAVA_WAIT ready>" in mlab.api("GET", f"/api/v1/jobs/{sub}/logs").text:
                waiting.add(sub)
        assert all(mlab.job(sub)["state"] != "Finished" for sub in ids), explain(mlab, ids)
        time.sleep(0.5)
    assert len(waiting) == 2, explain(mlab, ids)
    mlab.coordinator.restart()
    assert "<LAVA_SEND ready" not in mlab.api("GET", f"/api/v1/jobs/{ids[0]}/logs").text  # still ahead
    finished = wait_group(mlab, ids)
    assert [j["health"] for j in finished] == ["Complete"] * 3, explain(mlab, ids)
    for sub in ids[1:]:
        got = results(mlab, sub)
        for case in ("multinode-sync-booted", "multinode-wait-ready", "port", "multinode-wait_all-done",
                     "heard-all", "multinode-wait_all-ready"):
            assert got[f"0_client.{case}"]["result"] == "pass", (sub, case)
    assert results(mlab, ids[0])["0_server.members"]["result"] == "pass"
    restored = [line for line in mlab.coordinator.log().splitlines() if "restored" in line]
    assert restored and finished[0]["target_group"] in restored[-1]  # the group outlived the restart
    devices = {j["actual_device"] for j in finished}
    assert devices == {"qemu01", "qemu02", "qemu03"}  # on both workers


# the server's kernel does not exist: its deploy fails while the client boots and waits for it
ESSENTIAL = group_job("essential server", {"server": (1, {"essential": True}), "client": (1, {})}, [
    deploy(["server"], kernel="no-such-vmlinuz"), deploy(["client"]), boot(["server", "client"]),
    role_tests("client", ["lava-wait never-sent"]),
], minutes=10)


@pytest.mark.qemu
def test_failing_essential_role_ends_the_group_with_the_reason(mlab):
    ids = mlab.json("POST", "/api/v1/jobs", {"definition": ESSENTIAL})["job_ids"]
    server, client = wait_group(mlab, ids, timeout=300)
    assert server["health"] == "Incomplete" and "no-such-vmlinuz" in server["error_msg"], explain(mlab, ids)
    assert client["health"] == "Incomplete", explain(mlab, ids)
    assert client["error_msg"].startswith(f"the group ended: essential role 'server' (job {ids[0]}) ended "
                                          "Incomplete: "), client
    assert "no-such-vmlinuz" in client["error_msg"] and client["failure_comment"] == client["error_msg"]
    assert client["error_type"] == server["error_type"]  # the cause's class, for CI's infra/test split
    device = mlab.json("GET", f"/api/v1/devices/{client['actual_device']}")
    assert (device["state"], device["health"]) == ("Idle", "Good")  # the client's device did nothing wrong
    assert mlab.json("GET", f"/api/v1/devices/{server['actual_device']}")["state"] == "Idle"
    log = mlab.api("GET", f"/api/v1/jobs/{ids[1]}/logs").text
    assert "MultiNode group" in log and "canceled" in log  # its run was stopped, with finalize
