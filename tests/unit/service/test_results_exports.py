"""Result exports: LAVA's "None" strings where LAVA sends them (XML-RPC), null over REST, and JUnit
with durations as `time` and a name per case that JUnit readers do not merge."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import yaml

import factories
from dutlab.service.lab import jobs, results
from dutlab.service.models import TestCase, TestJob, TestSuite


def a_job_with_results(settings) -> int:
    factories.device("qemu01", factories.device_type("qemu"), factories.worker("w1", online=False))
    [job] = jobs.submit(factories.user(), factories.job_text(), settings)
    lava = TestSuite.create(job=job, name="lava")
    smoke = TestSuite.create(job=job, name="0_smoke")
    for label, duration in (("kernel", 0.25), ("initrd", 1.5)):
        meta = {"definition": "lava", "case": "file-download", "level": "1.1", "extra": {"label": label}}
        TestCase.create(suite=lava, name="file-download", result=0, measurement=duration, units="seconds",
                        metadata=yaml.safe_dump(meta))
    TestCase.create(suite=smoke, name="speed", result=0, measurement=12.5, units="MB/s")
    TestCase.create(suite=smoke, name="retried", result=1)
    TestCase.create(suite=smoke, name="retried", result=0)
    return job.id


def test_rest_has_null_where_lava_has_the_string_none(app, db, settings):
    job_id = a_job_with_results(settings)
    rest = {(c["name"], c["measurement"], c["log_start_line"]) for c in
            app.api("GET", f"/api/v1/jobs/{job_id}/results").json()}
    assert ("retried", None, None) in rest and ("speed", "12.5000000000", None) in rest
    assert "None" not in app.api("GET", f"/api/v1/jobs/{job_id}/results?format=yaml").text
    lava = results.as_json(TestJob.get_by_id(job_id), results.cases(TestJob.get_by_id(job_id)))
    assert {c["measurement"] for c in lava if c["name"] == "retried"} == {"None"}  # what lavacli gets


def test_junit_times_durations_and_keeps_every_case(app, db, settings):
    job_id = a_job_with_results(settings)
    root = ET.fromstring(app.api("GET", f"/api/v1/jobs/{job_id}/results?format=junit").body)
    suites = {s.get("name"): s for s in root}
    downloads = {c.get("name"): c.get("time") for c in suites["lava"]}
    assert downloads == {"file-download (kernel)": "0.250", "file-download (initrd)": "1.500"}
    assert suites["lava"].get("time") == "1.750"
    smoke = [(c.get("name"), c.get("time"), [e.tag for e in c]) for c in suites["0_smoke"]]
    assert smoke == [("speed", None, ["system-out"]), ("retried", None, ["failure"]), ("retried #2", None, [])]
    assert suites["0_smoke"].find("testcase/system-out").text == "measurement: 12.5 MB/s"
