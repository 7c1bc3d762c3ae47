"""Every lakebed metric (Prometheus, ``lakebed_*``), defined once, and how a process exposes them.

The metrics are recorded where the code already tracks the facts (the stream worker's offsets, the write
path's commits, the materialiser's runs, the servers' requests), never in a second bookkeeping. Gauges that
describe tables rather than a process (feature freshness, tier sizes, quality outcomes, unsent lineage)
are computed at scrape time from the tables by a collector (:mod:`lakebed.pipelines.table_metrics`);
their names are declared here too (:data:`TABLE_GAUGES`), so one module lists every name lakebed exports (:func:`exported_series`).

Labels name tables, topics, partitions, views, routes and rules: a bounded set, never a request's values
and never a secret.

Several processes (``lakebed serve features --workers N``) use prometheus-client's multiprocess mode:
:func:`prepare_multiprocess` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder under the lakebed home
before the worker processes start (each then writes its values to files there), and :func:`exposition`
aggregates the files of every process.

Hot paths (an online lookup, a feature-server request: microseconds each) observe their histograms
through :class:`Buffered`: an append, folded into the histogram in bulk (:func:`fold`) before every
exposition, by a server every few seconds, and every few thousand observations.
"""

from __future__ import annotations

import bisect
import collections
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from lakebed.config import LakebedConfig

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Latency buckets of requests that take microseconds to milliseconds (the default ones start at 5 ms).
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Batch work: a commit, a materialisation, a tier move (tens of milliseconds to minutes).
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# --- stream ingest (pipelines/stream/ingest.py) ------------------------------------------------------
STREAM_LABELS = ("table", "topic", "partition")
STREAM_RECORDS = Counter(
    "lakebed_stream_records_total",
    "Kafka records committed through the write path (appended, or quarantined by its rules).",
    STREAM_LABELS,
)
STREAM_DEAD_LETTERS = Counter(
    "lakebed_stream_dead_letters_total", "Kafka records written to the dead-letter table.", STREAM_LABELS
)
STREAM_BUFFERED = Gauge(
    "lakebed_stream_buffered_records",
    "Records fetched into the current micro-batch but not yet committed to Delta.",
    STREAM_LABELS,
    multiprocess_mode="livesum",
)
STREAM_LAG = Gauge(
    "lakebed_stream_lag_records",
    "The partition's end offset minus the next offset to commit to Delta (the Delta transactions).",
    STREAM_LABELS,
    multiprocess_mode="livesum",
)

# --- the write path (pipelines/delta.py) -------------------------------------------------------------
COMMIT_DURATION = Histogram(
    "lakebed_delta_commit_duration_seconds",
    "Seconds of one commit through the write path (checks, write, bookkeeping).",
    ("table",),
    buckets=_SLOW,
)
COMMIT_CONFLICTS = Counter(
    "lakebed_delta_commit_conflicts_total",
    "Commits that met a concurrent commit (CommitFailedError) and were given up or retried by the caller.",
    ("table",),
)

# --- features (pipelines/features/, lakebed/feature_store.py) ----------------------------------------
MATERIALIZE_DURATION = Histogram(
    "lakebed_feature_materialization_duration_seconds",
    "Seconds of one materialisation of a feature view version (offline and online).",
    ("view", "version"),
    buckets=_SLOW,
)
ONLINE_LOOKUP = Histogram(
    "lakebed_online_lookup_duration_seconds",
    "Seconds of one online lookup (every requested entity and feature of one call).",
    buckets=_FAST,
)

# --- quality (pipelines/quality.py) -------------------------------------------------------------------
QUALITY_RESULTS = Counter(
    "lakebed_quality_results_total",
    "Quality rule results recorded by the write path, by outcome (passed, failed, warned).",
    ("table", "rule", "outcome"),
)
QUARANTINED_ROWS = Counter(
    "lakebed_quality_quarantined_rows_total",
    "Rows moved to <table>__quarantine by the write path.",
    ("table",),
)

# --- tiering (pipelines/tiering/move.py) --------------------------------------------------------------
TIER_MOVE_DURATION = Histogram(
    "lakebed_tier_move_duration_seconds",
    "Seconds of one move of rows from the hot to the cold tier.",
    ("table",),
    buckets=_SLOW,
)

# --- HTTP servers (lakebed/probes.py) ------------------------------------------------------------------
HTTP_DURATION = Histogram(
    "lakebed_http_request_duration_seconds",
    "Seconds from a request's arrival to its answer, by server, route template, method and status.",
    ("server", "route", "method", "status"),
    buckets=_FAST,
)

