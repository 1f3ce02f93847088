"""The custom collector /metrics reads: stored totals plus gauges from small, indexed queries.

A scrape costs a fixed number of queries whatever the lab's history: one for every stored total,
one for the queue (Submitted jobs, by the state index), one for running jobs, one each for devices
and workers. Nothing counts finished jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from peewee import fn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..db import connection
from ..models import Device, DeviceType, TestJob, Worker, utcnow
from ..states import DeviceHealth, DeviceState, JobState, WorkerHealth, WorkerState
from . import record, store

#: jobs that hold a device (or are about to)
RUNNING = (JobState.SCHEDULING, JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING)

COUNTERS = (
    (record.JOBS_FINISHED, "Test jobs that reached Finished, by device type and health.", ("device_type", "health")),
    (record.JOBS_STARTED, "Test jobs that started running, by device type.", ("device_type",)),
    (record.PASSES, "Scheduling passes run.", ()),
)
HISTOGRAMS = (
    (record.QUEUE_WAIT, "Seconds from submission to the start of a job's run.", ("device_type",),
     record.QUEUE_WAIT_BUCKETS),
    (record.JOB_DURATION, "Seconds from the start of a job's run to its end.", ("device_type",),
     record.JOB_DURATION_BUCKETS),
    (record.PASS_DURATION, "Seconds one scheduling pass took.", (), record.PASS_BUCKETS),
)


def _counter_name(name: str) -> str:
    return name.removesuffix("_total")  # prometheus_client adds the suffix back


def _by_state_and_health(name: str, doc: str, model: Any, states: Any, healths: Any) -> GaugeMetricFamily:
    """A gauge of `model`'s rows for every state and health (zeros included), in one query."""
    family = GaugeMetricFamily(name, doc, labels=["state", "health"])
    counts = {(s, h): n for s, h, n in model.select(model.state, model.health, fn.COUNT(model.id))
              .group_by(model.state, model.health).tuples()}
    for state in states:
        for health in healths:
            family.add_metric([state.label, health.label], counts.get((state, health), 0))
    return family


class LabCollector(Collector):
    """The lab's metrics, read from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        with connection():
            yield from self._totals()
            yield from self._queue()
            yield from self._devices()
            yield from self._workers()

    def _totals(self) -> Iterator[Metric]:
        stored = store.totals()
        for name, doc, labels in COUNTERS:
            family = CounterMetricFamily(_counter_name(name), doc, labels=list(labels))
            for values, value in store.counter_samples(stored, name):
                family.add_metric([values.get(k, "") for k in labels], value)
            yield family
        for name, doc, labels, buckets in HISTOGRAMS:
            family = HistogramMetricFamily(name, doc, labels=list(labels))
            for values, cumulative, total in store.histogram_samples(stored, name, buckets):
                family.add_metric([values.get(k, "") for k in labels], cumulative, total)
            yield family

    def _queue(self) -> Iterator[Metric]:
        names = dict(DeviceType.select(DeviceType.id, DeviceType.name).tuples())
        queued = (TestJob.select(TestJob.requested_device_type, fn.COUNT(TestJob.id), fn.MIN(TestJob.submit_time))
                  .where(TestJob.state == JobState.SUBMITTED).group_by(TestJob.requested_device_type).tuples())
        depth = GaugeMetricFamily("dutlab_queue_depth", "Submitted jobs waiting, by device type.",
                                  labels=["device_type"])
        oldest = GaugeMetricFamily("dutlab_queue_oldest_wait_seconds",
                                   "Seconds the oldest Submitted job of a device type has waited.",
                                   labels=["device_type"])
        now = utcnow()
        waiting = {type_id: (count, first) for type_id, count, first in queued}
        for type_id, name in sorted(names.items(), key=lambda item: item[1]):
            count, first = waiting.get(type_id, (0, None))
            depth.add_metric([name], count)
            oldest.add_metric([name], max(0.0, (now - first).total_seconds()) if first else 0.0)
        running = GaugeMetricFamily("dutlab_jobs_running", "Jobs scheduled or running, by device type.",
                                    labels=["device_type"])
        busy = dict(TestJob.select(TestJob.requested_device_type, fn.COUNT(TestJob.id))
                    .where(TestJob.state.in_(RUNNING)).group_by(TestJob.requested_device_type).tuples())
        for type_id, name in sorted(names.items(), key=lambda item: item[1]):
            running.add_metric([name], busy.get(type_id, 0))
        yield from (depth, oldest, running)

    def _devices(self) -> Iterator[Metric]:
        yield _by_state_and_health("dutlab_devices", "Devices by state and health.", Device, DeviceState,
                                   DeviceHealth)

    def _workers(self) -> Iterator[Metric]:
        yield _by_state_and_health("dutlab_workers", "Workers by state and health.", Worker, WorkerState,
                                   WorkerHealth)
        online = GaugeMetricFamily("dutlab_worker_online", "1 for each worker that is Online, else 0.",
                                   labels=["worker"])
        for hostname, state in Worker.select(Worker.hostname, Worker.state).order_by(Worker.hostname).tuples():
            online.add_metric([hostname], 1 if state == WorkerState.ONLINE else 0)
        yield online
