"""REST jobs API against a real server: validation corpus, auth, visibility, cancel, resubmit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labkit import http

DATA = Path(__file__).resolve().parents[1] / "data"
BAD = sorted((DATA / "bad-jobs").glob("*.yaml"))
QEMU_DICT = "{% extends 'qemu.jinja2' %}\n{% set memory = 256 %}\n"

JOB = """\
job_name: api test
device_type: qemu
visibility: {visibility}
timeouts:
  job: {{minutes: 5}}
context: {{arch: amd64}}
actions:
- boot: {{method: qemu, media: tmpfs, prompts: ['# ']}}
"""
#: a two-role MultiNode group, one QEMU device each
GROUP = yaml.safe_dump({
    "job_name": "bulk group", "visibility": "public", "timeouts": {"job": {"minutes": 5}},
    "protocols": {"lava-multinode": {"roles": {r: {"device_type": "qemu", "count": 1, "context": {"arch": "amd64"}}
                                                  for r in ("server", "client")}}},
    "actions": [{"boot": {"role": ["server", "client"], "method": "qemu", "media": "tmpfs", "prompts": ["# "]}}],
}, sort_keys=False)


def header(path: Path, key: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}:"):
            return line.split(":", 1)[1].strip()
    return None


def add_queued_lab(lab_server, tmp_path):
    """Device type qemu and one device on an (offline) worker: jobs stay queued."""
    lab_server.manage("device-types", "add", "qemu", "--disable-health-checks")
    lab_server.manage("workers", "add", "w1")
    d = tmp_path / "qemu01.jinja2"
    d.write_text(QEMU_DICT)
    lab_server.manage("devices", "add", "qemu01", "--device-type", "qemu", "--worker", "w1", "--dictionary", str(d))
    return lab_server


@pytest.fixture
def lab(lab_server, tmp_path):
    """A server with device type qemu and one device on an (offline) worker: jobs stay queued."""
    return add_queued_lab(lab_server, tmp_path)


def test_malformed_corpus_is_refused_with_paths(lab):
    assert len(BAD) >= 50
    failures = []
    for path in BAD:
        want = header(path, "path")
        r = lab.api("POST", "/api/v1/jobs", {"definition": path.read_text()})
        body = r.json()
        if r.status != 400 or body.get("path") != want or not body.get("error"):
            failures.append(f"{path.name}: {r.status} {body} (want path {want!r})")
        contains = header(path, "contains")
        if contains and contains not in body.get("error", ""):
            failures.append(f"{path.name}: message {body.get('error')!r} lacks {contains!r}")
    assert not failures, "\n".join(failures)
    assert lab.api("GET", "/api/v1/jobs").json()["count"] == 0  # nothing stored


def test_raw_yaml_body_and_validate(lab):
    r = lab.api("POST", "/api/v1/jobs", JOB.format(visibility="public"), headers={"Content-Type": "application/yaml"})
    assert r.status == 201, r.text
    job_id = r.json()["job_ids"][0]
    job = lab.api("GET", f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "Submitted" and job["health"] == "Unknown" and job["submitter"] == "admin"
    assert lab.api("GET", f"/api/v1/jobs/{job_id}/definition").text == JOB.format(visibility="public")
    ok = lab.api("POST", "/api/v1/jobs/validate", {"definition": JOB.format(visibility="public")}).json()
    assert ok["valid"] is True
    typo = JOB.format(visibility="public").replace("qemu, media", "qemuu, media")
    bad = lab.api("POST", "/api/v1/jobs/validate", {"definition": typo})
    assert bad.status == 200 and bad.json()["valid"] is False and bad.json()["path"] == "actions[0].boot.method"


def test_unknown_device_type_and_tag(lab):
    r = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(visibility="public").replace("device_type: qemu",
                                                                                               "device_type: nope")})
    assert r.status == 400 and r.json()["path"] == "device_type" and "nope" in r.json()["error"]
    r = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(visibility="public") + "tags: [missing]\n"})
    assert r.status == 400 and r.json()["path"] == "tags[0]"


def test_auth_401_vs_403(lab):
    text = {"definition": JOB.format(visibility="public")}
    assert lab.api("POST", "/api/v1/jobs", text, token=None).status == 401
    assert lab.api("POST", "/api/v1/jobs", text, token="wrong").status == 401
    r = lab.api("POST", "/api/v1/jobs", text, auth="Worker whatever")
    assert r.status == 403 and "worker token cannot act as a user" in r.json()["error"]
    bob = lab.add_user("bob")
    job_id = lab.api("POST", "/api/v1/jobs", text).json()["job_ids"][0]
    r = lab.api("POST", f"/api/v1/jobs/{job_id}/cancel", token=bob)
    assert r.status == 403 and "may not cancel" in r.json()["error"]


def test_visibility_personal_and_group(lab):
    bob, carol = lab.add_user("bob"), lab.add_user("carol")
    lab.manage("groups", "add", "team", "--username", "carol")
    personal = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(visibility="personal")},
                       token=bob).json()["job_ids"][0]
    group = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(visibility="{group: [team]}")},
                    token=bob).json()["job_ids"][0]
    assert lab.api("GET", f"/api/v1/jobs/{personal}", token=bob).status == 200
    assert lab.api("GET", f"/api/v1/jobs/{personal}", token=carol).status == 404
    assert lab.api("GET", f"/api/v1/jobs/{personal}", token=None).status == 404
    assert lab.api("GET", f"/api/v1/jobs/{personal}").status == 200  # admin sees all
    assert lab.api("GET", f"/api/v1/jobs/{group}", token=carol).status == 200
    assert lab.api("GET", f"/api/v1/jobs/{group}", token=None).status == 404
    listed = {j["id"] for j in lab.api("GET", "/api/v1/jobs", token=carol).json()["results"]}
    assert group in listed and personal not in listed


def test_cancel_queued_and_resubmit(lab):
    job_id = lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(visibility="public")}).json()["job_ids"][0]
    job = lab.api("POST", f"/api/v1/jobs/{job_id}/cancel").json()
    assert job["state"] == "Finished" and job["health"] == "Canceled"
    r = lab.api("POST", f"/api/v1/jobs/{job_id}/resubmit")
    assert r.status == 201
    new = lab.api("GET", f"/api/v1/jobs/{r.json()['job_ids'][0]}").json()
    assert new["state"] == "Submitted" and new["description"] == "api test"
    assert lab.api("GET", f"/api/v1/jobs/{job_id}/config").status == 404  # never started


def test_list_filters_and_bad_input(lab):
    for _ in range(3):
        lab.api("POST", "/api/v1/jobs", {"definition": JOB.format(visibility="public")})
    assert lab.api("GET", "/api/v1/jobs?state=submitted").json()["count"] == 3
    assert lab.api("GET", "/api/v1/jobs?state=finished").json()["count"] == 0
    r = lab.api("GET", "/api/v1/jobs?state=bogus")
    assert r.status == 400 and r.json()["path"] == "state"
    assert lab.api("GET", "/api/v1/jobs?limit=x").status == 400
    assert lab.api("GET", "/api/v1/jobs/999999").status == 404
    r = lab.api("POST", "/api/v1/jobs", b"\xff\xfe", headers={"Content-Type": "application/yaml"})
    assert r.status == 400
    r = http("POST", lab.url + "/api/v1/jobs", "{not json", token=lab.admin_token,
             headers={"Content-Type": "application/json"})
    assert r.status == 400 and "not valid JSON" in r.json()["error"]


def where(i: int, path: str) -> str:
    return f"definitions[{i}]" + (f".{path}" if path else "")


def test_bulk_submission_is_all_or_nothing_with_the_single_verdict_per_item(lab):
    good = JOB.format(visibility="public")
    r = lab.api("POST", "/api/v1/jobs", {"definitions": [good, good.replace("api test", "second"),
                                                         {**yaml.safe_load(good), "job_name": "as JSON"}]})
    assert r.status == 201, r.text
    items = r.json()["items"]
    assert [len(i["job_ids"]) for i in items] == [1, 1, 1]
    assert r.json()["job_ids"] == [i["job_ids"][0] for i in items]
    names = [lab.api("GET", f"/api/v1/jobs/{i}").json()["description"] for i in r.json()["job_ids"]]
    assert names == ["api test", "second", "as JSON"]
    before = lab.api("GET", "/api/v1/jobs").json()["count"]

    # every item of the malformed corpus gets the verdict it gets alone, its path under its index
    texts = [good] + [p.read_text() for p in BAD] + [good.replace("device_type: qemu", "device_type: nope")]
    singles = [lab.api("POST", "/api/v1/jobs", {"definition": t}) for t in texts[1:]]
    r = lab.api("POST", "/api/v1/jobs", {"definitions": texts})
    body = r.json()
    assert r.status == 400 and body["path"] == where(1, singles[0].json()["path"])
    assert body["error"].startswith(singles[0].json()["error"]) and "nothing was stored" in body["error"]
    want = [{"index": i, "status": s.status, "error": s.json()["error"], "path": where(i, s.json()["path"])}
            for i, s in enumerate(singles, start=1)]
    assert body["errors"] == want
    assert lab.api("GET", "/api/v1/jobs").json()["count"] == before  # the good item was not stored either

    for payload, path in (({"definitions": []}, "definitions"), ({"definitions": good}, "definitions"),
                          ({"definitions": [good, 7]}, "definitions[1]"),
                          ({"definitions": [good], "definition": good}, "definitions")):
        r = lab.api("POST", "/api/v1/jobs", payload)
        assert r.status == 400 and r.json()["path"] == path and r.json()["error"], (payload, r.text)
    assert lab.api("POST", "/api/v1/jobs", {"definitions": [good]}, token=None).status == 401


def test_bulk_submission_takes_a_multinode_group_as_one_item(lab, tmp_path):
    d = tmp_path / "qemu02.jinja2"
    d.write_text(QEMU_DICT)
    lab.manage("devices", "add", "qemu02", "--device-type", "qemu", "--worker", "w1", "--dictionary", str(d))
    r = lab.api("POST", "/api/v1/jobs", {"definitions": [JOB.format(visibility="public"), GROUP]})
    assert r.status == 201, r.text
    [single], group = (i["job_ids"] for i in r.json()["items"])
    first = int(group[0].split(".")[0])
    assert group == [f"{first}.0", f"{first}.1"] and r.json()["job_ids"] == [single, *group]
    assert lab.api("GET", f"/api/v1/jobs/{group[1]}/definition").text == GROUP
