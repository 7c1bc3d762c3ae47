"""The table-derived gauges of :data:`lakebed.metrics.TABLE_GAUGES`, computed at scrape time.

Freshness, tier sizes, quality outcomes and unsent lineage describe the lake, not a process: a collector
reads them from where lakebed keeps them (the online store's newest ``feature_ts`` per view version, the
tiered tables' Delta logs, the ``quality_results`` table, ``HOME/lineage/unsent.jsonl``) each time
Prometheus scrapes, so batch jobs need no process of their own to report them (``lakebed metrics serve``)
and nothing is stored twice. A part that cannot be read (e.g. no quality results yet) is left out and
logged; the others are still answered.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lakebed import metrics
from lakebed.config import LakebedConfig

log = logging.getLogger(__name__)


def _family(name: str) -> GaugeMetricFamily:
    documentation, labels = metrics.TABLE_GAUGES[name]
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def freshness(config: LakebedConfig, now: dt.datetime | None = None) -> list[tuple[str, int, float]]:
    """``(view, version, seconds)`` per registered view version the online store holds: now minus its
    newest ``feature_ts``."""
    from lakebed.pipelines.features.online import default_online_store
    from lakebed.pipelines.features.registry import list_views

    if not config.home.is_dir():
        return []  # no lake yet (opening the online store would create one)
    store = default_online_store(config)
    held = set(store.views())
    now = now or dt.datetime.now(dt.UTC)
    found = []
    for entry in list_views(config=config):
        view = entry.view
        latest = store.latest_feature_ts(view.offline_table) if view.offline_table in held else None
        if latest is not None:
            found.append((view.name, view.version, (now - latest).total_seconds()))
    return found


def _freshness(config: LakebedConfig) -> Iterator[GaugeMetricFamily]:
    family = _family(metrics.FEATURE_FRESHNESS)
    for name, version, seconds in freshness(config):
        family.add_metric([name, str(version)], seconds)
    yield family


def _tiers(config: LakebedConfig) -> Iterator[GaugeMetricFamily]:
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.tiering import status
    from lakebed.pipelines.tiering.plan import policy_of

    rows, size = _family(metrics.TIER_ROWS), _family(metrics.TIER_BYTES)
    for entry in Catalog(config).list():
        if policy_of(entry) is None:
            continue
        state = status(entry.name, config=config)
        for tier, count, nbytes in (
            ("hot", state.hot_rows, state.hot_bytes),
            ("cold", state.cold_rows, state.cold_bytes),
        ):
            rows.add_metric([entry.name, tier], count)
            size.add_metric([entry.name, tier], nbytes)
    yield rows
    yield size


def _quality(config: LakebedConfig) -> Iterator[GaugeMetricFamily]:
    """Failed rows per rule in each table's latest check (the newest ``check_id`` by ``checked_at``)."""
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.quality import RESULTS_TABLE
    from lakebed.pipelines.read import read_table

    family = _family(metrics.QUALITY_LAST_FAILED)
    if Catalog(config).find(RESULTS_TABLE) is not None:
        rows = read_table(
            RESULTS_TABLE,
            columns=["check_id", "table_name", "rule", "failed_rows", "checked_at"],
            config=config,
        ).to_pylist()
        latest: dict[str, tuple[Any, str]] = {}
        for row in rows:
            known = latest.get(row["table_name"])
            if known is None or row["checked_at"] > known[0]:
                latest[row["table_name"]] = (row["checked_at"], row["check_id"])
        for row in rows:
            if latest[row["table_name"]][1] == row["check_id"]:
                family.add_metric([row["table_name"], row["rule"]], row["failed_rows"])
    yield family


def _lineage(config: LakebedConfig) -> Iterator[GaugeMetricFamily]:
    from lakebed.lineage.emit import pending

    family = _family(metrics.LINEAGE_UNSENT)
    family.add_metric([], pending(config))
    yield family


PARTS: dict[str, Callable[[LakebedConfig], Iterator[GaugeMetricFamily]]] = {
    "freshness": _freshness,
    "tiers": _tiers,
    "quality": _quality,
    "lineage": _lineage,
}


class TableMetrics(Collector):
    """A Prometheus collector of the table-derived gauges of one lakebed home (``parts`` of
    :data:`PARTS`)."""

    def __init__(self, config: Callable[[], LakebedConfig], parts: tuple[str, ...] = tuple(PARTS)) -> None:
        self.config = config
        self.parts = parts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        config = self.config()
        for part in self.parts:
            try:
                yield from list(PARTS[part](config))
            except Exception:
                log.exception("metrics: the %s gauges could not be read", part)

    def describe(self) -> list[Any]:
        return []  # computed at scrape time: nothing to read when the collector is registered


def table_registry(
    config: Callable[[], LakebedConfig], parts: tuple[str, ...] = tuple(PARTS)
) -> CollectorRegistry:
    """A registry holding only a :class:`TableMetrics` (what ``/metrics`` adds to the process's own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TableMetrics(config, parts))
    return registry


__all__ = ["PARTS", "TableMetrics", "freshness", "table_registry"]
