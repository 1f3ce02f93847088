"""GET /metrics: Prometheus' text format, from prometheus_client (docs/web-ui.md)."""

from __future__ import annotations

from bottle import HTTPResponse, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ..metrics.collector import LabCollector
from ..metrics.record import LOG_LINES, SUBMISSION_COMMITS, SUBMISSION_WRITES
from . import Routes

routes = Routes()


def registry() -> CollectorRegistry:
    """This app's registry (made at the first scrape): the lab, this process, its log-line count."""
    config = request.app.config
    found = config.get("dutlab.metrics")
    if found is None:
        found = CollectorRegistry(auto_describe=False)
        for own in (ProcessCollector, PlatformCollector, GCCollector):  # they register themselves
            own(registry=found)
        found.register(LabCollector())
        for counter in (LOG_LINES, SUBMISSION_COMMITS, SUBMISSION_WRITES):
            found.register(counter)
        config["dutlab.metrics"] = found
    return found


@routes.get("/metrics")
def metrics() -> HTTPResponse:
    """Prometheus metrics: job counters and histograms, queue, devices, workers, this process."""
    return HTTPResponse(generate_latest(registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})
