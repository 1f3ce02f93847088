"""The /RPC2 wire protocol with a plain xmlrpc.client: nil, faults, HTTP 401, dates, files,
arities lavacli sends to different server versions, introspection, multicall, results CSV."""

from __future__ import annotations

import base64
import csv
import io
import json
import xmlrpc.client

import pytest
import yaml
from test_lavacli import JOB, QEMU_DICT, FakeWorker, record

from labkit import http


def proxy(lab, user: str | None = "admin", token: str | None = None) -> xmlrpc.client.ServerProxy:
    auth = f"{user}:{token or lab.admin_token}@" if user else ""
    return xmlrpc.client.ServerProxy(f"http://{auth}127.0.0.1:{lab.port}/RPC2", allow_none=True)


def post(lab, body: str, **headers: str):
    return http("POST", f"{lab.url}/RPC2", body, headers={"Content-Type": "text/xml", **headers})


@pytest.fixture
def rpc(lab_server):
    p = proxy(lab_server)
    p.scheduler.device_types.add("qemu", None, True, False, 24, "hours")
    p.scheduler.device_types.update("qemu", None, None, None, None, None, True)
    p.scheduler.workers.add("w1", None, False)
    p.scheduler.devices.add("qemu01", "qemu", "w1", None, None, True, None, None)
    p.scheduler.devices.set_dictionary("qemu01", QEMU_DICT)
    return p


def fault(call, *args) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(*args)
    return info.value


def test_transport_auth_and_faults(lab_server):
    p = proxy(lab_server)
    assert p.system.version() == "2025.12" and p.system.whoami() == "admin"
    # HTTP 401 with LAVA's challenge for a bad token, before any method runs
    r = post(lab_server, xmlrpc.client.dumps((), "system.version"),
             Authorization="Basic " + base64.b64encode(b"admin:wrong").decode())
    assert r.status == 401 and r.text == "Invalid token\n"
    assert r.headers["Www-Authenticate"] == 'Basic realm="XML-RPC Authentication token"'
    assert post(lab_server, "<x/>", Authorization="Basic !!!").status == 400
    assert post(lab_server, "<x/>", Authorization="Digest abc").status == 400
    # dutlab's own `Token <secret>` works too
    r = post(lab_server, xmlrpc.client.dumps((), "system.whoami"), Authorization=f"Token {lab_server.admin_token}")
    assert r.status == 200 and r.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert xmlrpc.client.loads(r.body)[0] == ("admin",)
    # anonymous: whoami is nil
    assert proxy(lab_server, None).system.whoami() is None

    err = fault(p.scheduler.nope)
    assert (err.faultCode, err.faultString) == (-32601, "No such method: 'scheduler.nope'")
    err = fault(p.scheduler.jobs.show)
    assert err.faultCode == 400 and "takes 1 argument(s), got 0" in err.faultString
    err = fault(p.scheduler.jobs.show, "12.1")  # a MultiNode sub-id of a group that does not exist
    assert (err.faultCode, err.faultString) == (404, "Job '12.1' was not found.")
    r = post(lab_server, "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><methodCall><methodName>&a;"
                         "</methodName></methodCall>")
    assert r.status == 200  # faults travel in a 200 answer
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(r.body)
    assert info.value.faultCode == -32600
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(post(lab_server, "<methodCall><methodName>").body)
    assert info.value.faultCode == -32600
    help_page = http("GET", f"{lab_server.url}/RPC2")
    assert help_page.status == 200 and "scheduler.jobs.submit(definition)" in help_page.text


def test_introspection_and_multicall(lab_server):
    p = proxy(lab_server)
    names = p.system.listMethods()
    for name in ("system.version", "scheduler.jobs.logs", "scheduler.devices.update", "scheduler.devices.tags.add",
                 "scheduler.device_types.set_template", "scheduler.workers.update", "scheduler.tags.show",
                 "results.get_testjob_results_yaml", "results.get_testsuite_results_csv"):
        assert name in names
    assert "line" in p.system.methodHelp("scheduler.jobs.logs")
    assert p.system.methodSignature("scheduler.jobs.show") == [["struct", "string"]]
    assert p.system.methodSignature("scheduler.workers.update")[0] == ["nil", "string"]
    answers = p.system.multicall([{"methodName": "system.whoami", "params": []},
                                  {"methodName": "scheduler.jobs.show", "params": [1]},
                                  {"methodName": "system.version"}])
    assert answers[0] == ["admin"] and answers[1]["faultCode"] == 404 and answers[2] == ["2025.12"]


