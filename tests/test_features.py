"""Feature store: view specs, exact window semantics, lateness, incremental == backfill, registry, online store."""

from __future__ import annotations

import datetime as dt
import math
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lakebed.config import LakebedConfig
from lakebed.errors import ContractError
from lakebed.examples import SHOP
from lakebed.pipelines.delta import commit
from lakebed.pipelines.features.changes import compute_segments, dense_rows
from lakebed.pipelines.features.materialize import (
    FeatureSourceError,
    backfill,
    materialize,
    read_state,
)
from lakebed.pipelines.features.online import OnlineStore, OnlineStoreError, SQLiteOnlineStore
from lakebed.pipelines.features.registry import (
    FeatureRegistry,
    FeatureViewChangedError,
    FeatureViewNotFoundError,
)
from lakebed.pipelines.features.windows import affected_window_ends, compute_features
from lakebed.pipelines.read import open_table, read_table
from lakebed.schemas.features import (
    FeatureNotFoundError,
    FeatureRef,
    FeatureRefError,
    FeatureView,
    load_feature_views,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def make_view(**changes: Any) -> FeatureView:
    spec: dict[str, Any] = {
        "name": "clicks",
        "version": 1,
        "entities": ["customer_id"],
        "source": {"table": "events"},
        "event_time": "event_time",
        "hop": "5m",
        "ttl": "1h",
        "allowed_lateness": "10m",
        "aggregations": [
            {"name": "n_5m", "function": "count", "window": "5m"},
            {"name": "n_10m", "function": "count", "window": "10m"},
            {"name": "purchases_10m", "function": "count", "column": "amount", "window": "10m"},
            {"name": "spend_10m", "function": "sum", "column": "amount", "window": "10m"},
            {"name": "avg_10m", "function": "mean", "column": "amount", "window": "10m"},
            {"name": "min_10m", "function": "min", "column": "amount", "window": "10m"},
            {"name": "max_5m", "function": "max", "column": "amount", "window": "5m"},
            {"name": "last_type_10m", "function": "last", "column": "event_type", "window": "10m"},
        ],
    }
    spec.update(changes)
    return FeatureView.model_validate(spec)


def events(rows: list[tuple[Any, ...]], *, stream: bool = False) -> pa.Table:
    """(customer_id, event_time, event_type, amount[, _partition, _offset]) rows as a raw-table batch."""
    columns: dict[str, pa.Array] = {
        "customer_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_time": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "event_type": pa.array([r[2] for r in rows], pa.string()),
        "amount": pa.array([r[3] for r in rows], pa.float64()),
    }
    if stream:
        columns["_partition"] = pa.array([r[4] for r in rows], pa.int32())
        columns["_offset"] = pa.array([r[5] for r in rows], pa.int64())
    return pa.table(columns)


def offline_sorted(view: FeatureView) -> pa.Table:
    table = read_table(view.offline_table)
    return table.sort_by([(k, "ascending") for k in [*view.entities, "feature_ts"]])


# Window semantics ------------------------------------------------------------------------------------
def test_window_boundaries_counts_and_nulls_are_exact() -> None:
    view = make_view()
    batch = events(
        [
            (1, at(0), "view", None),  # on the boundary: in the windows ending 00:05 and 00:10
            (1, at(5) - US, "purchase", 10.0),  # last microsecond before 00:05
            (1, at(5), "purchase", 20.0),  # on the boundary: not in the window ending 00:05
            (2, at(12), "view", None),
        ]
    )
    rows = compute_features(batch, view).to_pylist()
    expected = [
        (1, 5, 2, 2, 1, 10.0, 10.0, 10.0, 10.0, "purchase"),
        (1, 10, 1, 3, 2, 30.0, 15.0, 10.0, 20.0, "purchase"),
        (1, 15, 0, 1, 1, 20.0, 20.0, 20.0, None, "purchase"),  # empty 5m window: count 0, max null
        (2, 15, 1, 1, 0, None, None, None, None, "view"),  # no amounts: count 0, sum/mean/min null
        (2, 20, 0, 1, 0, None, None, None, None, "view"),
    ]
    names = ["customer_id", "feature_ts", *view.feature_names]
    assert rows == [dict(zip(names, (c, at(m), *rest), strict=True)) for c, m, *rest in expected]
    # no row once no window holds an event (00:20 for customer 1, 00:25 for customer 2)
    assert compute_features(batch, view, window_ends=[at(20), at(25)]).num_rows == 1


def test_last_breaks_ties_by_partition_then_offset_and_ignores_row_order() -> None:
    view = make_view(
        aggregations=[{"name": "last_type", "function": "last", "column": "event_type", "window": "5m"}]
    )
    tied = [
        (1, at(1), "a", None, 0, 9),
        (1, at(1), "b", None, 1, 2),  # greatest (_partition, _offset) at the greatest event time
        (1, at(1), "c", None, 1, 1),
        (1, at(0), "z", None, 5, 99),  # greater partition but earlier
    ]
    for order in (tied, tied[::-1]):
        assert compute_features(events(order, stream=True), view).column("last_type").to_pylist() == ["b"]
    # Without stream columns the greatest value wins a tie, whatever the row order.
    plain = [(1, at(1), "b", None), (1, at(1), "a", None)]
    for order in (plain, plain[::-1]):
        assert compute_features(events(order), view).column("last_type").to_pylist() == ["b"]


def test_windows_hop_aligned_to_the_unix_epoch() -> None:
    view = make_view(hop="7m", aggregations=[{"name": "n", "function": "count", "window": "14m"}])
    hop_us = 7 * 60 * 1_000_000
    start = at(3)
    rows = compute_features(
        events([(1, start, "view", None), (2, EPOCH - dt.timedelta(minutes=2), "view", None)]), view
    )
    ends: dict[int, list[dt.datetime]] = {1: [], 2: []}
    for key, ts in zip(
        rows.column("customer_id").to_pylist(), rows.column("feature_ts").to_pylist(), strict=True
    ):
        ends[key].append(ts)
    first = ((start - EPOCH) // US // hop_us + 1) * hop_us  # first multiple of 7m after the event
    assert ends[1] == [EPOCH + dt.timedelta(microseconds=first + i * hop_us) for i in range(2)]
    assert all(((ts - EPOCH) // US) % hop_us == 0 for ts in ends[1])
    # Before 1970 too: buckets floor towards minus infinity.
    assert ends[2] == [EPOCH, EPOCH + dt.timedelta(minutes=7)]


def _reference(rows: list[dict[str, Any]], view: FeatureView) -> dict[tuple[int, int], dict[str, Any]]:
    """Feature rows by brute force, straight from the definition (test oracle, loops on purpose)."""
    hop = view.hop_us
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for key in sorted({r["k"] for r in rows}):
        mine = [r for r in rows if r["k"] == key]
        ends = {
            (r["t"] // hop + j) * hop
            for r in mine
            for j in range(1, max(a.window_us for a in view.aggregations) // hop + 1)
        }
        for end in sorted(ends):
            values: dict[str, Any] = {}
            for a in view.aggregations:
                inside = [r for r in mine if end - a.window_us <= r["t"] < end]
                present = [r[a.column] for r in inside if a.column and r[a.column] is not None]
                if a.function == "count":
                    values[a.name] = len(inside) if a.column is None else len(present)
                elif a.function == "sum":
                    values[a.name] = sum(present) if present else None
                elif a.function == "mean":
                    values[a.name] = sum(present) / len(present) if present else None
                elif a.function == "min":
                    values[a.name] = min(present) if present else None
                elif a.function == "max":
                    values[a.name] = max(present) if present else None
                else:
                    latest = max(inside, key=lambda r: (r["t"], r["p"], r["o"])) if inside else None
                    values[a.name] = latest[a.column] if latest else None
            out[(key, end)] = values
    return out


def test_matches_a_brute_force_reference_on_random_events() -> None:
    view = make_view(
        hop="2m",
        aggregations=[
            {"name": "n2", "function": "count", "window": "2m"},
            {"name": "c10", "function": "count", "column": "x", "window": "10m"},
            {"name": "s6", "function": "sum", "column": "x", "window": "6m"},
            {"name": "m10", "function": "mean", "column": "x", "window": "10m"},
            {"name": "lo6", "function": "min", "column": "x", "window": "6m"},
            {"name": "hi10", "function": "max", "column": "i", "window": "10m"},
            {"name": "si10", "function": "sum", "column": "i", "window": "10m"},
            {"name": "l6", "function": "last", "column": "s", "window": "6m"},
        ],
        entities=["k"],
        event_time="ts",
    )
    for seed in range(12):
        rnd = random.Random(seed)
        rows = [
            {
                "k": rnd.randint(1, 3),
                "t": rnd.randint(-1800, 1800) * 1_000_000 // rnd.choice([1, 7]),
                "x": rnd.choice([None, rnd.random() * 10, float(rnd.randint(-3, 3))]),
                "i": rnd.randint(-100, 100),
                "s": rnd.choice(["a", "b", None]),
                "p": rnd.randint(0, 2),
                "o": n,
            }
            for n in range(rnd.randint(1, 40))
        ]
        table = pa.table(
            {
                "k": pa.array([r["k"] for r in rows], pa.int64()),
                "ts": pa.array([r["t"] for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "x": pa.array([r["x"] for r in rows], pa.float64()),
                "i": pa.array([r["i"] for r in rows], pa.int32()),
                "s": pa.array([r["s"] for r in rows], pa.string()),
                "_partition": pa.array([r["p"] for r in rows], pa.int32()),
                "_offset": pa.array([r["o"] for r in rows], pa.int64()),
            }
        )
        got = compute_features(table, view).to_pylist()
        expected = _reference(rows, view)
        assert [(g["k"], (g["feature_ts"] - EPOCH) // US) for g in got] == list(expected)
        for row in got:
            for name, value in expected[(row["k"], (row["feature_ts"] - EPOCH) // US)].items():
                if isinstance(value, float) and row[name] is not None:
                    assert math.isclose(row[name], value, rel_tol=1e-12, abs_tol=1e-12), (seed, name)
                else:
                    assert row[name] == value, (seed, name, row)


def test_float_aggregates_are_bit_identical_whatever_the_other_events() -> None:
    """The incremental path computes rows from the events around them only; floats must not drift."""
    view = make_view(
        hop="1m", aggregations=[{"name": "s", "function": "sum", "column": "amount", "window": "7m"}]
    )
    rnd = random.Random(7)
    batch = events(
        [(rnd.randint(1, 3), at(rnd.uniform(0, 120)), "p", rnd.uniform(-1e6, 1e6)) for _ in range(3000)]
    )
    full = compute_features(batch, view)
    wanted = full.filter(pa.compute.equal(full.column("customer_id"), 2)).slice(40, 30)
    lo = wanted.column("feature_ts")[0].as_py() - dt.timedelta(minutes=7)
    hi = wanted.column("feature_ts")[-1].as_py()
    times = batch.column("event_time")
    nearby = batch.filter(pa.compute.and_(pa.compute.greater_equal(times, lo), pa.compute.less(times, hi)))
    shuffled = nearby.take(pa.array(random.Random(1).sample(range(nearby.num_rows), nearby.num_rows)))
    assert compute_features(shuffled, view, window_ends=wanted.select(["customer_id", "feature_ts"])).equals(
        wanted
    )
    assert compute_features(batch, view, window_ends=wanted).equals(wanted)


def test_affected_window_ends_are_the_rows_an_event_can_change() -> None:
    view = make_view()
    ends = affected_window_ends(events([(1, at(3), "view", None)]), view)
    assert ends.column("feature_ts").to_pylist() == [at(5), at(10)]


# Specs, YAML, references ----------------------------------------------------------------------------
def test_sample_views_load_and_hash_stably() -> None:
    views = load_feature_views(SHOP / "feature_views")
    view = views["customer_activity:v1"]
    assert (view.offline_table, view.late_table) == (
        "fv_customer_activity_v1",
        "fv_customer_activity_v1__late",
    )
    assert view.hop == dt.timedelta(minutes=5) and view.ttl == dt.timedelta(days=2)
    assert view.aggregation("purchases_1h").window == dt.timedelta(hours=1)
    same = FeatureView.model_validate(
        {**view.model_dump(mode="json"), "hop": "300s", "ttl": "48h", "description": "other words"}
    )
    assert same.definition_hash() == view.definition_hash()  # equal durations, description not semantic
    assert make_view(hop="1m").definition_hash() != make_view().definition_hash()
    assert FeatureView.model_validate_json(view.to_json()) == view


def test_invalid_view_files_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: shop\nversion: 1\nentities: [customer_id]\nsource: {table: shop_events}\n"
        "event_time: event_time\nhop: 5m\nttl: 1d\n"
        "aggregations:\n  - {name: spend_7m, function: sum, column: amount, window: 7m}\n"
    )
    with pytest.raises(ContractError, match=r"bad\.yaml.*aggregations\.0\.window.*not a multiple of hop 5m"):
        load_feature_views(tmp_path)
    cases = {
        "name: Shop": r"name: invalid feature view name 'Shop'",
        "version: 0": r"version: .*greater than or equal to 1",
        "hop: 5 minutes": r"hop: invalid duration",
        "  - {name: n, function: median, window: 5m}": r"aggregations\.0\.function",
        "  - {name: s, function: sum, window: 5m}": r"sum needs a column",
        "  - {name: n, function: count, window: 5m}\n  - {name: n, function: count, window: 10m}": r"duplicate feature names \['n'\]",
    }
    base = bad.read_text().replace("window: 7m", "window: 10m")
    for change, message in cases.items():
        text = base
        if change.startswith("  -"):
            text = base.split("aggregations:")[0] + "aggregations:\n" + change + "\n"
        else:
            field = change.split(":")[0]
            text = "\n".join(change if line.startswith(field + ":") else line for line in base.splitlines())
        bad.write_text(text)
        with pytest.raises(ContractError, match=rf"bad\.yaml: invalid feature view: .*{message}"):
            FeatureView.from_yaml(bad)


def test_feature_references_parse_or_fail_clearly() -> None:
    ref = FeatureRef.parse("customer_activity:v12:spend_1h")
    assert (ref.view, ref.version, ref.feature, str(ref)) == (
        "customer_activity",
        12,
        "spend_1h",
        "customer_activity:v12:spend_1h",
    )
    for text, message in {
        "customer_activity:spend_1h": "expected 'view:vN:feature'",
        "customer_activity:1:spend_1h": "version must be 'v' and a number",
        "customer_activity:v0:spend_1h": "version must be 'v' and a number",
        "Customer:v1:x": "not a valid view name",
        "a:v1:": "not a valid feature name",
    }.items():
        with pytest.raises(FeatureRefError, match=message):
            FeatureRef.parse(text)
    with pytest.raises(
        FeatureNotFoundError, match=r"clicks:v1 has no feature 'nope' \(its features: n_5m, n_10m"
    ):
        make_view().aggregation("nope")


# Registry -------------------------------------------------------------------------------------------
def test_registry_refuses_a_changed_definition_under_an_old_version(config: LakebedConfig) -> None:
    registry = FeatureRegistry(config)
    first = registry.register(make_view())
    again = registry.register(make_view(description="docs only"))
    assert again.registered_at == first.registered_at and again.definition_hash == first.definition_hash
    with pytest.raises(
        FeatureViewChangedError, match=r"clicks:v1 .*changed: hop 5m -> 1m.*bump the version .*version: 2"
    ):
        registry.register(make_view(hop="1m"))
    registry.register(make_view(version=2, hop="1m"))
    assert registry.get("clicks", 1).hop == dt.timedelta(minutes=5)
    assert registry.latest("clicks").version == 2
    assert [e.key for e in registry.list()] == ["clicks:v1", "clicks:v2"]
    assert len(read_table("feature_registry")) == 2
    with pytest.raises(
        FeatureViewNotFoundError, match=r"'clicks' has no version 3 \(registered versions: v1, v2\)"
    ):
        registry.get("clicks", 3)
    with pytest.raises(
        FeatureViewNotFoundError, match=r"no feature view named 'orders' .*registered views: clicks"
    ):
        registry.resolve("orders:v1:x")
    with pytest.raises(FeatureNotFoundError, match=r"clicks:v2 has no feature 'spend_1h'"):
        registry.resolve("clicks:v2:spend_1h")
    view, aggregation = registry.resolve("clicks:v1:spend_10m")
    assert (view.version, aggregation.function) == (1, "sum")


# Materialization ------------------------------------------------------------------------------------
def test_late_events_go_to_the_late_table_and_never_into_features(config: LakebedConfig) -> None:
    view = make_view()
    store = SQLiteOnlineStore(config.home / "online" / "features.sqlite")
    commit("events", events([(1, at(60), "view", None), (2, at(58), "purchase", 5.0)]))
    first = materialize(view, online=store)
    assert (first.raw_versions, first.late_events, first.watermark) == ((0,), 0, at(60))
    # Version 1: watermark = 60m - 10m lateness = 50m.
    commit(
        "events",
        events([(1, at(45), "purchase", 999.0), (1, at(50), "purchase", 3.0), (None, at(61), "view", None)]),
    )
    second = materialize(view, online=store)
    assert second.late_events == 2 and second.watermark == at(61)
    late = read_table(view.late_table).sort_by("_reason").to_pylist()
    assert [
        (r["customer_id"], r["event_time"], r["_reason"], r["_watermark"], r["_raw_version"]) for r in late
    ] == [
        (1, at(45), "late", at(50), 1),
        (None, at(61), "null_entity", at(50), 1),
    ]
    offline = offline_sorted(view)
    on_time = events([(1, at(60), "view", None), (2, at(58), "purchase", 5.0), (1, at(50), "purchase", 3.0)])
    assert offline.equals(compute_segments(on_time, view).cast(offline.schema))
    assert dense_rows(offline, view).equals(compute_features(on_time, view))
    assert 999.0 not in offline.column("spend_10m").to_pylist()
    assert at(50) not in offline.column("feature_ts").to_pylist()  # [40m, 50m) held only the late event
    # Nothing new: a no-op.
    assert materialize(view, online=store).raw_versions == ()
    assert read_state(view).raw_version == 1


def test_a_stop_between_the_late_and_offline_commits_records_late_events_once(
    config: LakebedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lakebed.pipelines.features.materialize as materialize_module

    view = make_view()
    commit("events", events([(1, at(60), "view", None)]))
    materialize(view, update_online=False)
    commit("events", events([(1, at(30), "view", None), (1, at(61), "purchase", 2.0)]))
    real_commit = materialize_module.commit

    def crash_on_offline(table: str, *args: Any, **kwargs: Any) -> Any:
        if table == view.offline_table:
            raise RuntimeError("stopped")
        return real_commit(table, *args, **kwargs)

    monkeypatch.setattr(materialize_module, "commit", crash_on_offline)
    with pytest.raises(RuntimeError, match="stopped"):
        materialize(view, update_online=False)
    assert read_table(view.late_table).num_rows == 1 and read_state(view).raw_version == 0
    monkeypatch.setattr(materialize_module, "commit", real_commit)
    rerun = materialize(view, update_online=False)
    assert (rerun.raw_versions, rerun.late_events, rerun.raw_version) == ((1,), 0, 1)
    assert read_table(view.late_table).num_rows == 1
    # A version holding only late events commits no feature rows; deciding it again is harmless.
    commit("events", events([(1, at(20), "view", None)]))
    only_late = materialize(view, update_online=False)
    assert only_late.late_events == 1 and "raw version(s) 2 added no on-time events" in only_late.notes[0]
    assert read_state(view).raw_version == 1
    assert materialize(view, update_online=False).late_events == 0
    assert read_table(view.late_table).num_rows == 2
    commit("events", events([(1, at(62), "view", None)]))
    assert materialize(view, update_online=False).raw_versions == (2, 3)
    assert read_state(view).raw_version == 3


def _random_batches(seed: int, count: int) -> list[pa.Table]:
    rnd = random.Random(seed)
    batches, offset = [], 0
    for number in range(count):
        rows = []
        for _ in range(rnd.randint(5, 25)):
            # Mostly around a moving "now", some far behind (late), some ahead (out of order).
            minutes = number * 20 + rnd.choice(
                [rnd.uniform(-8, 25), rnd.uniform(-60, -15), rnd.uniform(0, 40)]
            )
            kind = rnd.choice(["view", "cart", "purchase"])
            amount = rnd.uniform(0, 500) if kind == "purchase" else None
            rows.append((rnd.randint(1, 6), at(minutes), kind, amount, rnd.randint(0, 2), offset))
            offset += 1
        batches.append(events(rows, stream=True))
    return batches


def test_incremental_equals_backfill_row_for_row(config: LakebedConfig) -> None:
    view = make_view(
        name="shop",
        hop="5m",
        aggregations=[
            {"name": "events_15m", "function": "count", "window": "15m"},
            {"name": "purchases_1h", "function": "count", "column": "amount", "window": "1h"},
            {"name": "spend_1h", "function": "sum", "column": "amount", "window": "1h"},
            {"name": "avg_order_1h", "function": "mean", "column": "amount", "window": "1h"},
            {"name": "min_order_15m", "function": "min", "column": "amount", "window": "15m"},
            {"name": "max_order_1h", "function": "max", "column": "amount", "window": "1h"},
            {"name": "last_type_1h", "function": "last", "column": "event_type", "window": "1h"},
        ],
    )
    store = SQLiteOnlineStore(config.home / "online" / "features.sqlite")
    batches = _random_batches(seed=11, count=9)
    runs = [1, 2, 2, 1, 3]  # raw commits between materialize runs (several at once, too)
    pending = iter(batches)
    for number, commits in enumerate(runs):
        for _ in range(commits):
            commit("events", next(pending))
        if number == 2:  # a compaction between runs: rewrites files, adds no events
            DeltaTable(open_table("events").table_uri).optimize.compact()
        materialize(view, online=store, versions_per_commit=2 if number == 4 else 1)
    incremental = offline_sorted(view)
    late = read_table(view.late_table).sort_by("_offset")
    assert late.num_rows > 0 and set(late.column("_reason").to_pylist()) == {"late"}
    online = store.read(
        view.offline_table, pa.table({"customer_id": pa.array(range(1, 8), pa.int64())}), ["customer_id"]
    )
    state = read_state(view)

    result = backfill(view, online=store)
    assert result.raw_version == state.raw_version == DeltaTable(open_table("events").table_uri).version()
    assert offline_sorted(view).equals(incremental)  # every value, floats bit for bit
    assert read_table(view.late_table).sort_by("_offset").equals(late)
    assert store.read(
        view.offline_table, pa.table({"customer_id": pa.array(range(1, 8), pa.int64())}), ["customer_id"]
    ).equals(online)
    after = read_state(view)
    assert (after.raw_version, after.watermark_us) == (state.raw_version, state.watermark_us)

    # And both equal the features of the on-time events computed in one go.
    raw = pl.from_arrow(read_table("events"))
    assert isinstance(raw, pl.DataFrame)
    on_time = raw.filter(~pl.col("_offset").is_in(late.column("_offset").to_pylist()))
    assert incremental.equals(compute_segments(on_time, view).cast(incremental.schema))
    assert dense_rows(incremental, view).equals(compute_features(on_time, view))

    # Online: per customer, the offline row with the greatest feature_ts <= watermark (max event time).
    expected = (
        pl.from_arrow(dense_rows(incremental, view))
        .filter(pl.col("feature_ts") <= state.watermark)
        .sort("feature_ts")
        .group_by("customer_id", maintain_order=True)
        .last()
        .sort("customer_id")
    )
    got = pl.from_arrow(online).drop_nulls("feature_ts")
    assert got.equals(expected.select(got.columns))


def test_raw_rewrites_are_refused_and_online_rows_recover(config: LakebedConfig) -> None:
    view = make_view()
    online_path = config.home / "online" / "features.sqlite"
    commit("events", events([(1, at(1), "view", None)]))
    materialize(view)
    assert SQLiteOnlineStore(online_path).count(view.offline_table) == 0  # feature_ts 00:05 > watermark
    commit("events", events([(1, at(7), "view", None)]))
    materialize(view)
    assert SQLiteOnlineStore(online_path).latest_feature_ts(view.offline_table) == at(5)
    # A lost online store is rebuilt from the offline table on the next run.
    for suffix in ("", "-wal", "-shm"):
        Path(str(online_path) + suffix).unlink(missing_ok=True)
    assert "online rows rebuilt" in materialize(view).notes[0]
    assert SQLiteOnlineStore(online_path).latest_feature_ts(view.offline_table) == at(5)
    # Features never retract events: an overwrite of the raw table is refused, naming it.
    commit("events", events([(1, at(9), "view", None)]), mode="overwrite")
    with pytest.raises(FeatureSourceError, match=r"raw table 'events' version 2 \(WRITE\) removed"):
        materialize(view)


# Online store ---------------------------------------------------------------------------------------
def _online_rows(entries: list[tuple[int, str, dt.datetime, float | None]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([e[0] for e in entries], pa.int64()),
            "region": pa.array([e[1] for e in entries], pa.string()),
            "feature_ts": pa.array([e[2] for e in entries], pa.timestamp("us", tz="UTC")),
            "spend": pa.array([e[3] for e in entries], pa.float64()),
        }
    )


def test_online_store_keeps_the_latest_row_idempotently(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    assert isinstance(store, OnlineStore)
    keys = ["customer_id", "region"]
    store.write(
        "fv_x_v1",
        _online_rows([(1, "eu", at(10), 1.0), (1, "eu", at(5), 0.5), (2, "us", at(5), 2.0)]),
        keys,
        source_version=3,
    )
    store.write("fv_x_v1", _online_rows([(1, "eu", at(0), 9.9)]), keys)  # older: never goes backwards
    store.write("fv_x_v1", _online_rows([(2, "us", at(5), 2.5)]), keys)  # same feature_ts: replaces
    for _ in range(2):  # idempotent
        store.write("fv_x_v1", _online_rows([(3, "eu", at(15), 3.0)]), keys, source_version=4)
    probe = pa.table(
        {"customer_id": pa.array([3, 1, 9, 3, None], pa.int64()), "region": ["eu", "eu", "eu", "eu", "eu"]}
    )
    got = store.read("fv_x_v1", probe, keys)
    assert got.column_names == ["customer_id", "region", "feature_ts", "spend"]
    assert got.column("feature_ts").to_pylist() == [at(15), at(10), None, at(15), None]
    assert got.column("spend").to_pylist() == [3.0, 1.0, None, 3.0, None]
    assert got.schema.field("feature_ts").type == pa.timestamp("us", tz="UTC")
    assert store.read("fv_x_v1", _online_rows([(2, "us", at(0), None)]).select(keys), keys).column(
        "spend"
    ).to_pylist() == [2.5]
    assert (store.count("fv_x_v1"), store.latest_feature_ts("fv_x_v1"), store.source_version("fv_x_v1")) == (
        3,
        at(15),
        4,
    )
    with sqlite3.connect(tmp_path / "online.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(OnlineStoreError, match=r"no table 'fv_y_v1'.*materialize"):
        store.read("fv_y_v1", probe, keys)


def test_online_store_reads_a_thousand_entities_in_input_order(tmp_path: Path) -> None:
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    rows = pa.table(
        {
            "customer_id": pa.array(range(1000), pa.int64()),
            "feature_ts": pa.array([at(5)] * 1000, pa.timestamp("us", tz="UTC")),
            "n": pa.array(range(0, 3000, 3), pa.int64()),
        }
    )
    store.write("fv_big_v1", rows, ["customer_id"])
    wanted = random.Random(5).sample(range(1200), 1000)
    got = store.read("fv_big_v1", pa.table({"customer_id": pa.array(wanted, pa.int64())}), ["customer_id"])
    assert got.column("customer_id").to_pylist() == wanted
    assert got.column("n").to_pylist() == [3 * k if k < 1000 else None for k in wanted]


def _typed_rows(entries: list[tuple[int, str, dt.datetime, float | None]]) -> pa.Table:
    """Online rows with every storable feature type (bool, timestamp, date, decimal, binary, float32...)."""
    import decimal

    n = len(entries)
    return pa.table(
        {
            "customer_id": pa.array([e[0] for e in entries], pa.int64()),
            "region": pa.array([e[1] for e in entries], pa.string()),
            "feature_ts": pa.array([e[2] for e in entries], pa.timestamp("us", tz="UTC")),
            "spend": pa.array([e[3] for e in entries], pa.float64()),
            "ratio": pa.array([None if e[3] is None else e[3] / 4 for e in entries], pa.float32()),
            "flag": pa.array([i % 2 == 0 for i in range(n)], pa.bool_()),
            "seen": pa.array([e[2] - dt.timedelta(minutes=1) for e in entries], pa.timestamp("us", tz="UTC")),
            "day": pa.array([e[2].date() for e in entries], pa.date32()),
            "price": pa.array([decimal.Decimal(f"{i}.25") for i in range(n)], pa.decimal128(10, 2)),
            "blob": pa.array([bytes([i]) for i in range(n)], pa.binary()),
            "count": pa.array(list(range(n)), pa.int32()),
        }
    )


@pytest.mark.parametrize("keys", [["customer_id"], ["customer_id", "region"]])
def test_online_store_read_paths_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: list[str]
) -> None:
    """Single-key lookups, IN lists / VALUES joins, the temporary-table join and ``read_one`` return the
    same rows: input order, duplicates, null keys and misses included, every storable type."""
    import lakebed.pipelines.features.online as online

    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    rows = _typed_rows([(i, "eu" if i % 3 else "us", at(i), float(i) if i % 5 else None) for i in range(40)])
    table = "fv_typed_v1"
    store.write(table, rows, keys)
    stored = {tuple(r[k] for k in keys): r for r in rows.to_pylist()}
    ids = [3, 7, 3, 99, None, 0, 39, 7, 12]
    probe = pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "region": ["eu" if i is None or i % 3 else "us" for i in ids],
        }
    ).select(keys)
    value_columns = [c for c in rows.column_names if c not in keys]

    def expected(entities: pa.Table) -> list[dict[str, Any]]:
        out = []
        for entity in entities.to_pylist():
            row = stored.get(tuple(entity[k] for k in keys))
            out.append({**entity, **{c: None if row is None else row[c] for c in value_columns}})
        return out

    results = {"default": store.read(table, probe, keys)}
    for limit in ("_IN_LIMIT", "_VALUES_LIMIT"):
        monkeypatch.setattr(online, limit, 0)
    results["temp-table join"] = store.read(table, probe, keys)
    monkeypatch.undo()
    results["one entity"] = pa.concat_tables(
        [store.read(table, probe.slice(i, 1), keys) for i in range(len(ids))]
    )
    results["same entity"] = store.read(table, probe.take([0, 0, 0]), keys)
    schema = pa.schema([rows.schema.field(c).with_nullable(True) for c in [*keys, *value_columns]])
    for name, got in results.items():
        assert got.schema == schema, name
        source = probe.take([0, 0, 0]) if name == "same entity" else probe
        assert got.to_pylist() == expected(source), name
    assert store.read(table, probe.slice(0, 0), keys).num_rows == 0

    features = [c for c in value_columns if c != "feature_ts"]
    for entity in expected(probe):
        key = [entity[k] for k in keys]
        one = store.read_one(table, key, keys)
        if entity["feature_ts"] is None:
            assert one is None
            continue
        assert one is not None
        assert one[0] == (entity["feature_ts"] - EPOCH) // US
        assert list(one[1:]) == [entity[c] for c in features]
        assert store.read_one(table, key, tuple(keys), ["price", "spend"])[1:] == (
            entity["price"],
            entity["spend"],
        )
    # Key values are converted as read() converts a one-row table of them (a numpy int, a string id).
    import numpy as np

    assert store.read_one(table, [np.int64(7), "eu"][: len(keys)], keys) == store.read_one(
        table, [7, "eu"][: len(keys)], keys
    )
    if keys == ["customer_id"]:
        assert store.read_one(table, ["7"], keys) == store.read_one(table, [7], keys)
    with pytest.raises(OnlineStoreError, match="keyed by"):
        store.read_one(table, [7], ["region"])
    with pytest.raises(OnlineStoreError, match="no column"):
        store.read_one(table, [7, "eu"][: len(keys)], keys, ["nope"])
    with pytest.raises(OnlineStoreError, match=r"no table 'fv_nope_v1'"):
        store.read_one("fv_nope_v1", [7], keys)


_OTHER_PROCESS = """
import datetime as dt, sys
import pyarrow as pa
from lakebed.pipelines.features.online import SQLiteOnlineStore

store = SQLiteOnlineStore(sys.argv[1])
for line in sys.stdin:  # one command per line: action value minutes
    action, value, minutes = line.split()
    ts = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=int(minutes))
    if action in ("drop", "rebuild", "replace", "rekey"):
        store.drop("fv_x_v1")
    if action == "rekey":
        rows = {"customer_id": pa.array([1], pa.int64()), "region": ["eu"],
                "feature_ts": pa.array([ts], pa.timestamp("us", tz="UTC")), "spend": pa.array([float(value)])}
        store.write("fv_x_v1", pa.table(rows), ["customer_id", "region"])
    if action in ("write", "rebuild", "replace"):
        kind = pa.string() if action == "rebuild" else pa.float64()
        rows = {"customer_id": pa.array([1], pa.int64()), "feature_ts": pa.array([ts], pa.timestamp("us", tz="UTC")),
                "spend": pa.array([value if action == "rebuild" else float(value)], kind)}
        if action in ("rebuild", "replace"):
            rows["extra"] = pa.array([7], pa.int64())
        store.write("fv_x_v1", pa.table(rows), ["customer_id"])
    print("done", flush=True)
"""


class _OtherProcess:
    """Another Python process writing to the same online store file, one command at a time."""

    def __init__(self, path: Path) -> None:
        import subprocess
        import sys

        self.process = subprocess.Popen(
            [sys.executable, "-c", _OTHER_PROCESS, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, action: str, value: str = "0", minutes: int = 0) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{action} {value} {minutes}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done", "the other process failed"

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[_OtherProcess]:
    other = _OtherProcess(tmp_path / "online.sqlite")
    yield other
    assert other.close() == 0


def test_online_row_cache_answers_repeated_reads_and_empties_on_any_commit(
    tmp_path: Path, other_process: _OtherProcess
) -> None:
    """Rows read are kept per store object and given out again only while the database is unchanged:
    a commit by another process, or by another store object of this one, is seen by the very next read."""
    path = tmp_path / "online.sqlite"
    store = SQLiteOnlineStore(path, cache_rows=2)
    keys = ["customer_id"]
    store.write("fv_x_v1", _online_rows([(1, "eu", at(1), 1.0)]).select([0, 2, 3]), keys)
    first = store.read_one("fv_x_v1", (1,), keys, ("spend",))  # loads the view's metadata
    assert first == ((at(1) - EPOCH) // US, 1.0)
    assert store.read_one("fv_x_v1", (1,), keys, ("spend",)) == first  # the fast path keeps the row
    cached = store._cache.rows()  # the cache itself: the next read of the entity is answered from it
    assert cached is not None and ("fv_x_v1", 1, ("spend",)) in cached
    assert store.read_one("fv_x_v1", (1,), keys, ("spend",)) == first
    assert store.read_one("fv_x_v1", (2,), keys, ("spend",)) is None  # a missing row is kept too
    other_process("write", "3.5", minutes=3)
    assert store.read_one("fv_x_v1", (1,), keys, ("spend",)) == ((at(3) - EPOCH) // US, 3.5)
    second = SQLiteOnlineStore(path, cache_rows=0)  # no cache at all: reads always go to SQLite
    assert second._cache.rows() is None
    second.write("fv_x_v1", _online_rows([(2, "eu", at(4), 4.0)]).select([0, 2, 3]), keys)
    assert store.read_one("fv_x_v1", (2,), keys, ("spend",)) == ((at(4) - EPOCH) // US, 4.0)
    # At most cache_rows rows: the oldest go first.
    store.read_one("fv_x_v1", (1,), keys, ("spend",))
    store.read_one("fv_x_v1", (3,), keys, ("spend",))
    rows = store._cache.rows()
    assert rows is not None and len(rows) == 2 and ("fv_x_v1", 2, ("spend",)) not in rows
    second.close()
    store.close()
    assert store._cache.rows() is None or store._cache.rows() == {}


def test_online_store_cache_never_serves_stale_values(tmp_path: Path, other_process: _OtherProcess) -> None:
    """Only metadata is cached: a write through the same store, another process's write, and another
    process dropping or rebuilding the view (even with other columns) are all seen by the next read."""
    path = tmp_path / "online.sqlite"
    store = SQLiteOnlineStore(path)
    other = other_process
    keys = ["customer_id"]
    probe = pa.table({"customer_id": pa.array([1, 2], pa.int64())})

    def spend() -> tuple[Any, Any, Any]:
        one = store.read_one("fv_x_v1", [1], keys, ("spend",))
        return (
            None if one is None else one[1],
            store.read("fv_x_v1", probe.slice(0, 1), keys).column("spend")[0].as_py(),
            store.read("fv_x_v1", probe, keys).column("spend")[0].as_py(),
        )

    store.write("fv_x_v1", _online_rows([(1, "eu", at(1), 1.0)]).select([0, 2, 3]), keys)
    assert spend() == (1.0, 1.0, 1.0)
    store.write("fv_x_v1", _online_rows([(1, "eu", at(2), 2.0)]).select([0, 2, 3]), keys)  # same store
    assert spend() == (2.0, 2.0, 2.0)
    other("write", "3.5", minutes=3)  # another process, same schema
    assert spend() == (3.5, 3.5, 3.5)
    assert store.read_one("fv_x_v1", [1], keys) == ((at(3) - EPOCH) // US, 3.5)
    # Dropped and rebuilt elsewhere with other columns; each read path notices it by itself.
    other("rebuild", "high", minutes=4)
    assert store.read_one("fv_x_v1", [1], keys) == ((at(4) - EPOCH) // US, "high", 7)
    assert spend() == ("high", "high", "high")
    other("replace", "4.5", minutes=5)  # the same columns, but spend a float again
    got = store.read("fv_x_v1", probe, keys)
    assert got.schema.field("spend").type == pa.float64()
    assert got.column("spend").to_pylist() == [4.5, None]
    other("rebuild", "higher", minutes=6)
    got = store.read("fv_x_v1", probe.slice(0, 1), keys)
    assert got.to_pylist() == [{"customer_id": 1, "feature_ts": at(6), "spend": "higher", "extra": 7}]
    # Re-keyed elsewhere: the stored keys decide, whatever the cache held.
    two = ["customer_id", "region"]
    other("rekey", "8.5", minutes=7)
    two_key_probe = pa.table({"customer_id": [1, 1], "region": ["eu", "us"]})
    assert store.read("fv_x_v1", two_key_probe, two).column("spend").to_pylist() == [8.5, None]
    other("replace", "4.5", minutes=8)
    assert store.read_one("fv_x_v1", [1], keys) == ((at(8) - EPOCH) // US, 4.5, 7)
    other("rekey", "9.5", minutes=9)
    with pytest.raises(
        OnlineStoreError, match=r"keyed by \['customer_id', 'region'\], not \['customer_id'\]"
    ):
        store.read_one("fv_x_v1", [1], keys)
    with pytest.raises(
        OnlineStoreError, match=r"keyed by \['customer_id', 'region'\], not \['customer_id'\]"
    ):
        store.read("fv_x_v1", probe, keys)
    assert store.read_one("fv_x_v1", [1, "eu"], two) == ((at(9) - EPOCH) // US, 9.5)
    other("drop")
    with pytest.raises(OnlineStoreError, match=r"no table 'fv_x_v1'"):
        store.read_one("fv_x_v1", [1], keys)
    with pytest.raises(OnlineStoreError, match=r"no table 'fv_x_v1'"):
        store.read("fv_x_v1", probe, keys)
    # The same store dropping and re-creating the view with another schema.
    store.write("fv_x_v1", _online_rows([(1, "eu", at(5), 5.0)]).select([0, 2, 3]), keys)
    assert spend() == (5.0, 5.0, 5.0)
    store.drop("fv_x_v1")
    with pytest.raises(OnlineStoreError, match=r"no table 'fv_x_v1'"):
        store.read_one("fv_x_v1", [1], keys)
    store.write("fv_x_v1", _online_rows([(1, "eu", at(6), 6.0)]).select([0, 1, 2, 3]), keys)
    assert store.read_one("fv_x_v1", [1], keys) == ((at(6) - EPOCH) // US, "eu", 6.0)
