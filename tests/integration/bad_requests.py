"""Malformed requests for the fuzz test (test_bad_requests.py): the corpus in tests/data/bad-requests
and generated cases, one sender that opens a new connection per request, and the checks every answer
must pass (no 5xx, no traceback, a 4xx names its problem, an XML-RPC fault is never -32603).

A corpus file is one request:

    method: POST
    path: /api/v1/jobs                    # {worker} and {job_id} are filled in by the test
    as: admin                             # anonymous | admin | worker | job
    headers: {Content-Type: application/json}
    body: ['{"definition": ', {repeat: "[", times: 1500}, "}"]   # parts, concatenated
    chunked: false                        # send the body with Transfer-Encoding: chunked
    expect: {status: 400, contains: nested, fault: -32600}

Body parts: a string (UTF-8), {repeat: s, times: n}, {lines: "{indent}k:", times: n} (n lines,
each indented one level more), {encode: utf-16, text: s}, {gzip: part}.
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad-requests"


@dataclass
class Request:
    name: str
    method: str
    path: str
    who: str = "anonymous"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunked: bool = False
    raw_length: bool = False
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def _part(part: Any) -> bytes:
    if isinstance(part, str):
        return part.encode()
    if "repeat" in part:
        return part["repeat"].encode() * part["times"]
    if "lines" in part:
        return "\n".join(part["lines"].format(indent="  " * i) for i in range(part["times"])).encode() + b"\n"
    if "encode" in part:
        return part["text"].encode(part["encode"])
    if "gzip" in part:
        return gzip.compress(_part(part["gzip"]))
    raise ValueError(f"unknown body part {part!r}")


def corpus() -> list[Request]:
    out = []
    for path in sorted(CORPUS.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        out.append(Request(path.stem, spec["method"], spec["path"], spec.get("as", "anonymous"),
                           dict(spec.get("headers") or {}), b"".join(_part(p) for p in spec.get("body") or []),
                           bool(spec.get("chunked")), bool(spec.get("raw_length")), dict(spec.get("expect") or {})))
    return out


class Sender:
    """Each request on a new connection, so any reset or refusal is the server's, never a stale keep-alive."""

    def __init__(self, port: int, credentials: dict[str, str], fill: dict[str, str]) -> None:
        self.port, self.credentials, self.fill = port, credentials, fill

    def send(self, req: Request) -> Answer:
        path = req.path
        for key, value in self.fill.items():
            path = path.replace("{" + key + "}", value)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        start = time.monotonic()
        try:
            conn.putrequest(req.method, path, skip_accept_encoding=True)
            headers = dict(req.headers)
            if req.who != "anonymous" and "Authorization" not in headers:
                headers["Authorization"] = self.credentials[req.who]
            if req.chunked:
                headers["Transfer-Encoding"] = "chunked"
            elif not req.raw_length:
                headers["Content-Length"] = str(len(req.body))
            for key, value in headers.items():
                conn.putheader(key, value.encode("latin-1") if isinstance(value, str) else value)
            conn.endheaders()
            if req.chunked:
                for at in range(0, len(req.body), 65536):
                    chunk = req.body[at:at + 65536]
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            elif req.body:
                conn.send(req.body)
            resp = conn.getresponse()
            body = resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                          time.monotonic() - start)
        finally:
            conn.close()


def problems(req: Request, answer: Answer) -> list[str]:
    """What is wrong with `answer` to `req`; empty when it passes every rule."""
    out = []
    where = f"{req.name}: {req.method} {req.path[:80]} as {req.who} -> {answer.status}"
    text = answer.body.decode("utf-8", "replace")
    if answer.status >= 500:
        out.append(f"{where}: a 5xx: {text[:300]}")
    if "Traceback" in text:
        out.append(f"{where}: a traceback in the answer")
    if 400 <= answer.status < 500:
        out.extend(f"{where}: {p}" for p in _four_xx(answer, text))
    if answer.status == 200 and answer.headers.get("content-type", "").startswith("application/xml"):
        out.extend(f"{where}: {p}" for p in _xmlrpc(answer.body, req.expect.get("fault")))
    want = req.expect.get("status")
    if want is not None and answer.status not in (want if isinstance(want, list) else [want]):
        out.append(f"{where}: expected {want}: {text[:300]}")
    if req.expect.get("contains") and req.expect["contains"] not in text:
        out.append(f"{where}: the answer does not say {req.expect['contains']!r}: {text[:300]}")
    return out


