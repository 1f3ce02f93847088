"""The pdudaemon role, converged on this host: the real pdudaemon switches outlets for pduclient.

The converge is the one an admin relies on (changes, then changes nothing, then `--check --diff`
changes nothing), the unit passes `systemd-analyze verify`, and the pduclient the role installs
switches a localcmdline outlet of the daemon the role started: the outlet's command creates or
removes a file. The daemon listens on a loopback address of its own under a service name of its
own, so the test never touches this host's pdudaemon; it is stopped and its files are removed
whatever the outcome.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from ansible_harness import REPO, env, play
from test_collection import test_argument_specs_match_the_defaults as argument_specs_match_the_defaults
from test_plumbing_roles import (
    converge_idempotent,
    pid_of,
    remove_init_service,
    role_play,
    service,
    systemd_verify,
)

from labkit import BIN

pytestmark = pytest.mark.ansible


def free_loopback_address() -> str:
    """A 127.x.y.z with port 16421 free (pduclient has no --port for the daemon)."""
    while True:
        address = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((address, 16421))
                return address
            except OSError:
                continue


@pytest.fixture
def pdu_host():
    """Variables for a pdudaemon whose files live in one folder, under a unique service name."""
    if shutil.which("pdudaemon") is None:
        message = "pdudaemon is not installed (scripts/setup.sh installs it: apt-get install pdudaemon)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    tag = uuid.uuid4().hex[:6]
    base = Path(f"/var/tmp/dutlab-pdu-{tag}")
    base.mkdir(mode=0o755)
    name = f"pdudaemon-{tag}"
    variables = {
        "dutlab_pdudaemon_service": name,
        "dutlab_pdudaemon_listen_address": free_loopback_address(),
        "dutlab_pdudaemon_config_file": str(base / "etc" / "pdudaemon.conf"),
        "dutlab_pdudaemon_log_file": str(base / "log" / "pdudaemon.log"),
        "dutlab_pdudaemon_client_path": str(base / "bin" / "pduclient"),
        "dutlab_pdudaemon_systemd_dir": str(base / "systemd"),
        "dutlab_pdudaemon_log_level": "DEBUG",
    }
    (base / "bin").mkdir()
    (base / "systemd").mkdir()
    try:
        yield base, variables
    finally:
        remove_init_service(name)
        shutil.rmtree(base, ignore_errors=True)


def outlet(base: Path, name: str) -> dict:
    """A localcmdline PDU whose outlet N is the file <base>/<name>-N.on."""
    return {"name": name, "driver": "localcmdline",
            "options": {"cmd_on": f"touch {base}/{name}-%s.on", "cmd_off": f"rm -f {base}/{name}-%s.on"}}


def pduclient(variables: dict, pdu: str, port: int, command: str) -> subprocess.CompletedProcess:
    return subprocess.run([variables["dutlab_pdudaemon_client_path"], "--daemon",
                           variables["dutlab_pdudaemon_listen_address"], "--hostname", pdu, "--port", str(port),
                           "--command", command], capture_output=True, text=True, timeout=120)


def test_argument_specs_match_defaults():
    argument_specs_match_the_defaults("pdudaemon")


def test_ansible_doc_reads_the_role():
    out = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "dutlab.lab.pdudaemon"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env={**os.environ, **env()})
    assert out.returncode == 0 and "ENTRY POINT: *main*" in out.stdout, out.stderr


def test_pdudaemon_converges_and_switches_outlets_for_pduclient(pdu_host, tmp_path):
    base, variables = pdu_host
    variables["dutlab_pdudaemon_pdus"] = [outlet(base, "pdu-a")]
    variables["dutlab_pdudaemon_aliases"] = [{"name": "board-7", "pdu": "pdu-a", "port": 7}]
    converge_idempotent(role_play("pdudaemon", variables), tmp_path)

    name = variables["dutlab_pdudaemon_service"]
    assert service(name, "status").returncode == 0
    systemd_verify(base / "systemd" / f"{name}.service")
    config = json.loads(Path(variables["dutlab_pdudaemon_config_file"]).read_text())
    assert config["daemon"] == {"hostname": variables["dutlab_pdudaemon_listen_address"], "port": 16421,
                                "listener": "tcp", "logging_level": "DEBUG"}
    assert config["pdus"] == {"pdu-a": {"driver": "localcmdline", **outlet(base, "pdu-a")["options"]}}
    assert config["aliases"] == {"board-7": {"hostname": "pdu-a", "port": 7}}

    on = pduclient(variables, "pdu-a", 3, "on")
    assert on.returncode == 0, on.stdout + on.stderr
    assert (base / "pdu-a-3.on").exists(), "pduclient returned before the outlet was switched"
    off = pduclient(variables, "pdu-a", 3, "off")
    assert off.returncode == 0 and not (base / "pdu-a-3.on").exists(), off.stdout + off.stderr
    refused = pduclient(variables, "pdu-b", 3, "on")
    assert refused.returncode == 127 and "pdu-b" in refused.stderr, refused
    log = Path(variables["dutlab_pdudaemon_log_file"]).read_text()
    assert f"touch {base}/pdu-a-3.on" in log and "PDU was not found in config" in log

    # a second PDU: the configuration changes, the handler restarts the daemon, both PDUs work
    pid = pid_of(f"/run/{name}.pid")
    variables["dutlab_pdudaemon_pdus"].append(outlet(base, "pdu-b"))
    changed = play(role_play("pdudaemon", variables), tmp_path)
    assert changed.changed_tasks() == ["Configure | pdudaemon.conf", "Restart pdudaemon"]
    assert pid_of(f"/run/{name}.pid") not in (None, pid), "pdudaemon was not restarted"
    assert pduclient(variables, "pdu-b", 1, "on").returncode == 0 and (base / "pdu-b-1.on").exists()
    reboot = pduclient(variables, "pdu-a", 2, "reboot")
    assert reboot.returncode == 0 and (base / "pdu-a-2.on").exists(), reboot

    # a driver pdudaemon does not have: the file is not replaced, the daemon keeps running
    before = Path(variables["dutlab_pdudaemon_config_file"]).read_text()
    variables["dutlab_pdudaemon_pdus"].append({"name": "pdu-c", "driver": "no-such-driver"})
    refused_conf = play(role_play("pdudaemon", variables), tmp_path, expect="failed")
    result = refused_conf["Configure | pdudaemon.conf"]
    assert "No driver accepted the configuration 'no-such-driver'" in result.get("stderr", "") + result["msg"], result
    assert Path(variables["dutlab_pdudaemon_config_file"]).read_text() == before
    assert service(name, "status").returncode == 0


@pytest.mark.parametrize(("pdus", "aliases", "task", "words"), [
    ([{"name": "pdu a", "driver": "apc7952"}], [], "names are single words", ["with blanks: pdu a"]),
    ([{"name": "pdu1", "driver": "apc7952"}, {"name": "pdu1", "driver": "snmpv1"}], [],
     "names are single words", ["repeated: pdu1"]),
    ([{"name": "pdu1", "driver": "apc7952"}], [{"name": "b1", "pdu": "pdu9", "port": 1}],
     "Every alias names a PDU", ["b1", "pdu9"]),
    ([{"name": "relay", "driver": "localcmdline", "options": {"cmd_on": "true"}}], [],
     "localcmdline PDUs have both commands", ["relay", "cmd_off"]),
])
def test_preflight_names_what_to_fix(tmp_path, pdus, aliases, task, words):
    variables = {"dutlab_pdudaemon_pdus": pdus, "dutlab_pdudaemon_aliases": aliases,
                 "dutlab_pdudaemon_manage_service": False}
    run = play(role_play("pdudaemon", variables), tmp_path, expect="failed")
    [failed] = run.failed_tasks
    assert task in failed, failed
    message = run[failed]["msg"] if "msg" in run[failed] else str(run[failed])
    assert all(word in message for word in words), message
