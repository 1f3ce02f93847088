"""/metrics in process: the text parses with prometheus_client's own parser, the histograms are
there, and between two scrapes with jobs scheduled, run, finished and canceled the counters only
go up (by what happened)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

import factories
from dutlab.dispatcher.protocol import JobResult
from dutlab.service import tasks
from dutlab.service.lab import jobs
from dutlab.service.models import TestJob, User
from dutlab.service.states import DeviceHealth, JobState

HISTOGRAMS = ("dutlab_job_queue_wait_seconds", "dutlab_job_duration_seconds", "dutlab_scheduler_pass_seconds")


def scrape(app) -> dict:
    """{family name: family} of one scrape, parsed as Prometheus parses it."""
    answer = app.api("GET", "/metrics", token=None)
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(answer.text)}


def samples(families: dict, kind: str) -> dict:
    """{(sample name, labels): value} of every family of this type."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values() if f.type == kind for s in f.samples}


def value(families: dict, sample: str, **labels: str) -> float:
    return sum(s.value for f in families.values() for s in f.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_have_histograms_and_counters_only_go_up(app, settings):
    dtype = factories.device_type("qemu", template="qemu")
    factories.device("qemu01", dtype, factories.worker("w1"), health=DeviceHealth.GOOD)
    alice = factories.user("alice")
    text = factories.job_text("counted", "qemu", extra="context: {arch: amd64}")
    [ran] = jobs.submit(alice, text, settings)
    [queued] = jobs.submit(alice, text, settings)
    first = scrape(app)
    for name in HISTOGRAMS:
        assert first[name].type == "histogram", name
    for name in ("dutlab_jobs_finished", "dutlab_jobs_started", "dutlab_scheduler_passes"):
        assert first[name].type == "counter", name
    assert value(first, "dutlab_queue_depth", device_type="qemu") == 2
    assert first["process_cpu_seconds"].type == "counter"  # this process's own metrics
    assert first["dutlab_log_lines_ingested"].type == "counter"
    # activity: a scheduling pass puts one job on the device, it runs and passes; the other is canceled
    tasks.schedule_pass.call_local("metrics test")
    ran = TestJob.get_by_id(ran.id)
    assert ran.state == JobState.SCHEDULED, ran.state
    jobs.finish(jobs.mark_running(ran), JobResult("pass"))
    jobs.cancel(User.get(User.username == "alice"), queued)
    second = scrape(app)
    before, after = samples(first, "counter"), samples(second, "counter")
    before.update(samples(first, "histogram"))
    after.update(samples(second, "histogram"))
    went_down = {key: (before[key], after.get(key)) for key in before
                 if key in after and after[key] < before[key] and not key[0].startswith(("python_gc", "process_"))}
    assert not went_down, went_down
    assert set(before) - set(after) == set(), "a counter sample disappeared"
    assert value(second, "dutlab_jobs_finished_total", health="Complete") == \
        value(first, "dutlab_jobs_finished_total", health="Complete") + 1
    assert value(second, "dutlab_jobs_finished_total", health="Canceled") == \
        value(first, "dutlab_jobs_finished_total", health="Canceled") + 1
    assert value(second, "dutlab_jobs_started_total") == value(first, "dutlab_jobs_started_total") + 1
    assert value(second, "dutlab_scheduler_passes_total") >= value(first, "dutlab_scheduler_passes_total") + 1
    for name in HISTOGRAMS:
        assert value(second, name + "_count") >= value(first, name + "_count") + 1, name
        buckets = [s for s in second[name].samples if s.name == name + "_bucket"]
        assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == value(
            second, name + "_count", **{k: v for k, v in buckets[-1].labels.items() if k != "le"})
    assert value(second, "dutlab_queue_depth", device_type="qemu") == 0
