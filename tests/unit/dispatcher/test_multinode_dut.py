"""MultiNode on the dispatcher side without a coordinator: the split and both schema forms, the
console requests and replies, the group baked into the overlay and the DUT scripts run by a real
shell (busybox's too, as on the test DUTs), and the worker's coordinator setting."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dutlab.dispatcher.coordinator_client import endpoint_mapping, load_endpoint
from dutlab.dispatcher.multinode import Request, parse_request, reply_line
from dutlab.dispatcher.overlay import MULTINODE_SCRIPT_NAMES, SCRIPT_NAMES, write_group, write_scripts
from dutlab.dispatcher.schema import multinode
from dutlab.dispatcher.schema.common import JobDefinitionError
from dutlab.dispatcher.schema.job import validate_job
from dutlab.dispatcher.schema.loader import parse_job
from dutlab.dispatcher.worker.config import ConfigError, coordinator_endpoint

DATA = Path(__file__).resolve().parents[2] / "data"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "jobs" / "qemu-multinode.yaml"


def group_job() -> dict:
    return parse_job((DATA / "good-jobs" / "multinode.yaml").read_text())


# The job language #################################################################


def test_split_gives_one_valid_sub_job_per_device():
    job = group_job()
    subs = multinode.split(job, "3f0c")
    assert [s["protocols"]["lava-multinode"]["role"] for s in subs] == ["server", "client", "client"]
    assert [s["protocols"]["lava-multinode"]["sub_id"] for s in subs] == [0, 1, 2]
    for sub in subs:
        assert validate_job(copy.deepcopy(sub)) == sub  # dutlab-run accepts what the server sends
        assert sub["device_type"] == "qemu" and sub["context"] == {"arch": "amd64"}
        assert {k: sub[k] for k in ("job_name", "timeouts", "visibility")} == \
            {k: job[k] for k in ("job_name", "timeouts", "visibility")}
        role = sub["protocols"]["lava-multinode"]["role"]
        assert all(next(iter(a.values()))["role"] == [role] for a in sub["actions"])
    assert [next(iter(a)) for a in subs[0]["actions"]] == ["deploy", "boot"]  # the test is the client's
    assert subs[1]["protocols"]["lava-multinode"]["tags"] == ["tcg"]
    assert subs[1]["protocols"]["lava-multinode"]["timeout"] == {"minutes": 10}
    with_roles = copy.deepcopy(subs[1])
    with_roles["protocols"]["lava-multinode"]["roles"] = {"12": "server", "13": "client", "14": "client"}
    validate_job(with_roles)
    assert job == group_job()  # the submission itself is not changed


@pytest.mark.parametrize(("change", "path"), [
    (lambda s: s["actions"][0]["deploy"].update(role=["client"]), "actions[0].deploy.role"),
    (lambda s: s["protocols"]["lava-multinode"].update(sub_id=3), "protocols.lava-multinode.sub_id"),
    (lambda s: s["protocols"]["lava-multinode"].pop("group_size"), "protocols.lava-multinode.group_size"),
    (lambda s: s.update(tags=["x"]), "tags"),
    (lambda s: s.pop("device_type"), "device_type"),
])
def test_sub_job_form_is_checked(change, path):
    sub = multinode.split(group_job(), "3f0c")[0]
    change(sub)
    with pytest.raises(JobDefinitionError) as err:
        validate_job(sub)
    assert err.value.path == path


# The console ######################################################################


def test_requests_and_replies_on_the_console():
    assert parse_request("<LAVA_MULTI_NODE> <LAVA_SEND ready ip=10.0.0.2 port=80>") == \
        Request("SEND", "ready", ("ip=10.0.0.2", "port=80"))
    assert parse_request("+ lava-send ready") is None
    wait_all = parse_request("x <LAVA_MULTI_NODE> <LAVA_WAIT_ALL done client>")
    assert wait_all == Request("WAIT_ALL", "done", ("client",)) and wait_all.case == "multinode-wait_all-done"
    assert Request("SEND", "ready", ("ip=1", "junk")).data == {"ip": "1"}
    assert Request("SYNC", "Finish").case == "multinode-sync-finish"
    assert reply_line("WAIT", {"12": {"ip": "1", "port": "80"}, "13": {}}) == "<LAVA_WAIT_COMPLETE 12:ip=1 12:port=80>"
    assert reply_line("SYNC", {}) == "<LAVA_SYNC_COMPLETE>"
    assert reply_line("WAIT_ALL", None) == "<LAVA_WAIT_ALL_COMPLETE nack>"


SHELLS = [pytest.param(["/bin/sh"], id="sh"),
          pytest.param(["busybox", "sh"], id="busybox", marks=pytest.mark.skipif(
              shutil.which("busybox") is None, reason="busybox is not installed"))]


@pytest.mark.parametrize("shell", SHELLS)
def test_dut_scripts(tmp_path, shell):
    root = tmp_path / "lava-13"
    write_scripts(root, "/bin/sh")
    write_scripts(root, "/bin/sh", MULTINODE_SCRIPT_NAMES)
    write_group(root, "13", "client", {"14": "client", "12": "server", "13": "client"})
    cache = tmp_path / "cache.txt"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([*shell, str(root / "bin" / args[0]), *args[1:]], input=stdin, capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", "LAVA_MULTI_NODE_CACHE": str(cache)})

    assert run("lava-group").stdout == "12\tserver\n13\tclient\n14\tclient\n"
    assert run("lava-group", "client").stdout == "13\n14\n"
    assert run("lava-group", "nobody").returncode == 1
    assert run("lava-role").stdout == "client\n" and run("lava-role", "list").stdout == "server client\n"
    assert run("lava-self").stdout == "13\n"
    assert run("lava-send", "ready", "ip=10.0.0.2").stdout == "<LAVA_MULTI_NODE> <LAVA_SEND ready ip=10.0.0.2>\n"
    assert run("lava-send", "ready", "nokeyvalue").returncode == 1
    assert run("lava-send", "a=b").returncode == 1
    waited = run("lava-wait", "ready", stdin="typed junk\n<LAVA_WAIT_COMPLETE 12:ip=10.0.0.2 12:port=80>\n")
    assert (waited.returncode, waited.stdout) == (0, "<LAVA_MULTI_NODE> <LAVA_WAIT ready>\n")
    assert cache.read_text() == "12:ip=10.0.0.2\n12:port=80\n"
    assert run("lava-wait-all", "done", "server", stdin="<LAVA_WAIT_ALL_COMPLETE>\n").returncode == 0
    assert not cache.exists()  # an answer without data leaves no stale cache
    assert run("lava-sync", "go", stdin="<LAVA_SYNC_COMPLETE>\n").returncode == 0
    refused = run("lava-sync", "go", stdin="<LAVA_SYNC_COMPLETE nack>\n")
    assert refused.returncode == 1 and "failed" in refused.stderr
    assert run("lava-wait", "never", stdin="").returncode == 1  # the console went away
    assert set(SCRIPT_NAMES).isdisjoint(MULTINODE_SCRIPT_NAMES)


# The worker's coordinator setting ################################################


def test_coordinator_setting_forms(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    end = coordinator_endpoint({"host": "lab.example", "port": 3080, "secret_file": str(secret)})
    assert (end.host, end.port, end.secret) == ("lab.example", 3080, "s3cret")
    assert (coordinator_endpoint("10.1.2.3:3079").host, coordinator_endpoint("[::1]:3079").host) == ("10.1.2.3", "::1")
    lava = tmp_path / "lava-coordinator.conf"
    lava.write_text(json.dumps({"port": 3079, "blocksize": 4096, "poll_delay": 3,
                                "coordinator_hostname": "coord.lab"}))
    end = coordinator_endpoint(str(lava))
    assert (end.host, end.port, end.poll_delay, end.secret) == ("coord.lab", 3079, 3.0, "")
    daemon = tmp_path / "coordinator.yaml"  # the daemon's own file, on its host: 0.0.0.0 means this host
    daemon.write_text(yaml.safe_dump({"host": "0.0.0.0", "port": 3099, "max_groups": 5}))
    assert coordinator_endpoint(str(daemon)).host == "127.0.0.1"
    job_file = tmp_path / "job-coordinator.yaml"  # what dutlab-worker writes for dutlab-run
    job_file.write_text(yaml.safe_dump(endpoint_mapping(coordinator_endpoint({"host": "h", "secret": "x"}))))
    assert (load_endpoint(job_file).host, load_endpoint(job_file).secret) == ("h", "x")
    for bad, words in (({"hots": "x"}, "coordinator.hots: unknown"), ({"port": "x"}, "coordinator.port"),
                       ({"secret_file": str(tmp_path / "none")}, "cannot read"), (3079, "must be a mapping")):
        with pytest.raises(ConfigError, match=words):
            coordinator_endpoint(bad)
