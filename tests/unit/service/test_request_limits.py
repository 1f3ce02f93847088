"""Request limits, in process through the `app` fixture (issue 18, scope 1): what is refused before
any parsing, with a 4xx that names the limit; an unexpected exception is a 500 whose incident id
the server log shows with the traceback; a database that stays locked is a 503 with Retry-After."""

from __future__ import annotations

import gzip
import json
import logging
import sqlite3
import xmlrpc.client

import pytest

import factories as f
from dutlab.service.db import database, is_sqlite
from dutlab.service.lab import job_views
from dutlab.service.models import TestJob
from dutlab.service.rpc import methods, system

JSON = {"Content-Type": "application/json"}
XML = {"Content-Type": "text/xml"}


def fault(answer) -> xmlrpc.client.Fault:
    assert answer.status == 200, answer.body[:300]
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(answer.body)
    return info.value


def test_body_limits_per_caller_and_route(app, settings):
    big = b"x" * (settings.max_body_anonymous + 1)
    answer = app.api("POST", "/api/v1/jobs/validate", big, token=None)
    assert answer.status == 413
    assert f"the limit is {settings.max_body_anonymous} bytes" in answer.json()["error"]
    assert "Authorization: Token" in answer.json()["error"]  # says how to get the larger limit
    # a user may send more (a validate that then fails on its content, not on its size)
    assert app.api("POST", "/api/v1/jobs/validate", big).json()["valid"] is False
    huge = b"x" * (settings.max_body_user + 1)
    answer = app.api("POST", "/api/v1/jobs/validate", huge)
    assert answer.status == 413 and f"the limit is {settings.max_body_user} bytes" in answer.json()["error"]
    # the worker API takes log batches up to the worker limit: this body passes the size check
    answer = app.api("POST", "/internal/v1/jobs/1/logs", huge, auth="Job nope")
    assert answer.status == 404, answer.text  # (the job does not exist)
    # a chunked body is counted as it is read
    answer = app.api("POST", "/api/v1/jobs/validate", big, token=None, headers={"Transfer-Encoding": "chunked"})
    assert answer.status == 413 and "more than" in answer.json()["error"]


def test_headers_and_lengths_that_cannot_be_read_are_400s(app):
    for header in ("Authorization", "X-Anything", "Content-Encoding"):
        answer = app.api("GET", "/api/v1/system/whoami", token=None, headers={header: "Token \xe9\xff"})
        assert answer.status == 400 and f"the {header} header is not UTF-8" in answer.json()["error"]
    # UTF-8 text that is not ASCII: readable, but no token is ever like that
    answer = app.api("GET", "/api/v1/system/whoami", token=None, headers={"Authorization": "Token é".encode().decode(
        "latin-1")})
    assert answer.status == 400 and "non-ASCII" in answer.json()["error"]
    answer = app.api("GET", "/api/v1/system/whoami", token=None, headers={"Authorization": "Basic \xe9"})
    assert answer.status == 400


@pytest.mark.parametrize(("body", "words"), [
    (b'{"a":' + b"[" * 101 + b"]" * 101 + b"}", "nested more than 100 levels"),
    (b"[" * 50_000, "nested more than 100 levels"),
    (b'{"protocol": -1e999}', "too large for a 64-bit float"),
    (b'{"protocol": NaN}', "NaN, which is not a JSON number"),
    (b'{"index": 99999999999999999999}', "out of range: integers must fit in 64 bits"),
    (b'{"index": ' + b"9" * 5000 + b"}", "out of range"),
    (b'{"a": "\xff"}', "not valid JSON"),
])
def test_json_bodies_are_bounded_before_they_are_parsed(app, body, words):
    f.worker("w1")
    answer = app.api("POST", "/internal/v1/workers/w1/poll", body, auth="Worker tok-w1", headers=JSON)
    assert answer.status == 400 and words in answer.json()["error"], answer.text


def test_strings_do_not_count_as_nesting(app):
    text = '{"definition": "' + "[" * 5000 + '"}'
    answer = app.api("POST", "/api/v1/jobs/validate", text, headers=JSON)
    assert answer.status == 200 and "nested" not in answer.json()["error"]