def test_arities_nil_dates_and_files(rpc, lab_server):
    p = rpc
    # devices.update as lavacli sends it to servers < 2022.04 (7), < 2025.12 (8) and since (9)
    p.scheduler.devices.update("qemu01", None, None, None, None, "GOOD", None)
    p.scheduler.devices.update("qemu01", None, None, None, True, None, "seven", "qemu")
    p.scheduler.devices.update("qemu01", None, None, None, None, "BAD", None, None, "broken fan")
    show = p.scheduler.devices.show("qemu01")
    assert (show["health"], show["description"]) == ("Bad", "seven")
    history = lab_server.api("GET", "/api/v1/devices/qemu01/health-history").json()["results"]
    assert history[0]["reason"] == "broken fan"
    assert fault(p.scheduler.devices.update, "qemu01", None, None, None, None, "SHINY").faultCode == 400
    # workers.update with 3 (server < 2020.01) and 4 arguments
    p.scheduler.workers.update("w1", "desc", "MAINTENANCE")
    p.scheduler.workers.update("w1", None, "ACTIVE", 3)
    info = p.scheduler.workers.show("w1")
    assert (info["description"], info["health"], info["job_limit"]) == ("desc", "Active", 3)
    assert isinstance(info["last_ping"], xmlrpc.client.DateTime)

    # files are base64, dates dateTime.iso8601, absent values nil
    dictionary = p.scheduler.devices.get_dictionary("qemu01")
    assert isinstance(dictionary, xmlrpc.client.Binary) and dictionary.data.decode() == QEMU_DICT
    rendered = p.scheduler.devices.get_dictionary("qemu01", True, "arch: arm64")
    assert "qemu-system-aarch64" in rendered.data.decode()
    assert fault(p.scheduler.devices.get_dictionary, "qemu01", True, "[1, 2]").faultCode == 400
    p.scheduler.devices.update("qemu01", None, None, None, None, "GOOD", None, None, None)
    job_id = p.scheduler.jobs.submit(JOB)
    assert isinstance(job_id, int)
    job = p.scheduler.jobs.show(str(job_id))
    assert isinstance(job["submit_time"], xmlrpc.client.DateTime) and job["start_time"] is None
    finished, log = p.scheduler.jobs.logs(job_id, 0, None)
    assert finished is False and log.data == b"[]"
    err = fault(p.scheduler.jobs.configuration, job_id)
    assert (err.faultCode, err.faultString) == (404, f"Job '{job_id}' has not started yet")
    assert p.scheduler.jobs.queue(["qemu"], 0, 25)[0]["requested_device_type"] == "qemu"
    assert p.scheduler.jobs.queue(["other"], 0, 25) == []
    problem = p.scheduler.jobs.validate("job_name: x")
    assert set(problem) == {"path", "msg"} and problem["msg"]
    assert len(p.scheduler.jobs.list(None, None, 0, 1000)) == 1  # limit clamped, not refused
    assert p.scheduler.jobs.list("RUNNING", None, 0, 100, None, False, 1) == []  # lavacli autocancel's form

    # a worker runs it; logs come back by line number with the finished flag
    token = lab_server.manage("workers", "token", "w1").stdout.strip().split()[-1]
    worker = FakeWorker(lab_server, "w1", token)
    assert worker.start() == job_id
    worker.log(job_id, *(record(f"line {i}") for i in range(6)),
           record({"definition": "1_smoke", "case": "a", "result": "pass"}, "results"),
           record({"definition": "1_smoke", "case": "b", "result": "skip"}, "results"))
    finished, log = p.scheduler.jobs.logs(job_id, 2, 4)
    assert finished is False and [r["msg"] for r in yaml.safe_load(log.data)] == ["line 2", "line 3"]
    worker.finish(job_id)
    finished, log = p.scheduler.jobs.logs(job_id, 7)
    assert finished is True and len(yaml.safe_load(log.data)) == 1
    job_yaml, device_yaml, dispatcher, env, env_dut = p.scheduler.jobs.configuration(job_id)
    assert job_yaml.data.decode() == JOB and b"qemu-system-x86_64" in device_yaml.data
    assert (dispatcher, env, env_dut) == (None, None, None)

    # results in every export form
    suites = yaml.safe_load(p.results.get_testjob_suites_list_yaml(job_id))
    assert [s["name"] for s in suites] == ["1_smoke"] and suites[0]["job"] == str(job_id)
    rows = list(csv.DictReader(io.StringIO(p.results.get_testsuite_results_csv(job_id, "1_smoke"))))
    assert [(r["name"], r["result"]) for r in rows] == [("a", "pass"), ("b", "skip")]
    assert json.loads(rows[0]["metadata"])["case"] == "a"
    assert p.results.get_testsuite_results_count(job_id, "1_smoke") == 2
    assert [c["name"] for c in yaml.safe_load(p.results.get_testsuite_results_yaml(job_id, "1_smoke", 1, 1))] == ["b"]
    [row] = csv.DictReader(io.StringIO(p.results.get_testcase_results_csv(job_id, "1_smoke", "b")))
    assert (row["suite"], row["name"], row["result"], row["job"]) == ("1_smoke", "b", "skip", str(job_id))
    assert list(csv.DictReader(io.StringIO(p.results.get_testjob_suites_list_csv(job_id))))[0]["name"] == "1_smoke"
    assert fault(p.results.get_testcase_results_yaml, job_id, "1_smoke", "zz").faultCode == 404
