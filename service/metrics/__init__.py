"""Prometheus metrics (docs/web-ui.md), with prometheus_client.

    store      the running totals behind counters and histograms, in the database (metric_total):
               every server process adds to them, so serve and consumer count into one series
    record     what adds to them: jobs that started or finished (events.JOB_CHANGED), scheduling
               passes (tasks.py times them); LOG_LINES, the lines this server process ingested
    collector  LabCollector: the totals plus gauges read from small, indexed queries per scrape
               (queue depth and oldest wait per device type, devices by state and health, workers)

No scrape counts the job table: counters are totals kept as things happen, gauges read only
queued and running jobs (an index on state), devices and workers.
"""