def _four_xx(answer: Answer, text: str) -> list[str]:
    if answer.headers.get("content-type", "").startswith("application/json"):
        try:
            error = json.loads(answer.body).get("error")
        except (ValueError, AttributeError):
            return [f"a 4xx whose JSON cannot be read: {text[:200]}"]
        if not isinstance(error, str) or len(error) < 10:
            return [f"a 4xx that does not name its problem: {text[:200]}"]
        return []
    if len(text.strip()) < 10:
        return [f"a 4xx without a sentence: {text[:200]!r}"]
    return []


def _xmlrpc(body: bytes, fault: int | None) -> list[str]:
    try:
        xmlrpc.client.loads(body, use_builtin_types=True)
    except xmlrpc.client.Fault as exc:
        if exc.faultCode == -32603:
            return [f"an internal-error fault: {exc.faultString[:200]}"]
        if len(exc.faultString) < 10:
            return [f"a fault that does not name its problem: {exc.faultString!r}"]
        if fault is not None and exc.faultCode != fault:
            return [f"fault {exc.faultCode} instead of {fault}: {exc.faultString[:200]}"]
        return []
    except Exception as exc:  # noqa: BLE001 (any parse failure is the finding)
        return [f"an XML-RPC answer that does not parse: {exc}"]
    if fault is not None:
        return [f"no fault, expected {fault}"]
    text = body.decode("utf-8", "replace")
    return [f"an internal-error fault inside a multicall: {text[:200]}"] if "<int>-32603</int>" in text else []


# -- generated cases -------------------------------------------------------------------------

#: values that break handlers that trust their input (JSON text, so NaN and huge numbers too)
JSON_VALUES = ["null", "true", "0", "-1", "1.5", "1e999", "-1e999", "NaN", "Infinity", "99999999999999999999",
               '""', '"x"', '"' + "x" * 5000 + '"', '"\\u0000"', '"\\ud800"', '"../../etc/passwd"', "[]", "{}",
               '[{"a": []}]', '{"a": {"b": {"c": null}}}', '"é"', '"2026-13-45T99:99:99"', "[" * 150 + "]" * 150]
FIELDS = ["name", "hostname", "device_type", "worker", "description", "health", "reason", "dictionary",
          "definition", "user", "username", "password", "secret", "members", "permissions", "tags", "owner_user",
          "owner_group", "job_limit", "health_frequency", "template", "state", "index", "lines", "result",
          "protocol", "running", "email", "is_superuser", "log_line_count", "error_type"]
RAW_BODIES = [b"{", b"}", b"[]", b"null", b'"just a string"', b"\xff\xfe\x00", b"{'single': 'quotes'}",
              b'{"a": 1, "a": 2}', b"\x00" * 64, b"[" * 3000, b'{"' + b"k" * 10000 + b'": 1}',
              "{\"ü\": \"\u2028\"}".encode(), b"<xml/>", b"---\n- a\n- b\n"]
PATH_INTS = ["99999999999999999999", "9223372036854775808", "-9223372036854775809", "-1", "0", "1" + "0" * 30]
PATH_NAMES = ["nope", "%00", "a" * 300, "%C3%A9", "..", "%2e%2e%2fetc", "x%20y", "%FF%FE", "q1%0d%0aX:%20y"]
QUERIES = ["?limit=abc", "?limit=-5", "?limit=99999999999999999999", "?offset=1e999", "?state=Nope",
           "?health=%FF", "?start=-1&end=99999999999999999999", "?format=nope", "?render=1&context=%7B%7B",
           "?context=[" + "[" * 200, "?user=%00", "?" + "a=1&" * 500]


def route_cases(routes: list[tuple[str, str, str]], rng: random.Random, per_route: int) -> list[Request]:
    """Malformed requests for every route: odd path values, query strings, bodies and callers."""
    out = []
    for rule, method, auth in routes:
        if rule.startswith("/internal/v1/workers"):
            who_pool = ["worker", "anonymous", "admin"]
        elif rule.startswith("/internal/v1/jobs"):
            who_pool = ["job", "anonymous", "worker"]
        else:
            who_pool = ["anonymous", "admin", "admin"] if auth != "public" else ["anonymous", "admin"]
        for n in range(per_route):
            path = _fill_rule(rule, rng, n)
            if method == "GET" or rng.random() < 0.2:
                path += rng.choice(QUERIES)
            body, headers = b"", {}
            if method in ("POST", "PUT", "PATCH"):
                body, headers = _body(rng, rule)
            out.append(Request(f"route {method} {rule} #{n}", method, path, rng.choice(who_pool), headers, body))
    return out


