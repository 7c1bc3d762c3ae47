"""How the point-in-time join reads the offline rows (lakebed.pipelines.features.pit_join): DuckDB's
read_parquet over the local files with a narrow ASOF, or the Arrow dataset where read_parquet cannot read
a table as Delta does; both give identical rows, over segments and over both tiers of a tiered table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lakebed.config import LakebedConfig
from lakebed.pipelines.delta import commit
from lakebed.pipelines.features import registry
from lakebed.pipelines.features.pit_join import parquet_files
from lakebed.pipelines.features.retrieval import get_historical_features, open_offline, resolve_features
from lakebed.schemas.contract import TableContract
from lakebed.schemas.features import FeatureView

T0_US = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
HOP_US = 60 * 1_000_000
TIME = pa.timestamp("us", tz="UTC")


def register(name: str, config: LakebedConfig) -> FeatureView:
    """A view keyed by ``user_id`` and ``region``, hop 1 minute, ttl 30 minutes, features ``amount``
    (float) and ``page`` (string)."""
    view = FeatureView.from_dict(
        {
            "name": name,
            "version": 1,
            "entities": ["user_id", "region"],
            "source": {"table": "events"},
            "event_time": "event_time",
            "hop": "1m",
            "ttl": "30m",
            "aggregations": [
                {"name": "amount", "function": "last", "column": "amount", "window": "1h"},
                {"name": "page", "function": "last", "column": "page", "window": "1h"},
            ],
        }
    )
    registry.register(view, config=config)
    return view


def segments(rng: np.random.Generator) -> pa.Table:
    """Random segments: per key, change points on a hop grid, each valid until the next one or (a gap
    where its windows emptied) a few hops earlier."""
    users, regions, starts, ends, amounts, pages = [], [], [], [], [], []
    for user in range(12):
        for region in ("eu", "us"):
            slots = np.sort(rng.choice(600, size=int(rng.integers(1, 40)), replace=False))
            for i, slot in enumerate(slots):
                following = int(slots[i + 1]) if i + 1 < len(slots) else 640
                users.append(user)
                regions.append(region)
                starts.append(T0_US + int(slot) * HOP_US)
                ends.append(T0_US + min(following, int(slot) + int(rng.integers(1, 50))) * HOP_US)
                amounts.append(None if rng.random() < 0.1 else round(float(rng.normal(50, 10)), 2))
                pages.append(f"p{rng.integers(0, 9)}")
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "region": regions,
            "feature_ts": pa.array(starts, pa.int64()).cast(TIME),
            "feature_valid_to": pa.array(ends, pa.int64()).cast(TIME),
            "amount": pa.array(amounts, pa.float64()),
            "page": pages,
        }
    )


def entity_rows(rng: np.random.Generator, n: int) -> pa.Table:
    times: list[int | None] = [
        T0_US + int(t) for t in rng.integers(-30 * HOP_US, 700 * HOP_US, n) // 1_000_000 * 1_000_000
    ]
    times[3] = None
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, 13, n), pa.int32()),
            "region": pa.array(rng.choice(["eu", "us", "apac"], n)).dictionary_encode(),
            "event_timestamp": pa.array(times, pa.int64()).cast(TIME),
        }
    )


def features_of(name: str) -> list[str]:
    return [f"{name}:v1:amount", f"{name}:v1:page"]


def files_read(name: str, config: LakebedConfig) -> list[str] | None:
    """What the join reads ``name:v1`` from: its local Parquet files, or None for the Arrow dataset."""
    (plan,) = resolve_features(features_of(name), config=config)
    table = open_offline(plan, None, config)
    return parquet_files(table, pa.schema(table.schema().to_arrow()))


def rows_of(result: pa.Table, name: str) -> pa.Table:
    """The feature columns of ``result`` under names without the view, to compare views."""
    columns = [c for c in result.column_names if c.startswith(f"{name}__")]
    return result.select(columns).rename_columns([c.split("__", 1)[1] for c in columns])


def test_parquet_and_arrow_paths_give_identical_rows(config: LakebedConfig) -> None:
    rng = np.random.default_rng(7)
    stored = segments(rng)
    order = rng.permutation(stored.num_rows)
    half = stored.num_rows // 2
    register("plain", config)
    register("parted", config)
    for part in (order[:half], order[half:]):  # two files, rows in no order
        commit("fv_plain_v1", stored.take(pa.array(part)), config=config)
        commit("fv_parted_v1", stored.take(pa.array(part)), partition_by=["region"], config=config)
    files = files_read("plain", config)
    assert files is not None and len(files) == 2
    assert files_read("parted", config) is None  # partition values live in the paths: Arrow reads them

    entities = entity_rows(rng, 4_000)
    plain = get_historical_features(entities, features_of("plain"), config=config)
    parted = get_historical_features(entities, features_of("parted"), config=config)
    assert plain.select(entities.column_names).equals(entities)
    assert rows_of(plain, "plain").equals(rows_of(parted, "parted"))
    amounts = plain.column("plain__amount")
    assert plain.column("plain__page").type == pa.string()
    assert 500 < amounts.null_count < 3_500  # both fresh matches and misses (stale, gaps, unknown keys)

    # Entity times within a narrow range: row groups and rows outside it are skipped, same rows.
    late = pc.fill_null(
        pc.greater(entities.column("event_timestamp").cast(pa.int64()), T0_US + 500 * HOP_US), False
    )
    narrow = get_historical_features(entities.filter(late), features_of("plain"), config=config)
    assert rows_of(narrow, "plain").equals(rows_of(parted, "parted").filter(late))


def test_tiered_table_reads_both_tiers_alike(config: LakebedConfig) -> None:
    from lakebed.pipelines import tiering

    rng = np.random.default_rng(11)
    stored = segments(rng)
    contract = TableContract.from_dict(
        {
            "name": "fv_tiered_v1",
            "columns": [
                {"name": "user_id", "type": "int64"},
                {"name": "region", "type": "string"},
                {"name": "feature_ts", "type": "timestamp"},
                {"name": "feature_valid_to", "type": "timestamp"},
                {"name": "amount", "type": "float64"},
                {"name": "page", "type": "string"},
            ],
            "tiering": {"column": "feature_ts", "hot_for": "30d"},
        }
    )
    register("tiered", config)
    commit("fv_tiered_v1", stored, contract=contract, config=config)
    entities = entity_rows(rng, 3_000)
    before = get_historical_features(entities, features_of("tiered"), config=config)

    moved = tiering.move("fv_tiered_v1", before=dt.datetime(2025, 1, 1, 5, tzinfo=dt.UTC), config=config)
    assert 0 < moved.rows < stored.num_rows
    files = files_read("tiered", config)
    assert files is not None and any("/cold/" in f for f in files) and any("/tables/" in f for f in files)
    after = get_historical_features(entities, features_of("tiered"), config=config)
    assert after.equals(before)


@pytest.mark.parametrize("column", ["file_index", "file_row_number"])
def test_a_stored_column_named_like_a_virtual_one_reads_through_arrow(
    config: LakebedConfig, column: str
) -> None:
    view = FeatureView.from_dict(
        {
            "name": "odd",
            "version": 1,
            "entities": ["user_id"],
            "source": {"table": "events"},
            "event_time": "event_time",
            "hop": "1m",
            "ttl": "30m",
            "aggregations": [{"name": column, "function": "count", "window": "1h"}],
        }
    )
    registry.register(view, config=config)
    times = pa.array([T0_US, T0_US + 10 * HOP_US], pa.int64()).cast(TIME)
    commit(
        "fv_odd_v1",
        pa.table({"user_id": [1, 1], "feature_ts": times, column: pa.array([5, 6], pa.int64())}),
        config=config,
    )
    (plan,) = resolve_features([f"odd:v1:{column}"], config=config)
    table = open_offline(plan, None, config)
    assert parquet_files(table, pa.schema(table.schema().to_arrow())) is None
    entities = pa.table(
        {
            "user_id": [1, 1, 2],
            "event_timestamp": pa.array([T0_US + HOP_US, T0_US + 11 * HOP_US, T0_US], pa.int64()).cast(TIME),
        }
    )
    result = get_historical_features(entities, [f"odd:v1:{column}"], config=config)
    assert result.column(f"odd__{column}").to_pylist() == [5, 6, None]


def test_a_feature_column_added_later_reads_as_nulls_from_older_files(config: LakebedConfig) -> None:
    rng = np.random.default_rng(13)
    stored = segments(rng)
    half = stored.num_rows // 2
    register("grown", config)
    register("grown_parted", config)
    older, newer = stored.slice(0, half).drop_columns(["page"]), stored.slice(half)
    for rows in (older, newer):  # the second commit evolves the schema by the `page` column
        commit("fv_grown_v1", rows, config=config)
        commit("fv_grown_parted_v1", rows, partition_by=["region"], config=config)
    assert files_read("grown", config) is not None
    entities = entity_rows(rng, 3_000)
    plain = get_historical_features(entities, features_of("grown"), config=config)
    parted = get_historical_features(entities, features_of("grown_parted"), config=config)
    assert rows_of(plain, "grown").equals(rows_of(parted, "grown_parted"))
    matched = pc.is_valid(plain.column("grown__amount"))
    pages = plain.column("grown__page").filter(matched)
    assert 0 < pages.null_count < len(pages)  # older rows' pages are null, newer ones' are not


def test_no_entity_row_matching_gives_typed_nulls(config: LakebedConfig) -> None:
    stored = segments(np.random.default_rng(17))
    register("none", config)
    commit("fv_none_v1", stored, config=config)
    assert files_read("none", config) is not None
    times = pa.array([T0_US + HOP_US, T0_US - HOP_US], pa.int64()).cast(TIME)
    entities = pa.table({"user_id": [99, 1], "region": ["eu", "eu"], "event_timestamp": times})
    result = get_historical_features(entities, features_of("none"), config=config)
    assert result.column("none__amount").to_pylist() == [None, None]  # unknown key; before any row
    assert result.schema.field("none__page").type == pa.string()


def test_stored_rows_read_string_view_files_as_the_table_types(tmp_path: Path) -> None:
    """Files that delta-rs merges rewrote hold string_view columns: the matched rows are read in the
    table's types (a feature of text included), in the places' order."""
    import pyarrow.parquet as pq

    from lakebed.pipelines.features.pit_join import _FILE, _ROW, _ROW_IN_FILE, _stored_rows

    path = tmp_path / "part.parquet"
    kinds = pa.array(["view", "buy", "view", "cart"], pa.string_view())
    pq.write_table(pa.table({"kind": kinds, "n": pa.array([1, 2, 3, 4], pa.int64())}), path)
    places = pa.table(
        {
            _FILE: pa.array([0, 0], pa.int64()),
            _ROW_IN_FILE: pa.array([3, 1], pa.int64()),
            _ROW: pa.array([0, 1], pa.int64()),
        }
    )
    schema = pa.schema([("kind", pa.string()), ("n", pa.int64())])
    entity_rows, stored = _stored_rows([str(path)], places, ["kind", "n"], schema)
    assert stored.schema == schema
    assert list(zip(entity_rows.tolist(), stored.column("kind").to_pylist(), strict=True)) == [
        (1, "buy"),
        (0, "cart"),
    ]
    assert isinstance(entity_rows, np.ndarray)
