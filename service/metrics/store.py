"""Running totals in the database: counters only ever added to, histograms as bucket counts.

One row per metric and label set (`metric_total`), added to with one upsert, so a total is shared
by every process that changes lab state (serve takes worker reports, the consumer runs passes and
ends abandoned jobs) and survives restarts: a Prometheus counter that never goes down.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from ..db import execute_prebuilt, write_txn
from ..models import MetricTotal

INF = "+Inf"
Labels = Mapping[str, str] | None


def _labels(labels: Labels) -> str:
    return json.dumps(dict(labels or {}), sort_keys=True, separators=(",", ":"))


def _add(name: str, labels: str, amount: float) -> None:
    execute_prebuilt("metric add", _upsert, name, labels, float(amount), float(amount))


def _upsert(name: str, labels: str, value: float, amount: float):
    return (MetricTotal.insert(name=name, labels=labels, value=value)
            .on_conflict(conflict_target=[MetricTotal.name, MetricTotal.labels],
                         update={MetricTotal.value: MetricTotal.value + amount}))


def bucket_of(value: float, buckets: Sequence[float]) -> str:
    """The `le` of the smallest bucket holding `value` ("+Inf" past the last)."""
    for bound in buckets:
        if value <= bound:
            return repr(float(bound))
    return INF


def record(counts: Sequence[tuple[str, float, Labels]] = (),
           observations: Sequence[tuple[str, float, Sequence[float], Labels]] = ()) -> None:
    """Counter additions `(name, amount >= 0, labels)` and histogram observations `(name, value,
    buckets, labels)` in one transaction: what one event adds costs one commit, not one each.

    An observation adds to its bucket's count and to the sum (one row per observation to update,
    not one per bound); `histograms` makes the buckets cumulative as Prometheus shows them."""
    for name, amount, _ in counts:
        if amount < 0 or not math.isfinite(amount):
            raise ValueError(f"counter {name}: cannot add {amount}")
    with write_txn():
        for name, amount, labels in counts:
            _add(name, _labels(labels), amount)
        for name, value, buckets, labels in observations:
            value = max(0.0, float(value))
            base = dict(labels or {})
            _add(name + "_bucket", _labels({**base, "le": bucket_of(value, buckets)}), 1)
            _add(name + "_sum", _labels(base), value)


def totals() -> dict[str, dict[str, float]]:
    """Every stored total: {metric name: {labels JSON: value}} (one query)."""
    out: dict[str, dict[str, float]] = {}
    for name, labels, value in MetricTotal.select(MetricTotal.name, MetricTotal.labels, MetricTotal.value).tuples():
        out.setdefault(name, {})[labels] = value
    return out


def counter_samples(stored: dict[str, dict[str, float]], name: str) -> list[tuple[dict[str, str], float]]:
    return [(json.loads(labels), value) for labels, value in sorted(stored.get(name, {}).items())]


def histogram_samples(stored: dict[str, dict[str, float]], name: str, buckets: Sequence[float]
                      ) -> list[tuple[dict[str, str], list[tuple[str, float]], float]]:
    """(labels, cumulative buckets ending with +Inf, sum) per label set of histogram `name`."""
    counts: dict[str, dict[str, float]] = {}
    for labels, value in stored.get(name + "_bucket", {}).items():
        parsed = json.loads(labels)
        le = parsed.pop("le")
        counts.setdefault(_labels(parsed), {})[le] = value
    sums = stored.get(name + "_sum", {})
    out = []
    for labels in sorted(counts.keys() | sums.keys()):
        per_bucket = counts.get(labels, {})
        running, cumulative = 0.0, []
        for bound in [repr(float(b)) for b in buckets] + [INF]:
            running += per_bucket.get(bound, 0.0)
            cumulative.append((bound, running))
        out.append((json.loads(labels), cumulative, sums.get(labels, 0.0)))
    return out