def _fill_rule(rule: str, rng: random.Random, n: int) -> str:
    out = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            name, _, kind = part[1:-1].partition(":")
            if name == "name" and rule.startswith("/internal/v1/workers"):
                out.append("{worker}" if n % 3 else rng.choice(PATH_NAMES))
            elif name == "job_id" and rule.startswith("/internal/v1/jobs"):
                out.append("{job_id}" if n % 3 else rng.choice(PATH_INTS))
            else:
                out.append(rng.choice(PATH_INTS if kind == "int" else PATH_NAMES))
        else:
            out.append(part)
    return "/".join(out)


def _body(rng: random.Random, rule: str) -> tuple[bytes, dict[str, str]]:
    kind = rng.random()
    if kind < 0.15:
        return rng.choice(RAW_BODIES), {"Content-Type": "application/json"}
    if kind < 0.25:
        return rng.randbytes(rng.randrange(1, 2000)), {"Content-Type": rng.choice(["application/json", "text/plain"])}
    keys = rng.sample(FIELDS, rng.randrange(1, 5))
    if "/poll" in rule and rng.random() < 0.7:
        keys = ["protocol", *keys]  # reach past the protocol check; "wait" is never sent: polls answer at once
    items = [f'"{key}": {"1" if key == "protocol" and rng.random() < 0.5 else rng.choice(JSON_VALUES)}'
             for key in keys]
    return ("{" + ", ".join(items) + "}").encode(), {"Content-Type": "application/json"}


YAML_VALUES = ["[", "{", "99999999999999999999", "-1", "1e999", ".nan", "*x", "&a [*a]", "!!python/object:os.system",
               "~", "é" * 50, "{days: 99999999999}", "http://[::1", "file:///etc/shadow", "2026-13-45"]


def job_cases(texts: list[str], rng: random.Random, count: int) -> list[Request]:
    """Valid job definitions, mutated: a line dropped, doubled, cut, retyped or garbled."""
    out = []
    for n in range(count):
        lines = rng.choice(texts).splitlines()
        at = rng.randrange(len(lines))
        kind = n % 6
        if kind == 0:
            del lines[at]
        elif kind == 1:
            lines.insert(at, lines[at])
        elif kind == 2 and ":" in lines[at]:
            key = lines[at].split(":", 1)[0]
            lines[at] = f"{key}: {rng.choice(YAML_VALUES)}"
        elif kind == 3:
            lines = lines[:at] + [lines[at][: rng.randrange(len(lines[at]) + 1)]]
        elif kind == 4:
            lines[at] = " " * rng.randrange(1, 7) + lines[at]
        else:
            lines[at] = lines[at] + rng.choice(["\t", "\x00", "\ufeff", "\u2028", " #", " &", " !!binary x"])
        text = "\n".join(lines) + "\n"
        as_json = n % 5 == 4
        body = json.dumps({"definition": text}).encode() if as_json else text.encode()
        ctype = "application/json" if as_json else "application/yaml"
        path = "/api/v1/jobs" if n % 4 == 0 else "/api/v1/jobs/validate"
        out.append(Request(f"job mutation #{n}", "POST", path, "admin" if n % 3 else "anonymous",
                           {"Content-Type": ctype}, body))
    return out


#: XML-RPC argument values: wrong types, ids out of range, odd strings, nested data
RPC_VALUES: list[Any] = [None, 0, -1, 2**31 - 1, -(2**31), 1.5, True, "", "x", "nope", "99999999999999999999", "-1",
                         "12.1", "a" * 3000, "\x01\x02", "é", [], {}, [[["x"]]], {"a": {"b": [1, 2]}},
                         xmlrpc.client.Binary(b"\x00\xff"), xmlrpc.client.DateTime("20260101T00:00:00")]


def rpc_cases(names: list[str], rng: random.Random, per_method: int) -> list[Request]:
    """Every XML-RPC method with wrong arities and argument types, plus truncated documents."""
    out = []
    for name in names:
        for n in range(per_method):
            params = tuple(rng.choice(RPC_VALUES) for _ in range(rng.randrange(0, 6)))
            if name == "system.multicall" and params:
                params = ([{"methodName": rng.choice(names), "params": list(params[1:])}, params[0]],)
            body = xmlrpc.client.dumps(params, name, allow_none=True).encode()
            out.append(Request(f"rpc {name} #{n}", "POST", "/RPC2", "admin" if n % 2 else "anonymous",
                               {"Content-Type": "text/xml"}, body))
    whole = xmlrpc.client.dumps(({"a": [1, "b", None]}, "x"), "scheduler.jobs.list", allow_none=True).encode()
    for n in range(len(whole)):
        if rng.random() < 0.6:
            out.append(Request(f"rpc truncated at {n}", "POST", "/RPC2", "anonymous", {"Content-Type": "text/xml"},
                               whole[:n] + rng.choice([b"", b"<", b"&", b"\xff", b"]]>"])))
    return out