def test_ids_in_paths_are_range_checked(app):
    for path in ("/api/v1/jobs/99999999999999999999", "/internal/v1/jobs/9223372036854775808",
                 "/api/v1/jobs/" + "9" * 500 + "/logs"):
        answer = app.api("GET", path, auth="Job x")
        assert answer.status == 400 and "out of range" in answer.json()["error"], path
    assert app.api("GET", "/api/v1/jobs/9223372036854775807").status == 404


def test_an_unexpected_exception_is_a_500_with_an_incident_id_in_the_log(app, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("the bug under test")

    monkeypatch.setattr(job_views, "list_jobs", broken)
    with caplog.at_level(logging.ERROR, logger="dutlab.server"):
        answer = app.api("GET", "/api/v1/jobs")
    assert answer.status == 500
    incident = answer.json()["incident"]
    assert incident in answer.json()["error"] and "Traceback" not in answer.text
    logged = [r.getMessage() for r in caplog.records if incident in r.getMessage()]
    assert len(logged) == 1 and "Traceback" in logged[0] and "the bug under test" in logged[0]
    # the same for XML-RPC: LAVA's -32603, with the id
    monkeypatch.setattr(methods()["system.version"], "fn", broken)
    with caplog.at_level(logging.ERROR, logger="dutlab.server"):
        err = fault(app.api("POST", "/RPC2", xmlrpc.client.dumps((), "system.version"), headers=XML))
    incident = err.faultString.rsplit(" ", 1)[-1]
    assert err.faultCode == -32603 and "incident" in err.faultString
    assert any(incident in r.getMessage() and "the bug under test" in r.getMessage() for r in caplog.records)


def test_a_database_locked_too_long_is_a_503_with_retry_after(app, settings):
    f.device("q1", f.device_type(), f.worker(online=False))
    if is_sqlite():
        database.execute_sql("PRAGMA busy_timeout = 200")  # the app's connection: this thread's
        holder = sqlite3.connect(database.obj.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        import psycopg2

        database.execute_sql("SET lock_timeout = '200ms'")
        holder = psycopg2.connect(settings.database)
        holder.cursor().execute(f'LOCK TABLE "{TestJob._meta.table_name}" IN EXCLUSIVE MODE')
    try:
        answer = app.api("POST", "/api/v1/jobs", f.job_text(), headers={"Content-Type": "application/yaml"})
    finally:
        holder.rollback() if not is_sqlite() else holder.execute("ROLLBACK")
        holder.close()
    assert answer.status == 503, answer.text
    assert answer.headers["Retry-After"] == "2" and "retry" in answer.json()["error"]
    assert app.api("POST", "/api/v1/jobs", f.job_text(), headers={"Content-Type": "application/yaml"}).status == 201


def xml_call(method: str, params: str) -> str:
    return f"<?xml version='1.0'?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"


def test_xmlrpc_refuses_dtds_in_any_encoding_deep_nesting_and_numbers_out_of_range(app):
    dtd = '<?xml version="1.0" encoding="{enc}"?><!DOCTYPE m [<!ENTITY a "system.version">]>' \
          "<methodCall><methodName>&a;</methodName></methodCall>"
    for encoding in ("utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "iso-8859-1"):
        err = fault(app.api("POST", "/RPC2", dtd.format(enc=encoding.upper()).encode(encoding), token=None))
        # refused at the DOCTYPE; UTF-16 without a BOM and UTF-32 expat does not read at all (never a call)
        assert err.faultCode == -32600, encoding
        assert "DTDs" in err.faultString or encoding in ("utf-16-le", "utf-16-be", "utf-32"), err.faultString
    deep = "<param><value>" + "<array><data><value>" * 30 + "</value></data></array>" * 30 + "</value></param>"
    err = fault(app.api("POST", "/RPC2", xml_call("system.listMethods", deep)))
    assert err.faultCode == -32600 and "nest more than" in err.faultString
    for value, words in (("<i8>99999999999999999999</i8>", "does not fit in 64 bits"),
                         ("<double>1e999</double>", "not a finite number"),
                         ("<int>" + "9" * 5000 + "</int>", "Invalid request")):
        err = fault(app.api("POST", "/RPC2", xml_call("scheduler.jobs.show", f"<param><value>{value}</value></param>")))
        assert words in err.faultString, value
    assert xmlrpc.client.loads(app.api("POST", "/RPC2", "<?xml version='1.0'?><methodCall><methodName>"
                                       "system.version</methodName></methodCall>").body)[0] == ("2025.12",)


def test_a_gzip_body_is_bounded_after_decoding(app, settings):
    body = gzip.compress(xml_call("system.version", "<param><value><string>" + "a" * settings.max_body_anonymous
                                  + "</string></value></param>").encode())
    assert len(body) < settings.max_body_anonymous
    answer = app.api("POST", "/RPC2", body, token=None, headers={"Content-Encoding": "gzip"})
    assert answer.status == 413 and b"after gzip decoding" in answer.body


def test_multicall_is_bounded_in_calls_and_time_and_checks_each_entry(app, monkeypatch):
    def multicall(calls) -> object:
        body = xmlrpc.client.dumps((calls,), "system.multicall", allow_none=True)
        answer = app.api("POST", "/RPC2", body, headers=XML)
        return xmlrpc.client.loads(answer.body)[0][0]

    entries = multicall([{"methodName": "system.version", "params": 5}, "not a struct",
                         {"methodName": "system.multicall", "params": []}, {"methodName": 7},
                         {"methodName": "system.version"}])
    assert [e.get("faultCode") if isinstance(e, dict) else e for e in entries] == [400, 400, 400, 400, ["2025.12"]]
    assert "must be an array" in entries[0]["faultString"]
    err = fault(app.api("POST", "/RPC2", xmlrpc.client.dumps(({"a": 1},), "system.multicall"), headers=XML))
    assert err.faultCode == 400 and "array of {methodName, params}" in err.faultString
    calls = [{"methodName": "system.version", "params": []}] * (system.MULTICALL_MAX + 1)
    err = fault(app.api("POST", "/RPC2", xmlrpc.client.dumps((calls,), "system.multicall"), headers=XML))
    assert err.faultCode == 400 and f"at most {system.MULTICALL_MAX} calls" in err.faultString
    monkeypatch.setattr(system, "MULTICALL_SECONDS", -1.0)  # the budget is spent before the first call
    entries = multicall(calls[:3])
    assert all("not run: system.multicall stops after" in e["faultString"] for e in entries)


def test_json_body_that_is_not_an_object(app):
    answer = app.api("POST", "/api/v1/tags", json.dumps([1, 2]), headers=JSON)
    assert answer.status == 400 and "JSON object" in answer.json()["error"]


def test_nul_characters_are_refused_where_no_text_may_hold_one(app):
    # PostgreSQL refuses NUL in any text: a 400 at the boundary, on every backend alike
    for path in ("/api/v1/devices/a\x00b", "/api/v1/jobs?submitter=%00"):  # (a real server unquotes %00)
        answer = app.api("GET", path)
        assert answer.status == 400 and "NUL character" in answer.json()["error"], path
    answer = app.api("POST", "/api/v1/tags", b'{"name": "a\\u0000b"}', headers=JSON)
    assert answer.status == 400 and "NUL character" in answer.json()["error"]
    # an escaped backslash before u0000 is text, not NUL: a log line holding JSON with \u0000 passes
    answer = app.api("POST", "/api/v1/tags", b'{"name": "a\\\\u0000b"}', headers=JSON)
    assert answer.status != 400 or "NUL" not in answer.json()["error"]


def test_a_database_that_refuses_connections_is_a_503_naming_it(app):
    """PostgreSQL out of connection slots or down: a 503 that says where, not a 500."""
    import socket

    from peewee import PostgresqlDatabase

    with socket.socket() as s:  # a port nothing listens on: the connection is refused for real
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kept = database.obj
    database.initialize(PostgresqlDatabase("dutlab", host="127.0.0.1", port=port, user="nobody", connect_timeout=5))
    try:
        answer = app.api("GET", "/api/v1/jobs")
    finally:
        database.initialize(kept)
    assert answer.status == 503, answer.text
    assert f"PostgreSQL 127.0.0.1:{port}/dutlab" in answer.json()["error"] and answer.headers["Retry-After"] == "5"
    assert app.api("GET", "/api/v1/jobs").status == 200
