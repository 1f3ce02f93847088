"""dutlab-coordinator as a real daemon on loopback, driven by protocol clients (docs/coordinator.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from dutlab.dispatcher.coordinator_client import (
    CoordinatorClient,
    CoordinatorError,
    CoordinatorTimeout,
    Endpoint,
    exchange,
)
from dutlab.dispatcher.multinode import Group, parse_request
from labkit import BIN, free_port

LAVA_COORDINATOR = shutil.which("lava-coordinator")


class Daemon:
    def __init__(self, tmp: Path, lava: bool = False, port: int = 0, **settings) -> None:
        self.port = port or free_port()
        self.log_file = tmp / "coordinator.log"
        if lava:  # LAVA's own daemon (Debian package lava-coordinator) with its JSON config
            config = tmp / "lava-coordinator.conf"
            config.write_text(json.dumps({"port": self.port, "blocksize": 4096, "poll_delay": 1,
                                          "coordinator_hostname": "127.0.0.1"}))
            command = [LAVA_COORDINATOR, "--config", str(config), "--logfile", str(self.log_file)]
        else:
            config = tmp / "coordinator.yaml"
            config.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": self.port, "log_level": "DEBUG",
                                              "log_file": str(self.log_file), **settings}))
            command = [str(BIN / "dutlab-coordinator"), "--config", str(config)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read().decode()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("dutlab-coordinator did not start listening")

    def endpoint(self, **kw) -> Endpoint:
        return Endpoint(port=self.port, poll_delay=0.05, **kw)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        return self.proc.returncode


@pytest.fixture
def start(tmp_path):
    daemons = []

    def start_daemon(**settings) -> Daemon:
        d = Daemon(tmp_path, **settings)
        daemons.append(d)
        return d

    yield start_daemon
    for d in daemons:
        d.stop()


def run_group(clients, fn, timeout=30):
    """Run fn(client) for every client in its own thread, as the jobs of a group would; return results."""
    results, errors = {}, []

    def one(c):
        try:
            results[c.client_name] = fn(c)
        except Exception as exc:  # reported below with the client's name
            errors.append(f"{c.client_name}: {exc!r}")

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors
    return results


def group(daemon, roles, name="g1", **kw):
    return [CoordinatorClient(daemon.endpoint(**kw), name, f"10{i}", role) for i, role in enumerate(roles)]


def need_lava_coordinator() -> None:
    """scripts/setup.sh installs it; in CI its absence is a missing install step, so a failure."""
    if not LAVA_COORDINATOR:
        reason = "LAVA's lava-coordinator is not installed (scripts/setup.sh installs it)"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)


@pytest.mark.parametrize("daemon", ["dutlab", "lava"])
def test_three_clients_run_every_call(start, daemon):
    """The same group against dutlab-coordinator and LAVA's: our client speaks LAVA's protocol."""
    if daemon == "lava":
        need_lava_coordinator()
    d = start(lava=daemon == "lava")
    clients = group(d, ["server", "client", "client"])
    server, c1, c2 = clients
    expected_roles = {"100": "server", "101": "client", "102": "client"}
    assert run_group(clients, lambda c: c.group_data(3, timeout=10)) == {c.client_name: expected_roles
                                                                         for c in clients}

    def messages(c):
        got = {}
        if c is server:
            time.sleep(0.3)  # the clients are already waiting: lava_wait must hold them with "wait"
            c.send("ready", {"addr": "server-host", "port": "5201"})
        else:
            got["wait"] = c.wait("ready", timeout=10)
        c.send("done", {"n": c.client_name})
        got["all"] = c.wait_all("done", timeout=10)
        got["servers"] = c.wait_all("ready", timeout=10, role="server")
        got["clients"] = c.wait_all("done", timeout=10, role="client")
        c.sync("finish", timeout=10)
        c.sync("finish-2", timeout=10)
        return got

    results = run_group(clients, messages)
    for c in (c1, c2):
        assert results[c.client_name]["wait"] == {"100": {"addr": "server-host", "port": "5201"}}
    for got in results.values():
        assert got["all"] == {n: {"n": n} for n in ("100", "101", "102")}
        assert got["servers"] == {"100": {"addr": "server-host", "port": "5201"}}
        # with a role, the wait is for that role's clients; the data is every sender's (as LAVA answers)
        assert got["clients"] == got["all"]
    run_group(clients, lambda c: c.clear_group(3))
    if daemon == "dutlab":
        with pytest.raises(CoordinatorError, match="unknown group"):
            server.send("late")
        assert "cleared by all 3 clients" in d.log()
        assert d.stop() == 0


def test_protocol_details(start):
    d = start()
    [alone] = group(d, ["solo"], name="g2")
    # the first group_data must say how big the group is
    with pytest.raises(CoordinatorError, match="group_size"):
        alone.group_data(0, timeout=2)
    assert alone.group_data(1, timeout=2) == {"100": "solo"}
    # wait_all on an ID nobody sent is refused (as LAVA), lava_wait keeps waiting until the timeout
    with pytest.raises(CoordinatorError, match="nobody sent"):
        alone.wait_all("nothing", timeout=2)
    with pytest.raises(CoordinatorTimeout):
        alone.wait("nothing", timeout=0.5)
    with pytest.raises(CoordinatorError, match="role"):
        alone.wait_all("nothing", timeout=2, role="nobody")
    # the group is full; a stranger may not use it
    [a, stranger] = group(d, ["x", "y"], name="g2")
    with pytest.raises(CoordinatorError, match="already has its 1 clients"):
        stranger.group_data(1, timeout=2)
    with pytest.raises(CoordinatorError, match="not a member"):
        stranger.send("x")
    # raw framing: 8 upper-case hex digits, the JSON, one reply, close
    request = json.dumps({"request": "lava_send", "group_name": "g2", "client_name": "100", "messageID": "m",
                          "message": {"k": "v"}}).encode()
    with socket.create_connection(("127.0.0.1", d.port)) as s:
        s.sendall(b"%08X" % len(request) + request)
        s.shutdown(socket.SHUT_WR)
        reply = s.makefile("rb").read()
    assert reply[:8].decode().isupper() or reply[:8].isdigit()
    assert int(reply[:8], 16) == len(reply) - 8 and json.loads(reply[8:]) == {"response": "ack"}
    with socket.create_connection(("127.0.0.1", d.port)) as s:  # a bad header: closed without a reply
        s.sendall(b"zzzzzzzz{}")
        s.shutdown(socket.SHUT_WR)
        assert s.makefile("rb").read() == b""
    assert exchange(d.endpoint(), {"request": "bogus", "group_name": "g2", "client_name": "100"})["response"] == "nack"
    assert d.stop() == 0


def test_status_check_against_lava_coordinator(start):
    need_lava_coordinator()
    d = start(lava=True)
    ok = subprocess.run([str(BIN / "dutlab-coordinator"), "status-check", "--port", str(d.port)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "No errors" in ok.stdout, ok.stdout + d.log()


def test_status_check(start):
    d = start()
    ok = subprocess.run([str(BIN / "dutlab-coordinator"), "status-check", "--host", "127.0.0.1",
                         "--port", str(d.port)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == "status check complete. No errors"
    d.stop()
    down = subprocess.run([str(BIN / "dutlab-coordinator"), "status-check", "--port", str(d.port),
                           "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "group_data failed" in down.stdout and "cannot reach" in down.stdout


def test_secret_is_enforced(start, tmp_path):
    secret = tmp_path / "coordinator.secret"
    secret.write_text("s3cret-for-tests\n")
    d = start(secret_file=str(secret))
    for kw in ({}, {"secret": "wrong"}):
        [c] = group(d, ["solo"], name="g3", **kw)
        with pytest.raises(CoordinatorError, match="secret"):
            c.group_data(1, timeout=2)
    [c] = group(d, ["solo"], name="g3", secret="s3cret-for-tests")
    assert c.group_data(1, timeout=2) == {"100": "solo"}
    assert "missing or wrong secret" in d.log()
    check = [str(BIN / "dutlab-coordinator"), "status-check", "--port", str(d.port), "--timeout", "5"]
    refused = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "secret" in refused.stdout
    ok = subprocess.run([*check, "--secret-file", str(secret)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "No errors" in ok.stdout


def test_idle_group_expires(start):
    d = start(group_idle_timeout=1)
    [c] = group(d, ["solo"], name="g4")
    c.group_data(1, timeout=2)
    c.send("kept")
    time.sleep(0.5)
    assert c.wait("kept", timeout=2) == {"100": {}}  # activity keeps the group alive
    time.sleep(2)
    with pytest.raises(CoordinatorError, match="unknown group"):
        c.wait("kept", timeout=2)
    assert "group g4 expired" in d.log()


def test_memory_caps(start):
    d = start(max_message_bytes=200, max_messages=3, max_group_bytes=400)
    [c] = group(d, ["solo"], name="g5")
    c.group_data(1, timeout=2)
    with pytest.raises(CoordinatorError, match="max_message_bytes"):
        c.send("big", {"blob": "x" * 300})
    assert "message big is" in d.log() and "over max_message_bytes (200)" in d.log()
    c.send("a", {"v": "x" * 150})
    c.send("a", {"v": "y" * 150})  # a resend replaces the stored message: not counted twice
    c.send("b", {"v": "x" * 150})
    with pytest.raises(CoordinatorError, match="max_group_bytes"):
        c.send("c", {"v": "x" * 150})
    c.send("c")
    with pytest.raises(CoordinatorError, match="max_messages"):
        c.send("d")
    assert c.wait("a", timeout=2) == {"100": {"v": "y" * 150}}
    # a request frame over max_request_bytes is closed unread
    with socket.create_connection(("127.0.0.1", d.port)) as s:
        s.sendall(b"%08X" % (64 * 1024 * 1024))
        s.shutdown(socket.SHUT_WR)
        assert s.makefile("rb").read() == b""
    assert "over max_request_bytes" in d.log()


def test_restart_keeps_groups_and_waiting_clients_go_on(start, tmp_path):
    """With a state file, a restarted coordinator knows its groups: a lava_wait that was polling
    through the restart gets the message sent after it, and the other calls go on."""
    state = tmp_path / "groups.sqlite3"
    d = start(state_file=str(state))
    server, client = group(d, ["server", "client"], name="g6")
    run_group([server, client], lambda c: c.group_data(2, timeout=10))
    server.send("before", {"k": "v"})
    got: dict = {}
    waiter = threading.Thread(target=lambda: got.update(ready=client.wait("ready", timeout=60)))
    waiter.start()
    assert d.stop() == 0
    assert waiter.is_alive()  # still polling: the coordinator is away, so the client retries
    again = start(port=d.port, state_file=str(state))
    server.send("ready", {"ip": "192.0.2.7"})
    waiter.join(60)
    assert got == {"ready": {"100": {"ip": "192.0.2.7"}}}
    assert client.wait("before", timeout=5) == {"100": {"k": "v"}}
    run_group([server, client], lambda c: c.sync("after-restart", timeout=10))
    run_group([server, client], lambda c: c.clear_group(2))
    assert "restored 1 group(s)" in again.log() and "cleared by all 2 clients" in again.log()
    assert again.stop() == 0
    assert "kept in" in again.log()


def test_dutlab_run_group_calls_answer_the_dut(start):
    """dutlab-run's side (dispatcher/multinode.py): each DUT request becomes one call whose answer is
    the line typed back; no answer in time is a timeout (the job ends), a nack only fails the call."""
    d = start()
    job = {"protocols": {"lava-multinode": {"target_group": "g7", "role": "solo", "group_size": 1, "sub_id": 0,
                                            "timeout": {"seconds": 1}}}}
    group = Group.of_job(job, 41, d.endpoint())
    assert group.join(timeout=5) == {"41": "solo"}
    sent = group.call(parse_request("<LAVA_MULTI_NODE> <LAVA_SEND ready ip=10.0.0.2>"), within=5)
    assert (sent.reply, sent.passed) == ("", True)
    waited = group.call(parse_request("<LAVA_MULTI_NODE> <LAVA_WAIT ready>"), within=5)
    assert (waited.reply, waited.data) == ("<LAVA_WAIT_COMPLETE 41:ip=10.0.0.2>", {"41": {"ip": "10.0.0.2"}})
    assert group.call(parse_request("<LAVA_MULTI_NODE> <LAVA_SYNC s>"), within=5).reply == "<LAVA_SYNC_COMPLETE>"
    late = group.call(parse_request("<LAVA_MULTI_NODE> <LAVA_WAIT never>"), within=5)  # the protocol's 1 s
    assert (late.reply, late.passed, late.timed_out) == ("<LAVA_WAIT_COMPLETE nack>", False, True)
    refused = group.call(parse_request("<LAVA_MULTI_NODE> <LAVA_WAIT_ALL nobody-sent>"), within=5)
    assert (refused.passed, refused.timed_out) == (False, False) and "nobody sent" in refused.error
    assert group.leave() == "" and "cleared by all 1 clients" in d.log()