# --- table-derived gauges (computed at scrape time, pipelines/table_metrics.py) -------------------------
FEATURE_FRESHNESS = "lakebed_feature_freshness_seconds"
TIER_ROWS = "lakebed_tier_rows"
TIER_BYTES = "lakebed_tier_bytes"
QUALITY_LAST_FAILED = "lakebed_quality_last_failed_rows"
LINEAGE_UNSENT = "lakebed_lineage_unsent_events"
TABLE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    FEATURE_FRESHNESS: (
        "Seconds since the newest materialised feature_ts of a view version.",
        ("view", "version"),
    ),
    TIER_ROWS: ("Rows of a tiered table in each tier.", ("table", "tier")),
    TIER_BYTES: ("Bytes of the data files of a tiered table in each tier.", ("table", "tier")),
    QUALITY_LAST_FAILED: (
        "Rows that failed each rule in the table's latest recorded quality run.",
        ("table", "rule"),
    ),
    LINEAGE_UNSENT: ("OpenLineage events kept in HOME/lineage/unsent.jsonl for the backend.", ()),
}


def exported_series() -> dict[str, tuple[str, ...]]:
    """Every metric lakebed exports: its family name → the series names a query can use (a counter's
    ``_total``; a histogram's ``_bucket``, ``_sum`` and ``_count``; a gauge's own name)."""
    series: dict[str, tuple[str, ...]] = {name: (name,) for name in TABLE_GAUGES}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for metric in (
        STREAM_RECORDS,
        STREAM_DEAD_LETTERS,
        STREAM_BUFFERED,
        STREAM_LAG,
        COMMIT_DURATION,
        COMMIT_CONFLICTS,
        MATERIALIZE_DURATION,
        ONLINE_LOOKUP,
        QUALITY_RESULTS,
        QUARANTINED_ROWS,
        TIER_MOVE_DURATION,
        HTTP_DURATION,
    ):
        for family in metric.describe():
            series[family.name] = tuple(family.name + suffix for suffix in suffixes[family.type])
    return series


class Buffered:
    """Observations of one histogram (or labelled child) kept in a queue and folded into it in bulk: an
    observe is an append (tens of nanoseconds) instead of a lock and a bucket search per value. Folded by
    :func:`fold` (every exposition calls it), and by the observer itself every :attr:`LIMIT` values."""

    LIMIT = 4_096
    _all: list[Buffered] = []

    def __init__(self, histogram: Histogram) -> None:
        self._histogram: Any = histogram  # its bucket values are prometheus-client's own attributes
        self._bounds = list(self._histogram._upper_bounds)
        self._pending: collections.deque[float] = collections.deque()
        self._folding = threading.Lock()
        Buffered._all.append(self)

    def observe(self, seconds: float) -> None:
        self._pending.append(seconds)
        if len(self._pending) >= self.LIMIT:
            self.fold()

    def fold(self) -> None:
        """Count the pending values into the histogram, as ``observe`` of each would (a value lands in
        the first bucket whose upper bound is at least the value)."""
        with self._folding:
            pending = self._pending
            values = [pending.popleft() for _ in range(len(pending))]  # popleft: safe against appends
        if not values:
            return
        buckets = collections.Counter(bisect.bisect_left(self._bounds, v) for v in values)
        for index, count in buckets.items():
            self._histogram._buckets[index].inc(count)
        self._histogram._sum.inc(sum(values))


def fold() -> None:
    """Fold every :class:`Buffered` histogram's pending observations."""
    for buffered in list(Buffered._all):
        buffered.fold()


ONLINE_LOOKUPS = Buffered(ONLINE_LOOKUP)
"""How the online reads observe :data:`ONLINE_LOOKUP`."""


def multiprocess_dir(config: LakebedConfig) -> Path:
    return config.home / "metrics"


def prepare_multiprocess(config: LakebedConfig) -> Path:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at a fresh ``HOME/metrics`` (the files of a previous run's
    processes would otherwise be counted again); the worker processes started after this inherit it."""
    folder = multiprocess_dir(config)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_VARIABLE] = str(folder)
    return folder


def exposition(registry: CollectorRegistry | None = None) -> bytes:
    """The text exposition of this process's metrics (of every process in multiprocess mode), plus the
    collectors of ``registry`` when given (e.g. the table-derived gauges)."""
    fold()
    folder = os.environ.get(MULTIPROC_VARIABLE)
    if folder:
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=folder)
        text = generate_latest(merged)
    else:
        text = generate_latest(REGISTRY)
    return text + generate_latest(registry) if registry is not None else text


__all__ = [
    "CONTENT_TYPE",
    "ONLINE_LOOKUPS",
    "Buffered",
    "TABLE_GAUGES",
    "exported_series",
    "exposition",
    "fold",
    "multiprocess_dir",
    "prepare_multiprocess",
]
