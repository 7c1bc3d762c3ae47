"""The offline layout: segments stand for the dense rows exactly, stay within their bound, read back by
point-in-time retrieval exactly as the dense rows did, and earlier dense tables are read and rewritten."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import Transaction

from lakebed.config import LakebedConfig
from lakebed.pipelines.delta import commit
from lakebed.pipelines.features.changes import coalesce, compute_segments, dense_rows, iter_segments
from lakebed.pipelines.features.materialize import _state_metadata, materialize
from lakebed.pipelines.features.registry import FeatureRegistry
from lakebed.pipelines.features.retrieval import get_historical_features
from lakebed.pipelines.features.windows import compute_features
from lakebed.pipelines.read import read_table
from lakebed.schemas.features import FEATURE_VALID_TO, FeatureView

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def view_of(aggregations: list[dict[str, Any]], **changes: Any) -> FeatureView:
    spec: dict[str, Any] = {
        "name": "seg",
        "version": 1,
        "entities": ["k"],
        "source": {"table": "events"},
        "event_time": "t",
        "hop": "5m",
        "ttl": "7m",
        "allowed_lateness": "30d",
        "aggregations": aggregations,
    }
    spec.update(changes)
    return FeatureView.model_validate(spec)


FLOATS = [
    {"name": "n_1h", "function": "count", "window": "1h"},
    {"name": "sum_1d", "function": "sum", "column": "x", "window": "1d"},
    {"name": "mean_1h", "function": "mean", "column": "x", "window": "1h"},
    {"name": "last_1d", "function": "last", "column": "x", "window": "1d"},
    {"name": "max_30m", "function": "max", "column": "x", "window": "30m"},
]
EXACT = [
    {"name": "n_2h", "function": "count", "window": "2h"},
    {"name": "units_2h", "function": "sum", "column": "units", "window": "2h"},
    {"name": "price_20m", "function": "sum", "column": "price", "window": "20m"},
    {"name": "min_f32_20m", "function": "min", "column": "f32", "window": "20m"},
    {"name": "kind_2h", "function": "last", "column": "kind", "window": "2h"},
]


def random_events(seed: int, n: int, entities: int, days: float) -> pa.Table:
    rnd = random.Random(seed)
    span = int(days * 86_400_000_000)
    times = [T0 + dt.timedelta(microseconds=rnd.randrange(span)) for _ in range(n)]
    return pa.table(
        {
            "k": pa.array([rnd.randrange(entities) for _ in range(n)], pa.int64()),
            "t": pa.array(times, pa.timestamp("us", tz="UTC")),
            "x": pa.array([round(rnd.gauss(0, 3), 2) for _ in range(n)], pa.float64()),
            "units": pa.array([rnd.randrange(5) for _ in range(n)], pa.int32()),
            "price": pa.array([Decimal(rnd.randrange(10_000)) / 100 for _ in range(n)], pa.decimal128(9, 2)),
            "f32": pa.array([rnd.uniform(-1, 1) for _ in range(n)], pa.float32()),
            "kind": pa.array([rnd.choice(["a", "b", None]) for _ in range(n)], pa.string()),
        }
    )


@pytest.mark.parametrize(("aggregations", "seed"), [(FLOATS, 1), (FLOATS, 2), (EXACT, 3), (EXACT, 4)])
def test_segments_stand_for_the_dense_rows_bit_for_bit(aggregations: list[dict[str, Any]], seed: int) -> None:
    view = view_of(aggregations)
    batch = random_events(seed, 2_000, 25, 4)
    dense = compute_features(batch, view)
    segments = compute_segments(batch, view)
    assert dense_rows(segments, view).equals(dense)  # every value, floats by their bits
    windows = len({a["window"] for a in aggregations})
    assert segments.num_rows <= min(dense.num_rows, 2 * batch.num_rows * windows)
    assert segments.num_rows * 3 < dense.num_rows  # long windows over a short hop: far fewer rows
    assert coalesce(segments, view).equals(segments)  # maximal already


@pytest.mark.parametrize("aggregations", [FLOATS, EXACT])
def test_segments_by_entity_group_are_the_segments_of_all_events(aggregations: list[dict[str, Any]]) -> None:
    view = view_of(aggregations)
    batch = random_events(5, 3_000, 40, 3)
    whole = compute_segments(batch, view)
    groups = list(iter_segments(batch, view, chunk_events=500))
    assert len(groups) == 6
    keys = [g.column("k").to_pylist() for g in groups]
    assert all(set(a).isdisjoint(b) for i, a in enumerate(keys) for b in keys[i + 1 :])  # whole entities
    union = pa.concat_tables(groups).sort_by([("k", "ascending"), ("feature_ts", "ascending")])
    assert union.equals(whole)


def test_lone_and_grouped_values_fold_alike() -> None:
    """A bucket or block holding one event folds it as a longer one would (0.0 + -0.0 is 0.0), so a
    value does not depend on whether other events share its bucket."""
    view = view_of([{"name": "sum_1h", "function": "sum", "column": "x", "window": "1h"}])
    t = [T0 + dt.timedelta(minutes=m) for m in (1, 2, 31, 121)]
    batch = pa.table(
        {"k": [1, 1, 1, 1], "t": pa.array(t, pa.timestamp("us", tz="UTC")), "x": [-0.0, -0.0, -0.0, -0.0]}
    )
    dense = compute_features(batch, view)
    assert dense_rows(compute_segments(batch, view), view).equals(dense)
    signs = {str(v) for v in dense.column("sum_1h").to_pylist()}
    assert signs == {"0.0"}


def test_segments_split_only_where_a_value_changes() -> None:
    view = view_of([{"name": "n_15m", "function": "count", "window": "15m"}])
    # One event: count 1 from the end after it for three hop ends, then the windows are empty.
    one = pa.table({"k": [7], "t": pa.array([T0 + dt.timedelta(minutes=2)], pa.timestamp("us", tz="UTC"))})
    segments = compute_segments(one, view).to_pylist()
    assert segments == [
        {
            "k": 7,
            "feature_ts": T0 + dt.timedelta(minutes=5),
            FEATURE_VALID_TO: T0 + dt.timedelta(minutes=20),
            "n_15m": 1,
        }
    ]
    # A second event 10 minutes later: count 2 for one end, then 1 again, then empty.
    two = pa.concat_tables(
        [one, one.set_column(1, "t", pa.array([T0 + dt.timedelta(minutes=12)], one["t"].type))]
    )
    got = [
        (r["feature_ts"], r[FEATURE_VALID_TO], r["n_15m"]) for r in compute_segments(two, view).to_pylist()
    ]
    minutes = [(a, b, n) for a, b, n in [(5, 15, 1), (15, 20, 2), (20, 30, 1)]]
    assert got == [(T0 + dt.timedelta(minutes=a), T0 + dt.timedelta(minutes=b), n) for a, b, n in minutes]


def test_since_recomputes_each_entity_from_its_start() -> None:
    view = view_of(FLOATS)
    batch = random_events(5, 1_500, 10, 3)
    starts = {k: T0 + dt.timedelta(hours=6 * (k % 7)) for k in range(0, 10, 2)}  # every other entity
    since = pa.table(
        {
            "k": pa.array(list(starts), pa.int64()),
            "feature_ts": pa.array(list(starts.values()), pa.timestamp("us", tz="UTC")),
        }
    )
    part = compute_segments(batch, view, since=since)
    assert set(part.column("k").to_pylist()) <= set(starts)
    dense = pl.from_arrow(compute_features(batch, view))
    assert isinstance(dense, pl.DataFrame)
    cut = pl.from_arrow(since).rename({"feature_ts": "since"})
    assert isinstance(cut, pl.DataFrame)
    wanted = dense.join(cut, on="k").filter(pl.col("feature_ts") >= pl.col("since")).drop("since")
    assert pl.from_arrow(dense_rows(part, view)).equals(wanted.sort(["k", "feature_ts"]))


def entity_rows(seed: int, n: int, entities: int, days: float) -> pa.Table:
    rnd = random.Random(seed)
    span = int((days + 1.5) * 86_400_000_000)
    times = []
    for _ in range(n):
        moment = T0 - dt.timedelta(hours=6) + dt.timedelta(microseconds=rnd.randrange(span))
        if rnd.random() < 0.3:  # exactly on a hop end, or a microsecond either side
            moment = moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)
            moment += dt.timedelta(microseconds=rnd.choice([-1, 0, 1]))
        times.append(moment)
    return pa.table(
        {
            "k": pa.array([rnd.randrange(entities + 2) for _ in range(n)], pa.int64()),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )


@pytest.mark.parametrize("ttl", ["7m", "3m", "2h"])
def test_point_in_time_reads_dense_tables_and_their_rewrite_alike(config: LakebedConfig, ttl: str) -> None:
    """An offline table in the dense layout of earlier versions reads as before; materializing rewrites it
    as segments, and every point-in-time row stays the same (ttl shorter and longer than the hop)."""
    view = view_of(FLOATS, ttl=ttl)
    batch = random_events(9, 800, 12, 2)
    raw = commit("events", batch)
    assert raw.version is not None
    FeatureRegistry(config).register(view)
    dense = compute_features(batch, view)
    watermark = int(pa.compute.max(batch.column("t")).cast(pa.int64()).as_py())
    commit(
        view.offline_table,
        dense,
        app_transactions=[Transaction(view.app_id, raw.version)],
        metadata=_state_metadata(view, raw.version, watermark),
    )
    features = [f"seg:v1:{a['name']}" for a in FLOATS]
    entities = entity_rows(10, 5_000, 12, 2)
    before = get_historical_features(entities, features)
    # The definition, by brute force over the dense rows for some entity rows: the row with the greatest
    # feature_ts <= ts, if feature_ts > ts - ttl.
    by_entity: dict[int, list[dict[str, Any]]] = {}
    for row in dense.to_pylist():
        by_entity.setdefault(row["k"], []).append(row)
    ttl_delta = dt.timedelta(microseconds=view.ttl_us)
    for index in range(0, entities.num_rows, 10):
        k, ts = entities["k"][index].as_py(), entities["event_timestamp"][index].as_py()
        match = max(
            (r for r in by_entity.get(k, []) if r["feature_ts"] <= ts),
            key=lambda r: r["feature_ts"],
            default=None,
        )
        fresh = match is not None and match["feature_ts"] > ts - ttl_delta
        got = {a["name"]: before[f"seg__{a['name']}"][index].as_py() for a in FLOATS}
        assert got == {a["name"]: (match[a["name"]] if fresh and match else None) for a in FLOATS}

    result = materialize(view, update_online=False)
    assert any("rewritten as segments" in note for note in result.notes)
    stored = read_table(view.offline_table)
    assert FEATURE_VALID_TO in stored.column_names and stored.num_rows * 3 < dense.num_rows
    after = get_historical_features(entities, features)
    assert after.equals(before)
    assert sum(after.column(f"seg__{FLOATS[1]['name']}").is_valid().to_pylist()) > 1_000
