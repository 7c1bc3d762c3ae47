"""Point-in-time retrieval, online reads and training sets (docs/streaming.md, "Feature store semantics")."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakebed.config import LakebedConfig
from lakebed.errors import EntityRowsError, LakebedError, UnknownFeatureError

UTC = dt.UTC
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000
MINUTE_US = 60 * 1_000_000


# Helpers -------------------------------------------------------------------------------------------
def register_view(
    name: str,
    version: int,
    *,
    entities: Sequence[str],
    features: Sequence[str],
    ttl: dt.timedelta,
    config: LakebedConfig,
) -> Any:
    """Register a feature view version with one ``last`` aggregation per name in ``features``."""
    from lakebed.pipelines.features import registry
    from lakebed.schemas.features import FeatureView

    view = FeatureView.from_dict(
        {
            "name": name,
            "version": version,
            "entities": list(entities),
            "source": {"table": "events"},
            "event_time": "event_time",
            "hop": "1m",
            "ttl": ttl,
            "aggregations": [
                {"name": feature, "function": "last", "column": feature, "window": "1h"}
                for feature in features
            ],
        }
    )
    registry.register(view, config=config)
    return view


def offline_rows(keys: dict[str, Any], feature_ts_us: Any, **features: Any) -> pa.Table:
    columns: dict[str, Any] = dict(keys)
    columns["feature_ts"] = pa.array(np.asarray(feature_ts_us, dtype=np.int64), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    columns.update(features)
    return pa.table(columns)


def ts(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def brute_force(
    entity_keys: list[tuple[Any, ...]],
    entity_ts_us: list[int | None],
    feature_keys: list[tuple[Any, ...]],
    feature_ts_us: list[int],
    values: list[Any],
    ttl_us: int,
) -> list[Any]:
    """The specification, literally: greatest feature_ts <= ts and > ts - ttl, else None."""
    out = []
    for keys, t in zip(entity_keys, entity_ts_us, strict=True):
        best: tuple[int, Any] | None = None
        if t is not None:
            for fkeys, fts, value in zip(feature_keys, feature_ts_us, values, strict=True):
                if fkeys == keys and t - ttl_us < fts <= t and (best is None or fts > best[0]):
                    best = (fts, value)
        out.append(None if best is None else best[1])
    return out


@pytest.fixture
def retrieval() -> Any:
    """The retrieval functions under test, from their three modules."""
    from types import SimpleNamespace

    from lakebed.pipelines.features import online_read, retrieval, training

    return SimpleNamespace(
        get_historical_features=retrieval.get_historical_features,
        create_training_set=training.create_training_set,
        training_set=training.training_set,
        entity_hash=training.entity_hash,
        get_online_features=online_read.get_online_features,
        get_online_feature_dict=online_read.get_online_feature_dict,
    )


@pytest.fixture
def commit() -> Callable[..., Any]:
    from lakebed.pipelines.delta import commit

    return commit


@pytest.fixture
def clicks(config: LakebedConfig, commit: Callable[..., Any]) -> dict[str, Any]:
    """View ``clicks:v1`` keyed by ``user_id`` with ttl 60 minutes and features at fixed times."""
    view = register_view(
        "clicks",
        1,
        entities=["user_id"],
        features=["n", "last_page"],
        ttl=dt.timedelta(hours=1),
        config=config,
    )
    table = offline_rows(
        {"user_id": pa.array([1, 1, 1, 2], pa.int64())},
        [T0_US, T0_US + 30 * MINUTE_US, T0_US + 120 * MINUTE_US, T0_US + 10 * MINUTE_US],
        n=pa.array([10, 11, 12, 20], pa.int64()),
        last_page=pa.array(["a", "b", "c", "z"]),
    )
    commit("fv_clicks_v1", table)
    return {"table": table, "view": view}


# Point-in-time exactness ---------------------------------------------------------------------------
def test_point_in_time_matches_brute_force_on_random_data(
    config: LakebedConfig, commit: Callable[..., Any], retrieval: Any
) -> None:
    rng = np.random.default_rng(20250601)
    ttl = dt.timedelta(minutes=45)
    ttl_us = 45 * MINUTE_US
    register_view(
        "rnd", 3, entities=["user_id", "region"], features=["amount_sum", "cnt"], ttl=ttl, config=config
    )
    regions = np.array(["eu", "us", "apac"])
    # Unique (keys, feature_ts) on a 15-minute grid; entity times on a 5-minute grid, so ties with
    # feature_ts and rows exactly ttl old are frequent.
    n_slots = 40
    grid = [(u, r, s) for u in range(10) for r in regions for s in range(n_slots) if rng.random() < 0.5]
    f_users = [g[0] for g in grid]
    f_regions = [str(g[1]) for g in grid]
    f_ts = [T0_US + g[2] * 15 * MINUTE_US for g in grid]
    amounts = rng.normal(100, 30, len(grid)).round(2)
    amounts_list: list[float | None] = [None if rng.random() < 0.1 else float(a) for a in amounts]
    counts = rng.integers(0, 50, len(grid))
    offline = offline_rows(
        {"user_id": pa.array(f_users, pa.int32()), "region": pa.array(f_regions)},
        f_ts,
        amount_sum=pa.array(amounts_list, pa.float64()),
        cnt=pa.array(counts, pa.int64()),
    )
    order = rng.permutation(offline.num_rows)  # the offline table's physical order does not matter
    commit("fv_rnd_v3", offline.take(pa.array(order[: offline.num_rows // 2])))
    commit("fv_rnd_v3", offline.take(pa.array(order[offline.num_rows // 2 :])))

    m = 3_000
    e_users = rng.integers(0, 11, m).tolist()  # user 10 has no features at all
    e_regions = regions[rng.integers(0, 3, m)].tolist()
    e_ts: list[int | None] = [T0_US + int(s) * 5 * MINUTE_US for s in rng.integers(-6, n_slots * 3 + 12, m)]
    e_ts[7] = None
    entities = pa.table(
        {
            "user_id": pa.array(e_users, pa.int64()),
            "region": e_regions,
            "event_timestamp": pa.array(e_ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "label": rng.integers(0, 2, m),
        }
    )
    result = retrieval.get_historical_features(entities, ["rnd:v3:amount_sum", "rnd:v3:cnt"])

    assert result.column_names == [
        "user_id",
        "region",
        "event_timestamp",
        "label",
        "rnd__amount_sum",
        "rnd__cnt",
    ]
    assert result.select(entities.column_names).equals(entities)
    e_keys = list(zip(e_users, e_regions, strict=True))
    f_keys = list(zip(f_users, f_regions, strict=True))
    assert result.column("rnd__amount_sum").to_pylist() == brute_force(
        e_keys, e_ts, f_keys, f_ts, amounts_list, ttl_us
    )
    expected_counts = brute_force(e_keys, e_ts, f_keys, f_ts, counts.tolist(), ttl_us)
    assert result.column("rnd__cnt").to_pylist() == expected_counts
    assert result.column("rnd__cnt").type == pa.int64()
    assert sum(v is None for v in expected_counts) > 100 and sum(v is not None for v in expected_counts) > 100


def test_ttl_boundary_is_strict_and_exact_match_counts(clicks: dict[str, Any], retrieval: Any) -> None:
    entities = pa.table(
        {
            "user_id": [1, 1, 1, 1, 1, 1],
            "event_timestamp": [
                ts(0),  # exactly at feature_ts → that row
                ts(59),  # 59 min old → still fresh
                ts(60),  # row at 0 is exactly ttl old → but row at 30 is fresh
                ts(90),  # row at 30 exactly ttl old → null, not the older row at 0
                ts(90) - dt.timedelta(microseconds=1),  # one µs inside the ttl
                ts(120),
            ],
        }
    )
    result = retrieval.get_historical_features(entities, ["clicks:v1:n", "clicks:v1:last_page"])
    assert result.column("clicks__n").to_pylist() == [10, 11, 11, None, 11, 12]
    assert result.column("clicks__last_page").to_pylist() == ["a", "b", "b", None, "b", "c"]


def test_time_range_prefilter_keeps_every_usable_row(
    config: LakebedConfig, commit: Callable[..., Any], retrieval: Any
) -> None:
    register_view("edge", 1, entities=["k"], features=["v"], ttl=dt.timedelta(hours=1), config=config)
    us = 1
    times = [
        T0_US,
        T0_US + 40 * MINUTE_US,
        T0_US + 40 * MINUTE_US + us,
        T0_US + 200 * MINUTE_US,
        T0_US + 200 * MINUTE_US + us,
    ]
    commit("fv_edge_v1", offline_rows({"k": [1] * 5}, times, v=[0, 1, 2, 3, 4]))
    entities = pa.table(
        {"k": [1, 1, 1], "event_timestamp": [ts(100), ts(200), ts(100) + dt.timedelta(microseconds=1)]}
    )
    # ts(100): the row at 40 min is exactly ttl old, the one at 40 min + 1 µs is not; ts(200): the row at
    # exactly ts, not the one 1 µs later; ts(100) + 1 µs: the row at 40 min + 1 µs is now exactly ttl old
    result = retrieval.get_historical_features(entities, ["edge:v1:v"])
    assert result.column("edge__v").to_pylist() == [2, 3, None]
    nulls = pa.table({"k": [1], "event_timestamp": pa.array([None], pa.timestamp("us", tz="UTC"))})
    assert retrieval.get_historical_features(nulls, ["edge:v1:v"]).column("edge__v").to_pylist() == [None]


def test_rows_before_any_feature_unknown_entities_and_null_keys_get_nulls(
    clicks: dict[str, Any], retrieval: Any
) -> None:
    entities = pa.table(
        {
            "user_id": pa.array([1, 2, 3, None, 2], pa.int64()),
            "event_timestamp": [ts(-1), ts(5), ts(30), ts(30), ts(10)],
        }
    )
    result = retrieval.get_historical_features(entities, ["clicks:v1:n"])
    assert result.column("clicks__n").to_pylist() == [None, None, None, None, 20]


def test_duplicate_entity_rows_are_kept_in_input_order(clicks: dict[str, Any], retrieval: Any) -> None:
    users = [2, 1, 1, 2, 1, 1, 2]
    times = [ts(15), ts(31), ts(31), ts(15), ts(5), ts(31), ts(200)]
    entities = pa.table({"row": list(range(7)), "user_id": users, "event_timestamp": times})
    result = retrieval.get_historical_features(entities, ["clicks:v1:n"])
    assert result.column("row").to_pylist() == list(range(7))
    assert result.column("clicks__n").to_pylist() == [20, 11, 11, 20, 10, 11, None]


def test_pandas_polars_and_arrow_inputs_give_the_same_rows(clicks: dict[str, Any], retrieval: Any) -> None:
    import pandas as pd
    import polars as pl

    users, times = [1, 2, 1], [ts(35), ts(12), ts(125)]
    data: dict[str, list[Any]] = {"user_id": users, "event_timestamp": times}
    arrow = retrieval.get_historical_features(pa.table(data), ["clicks:v1:n"])
    frame = retrieval.get_historical_features(pl.DataFrame(data), ["clicks:v1:n"])
    # pandas: naive datetime64[ns] read as UTC, with a sub-microsecond part floored
    naive = pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": pd.to_datetime([t.replace(tzinfo=None) for t in times])
            + pd.Timedelta(nanoseconds=999),
        }
    )
    panda = retrieval.get_historical_features(naive, ["clicks:v1:n"])
    expected = [11, 20, 12]
    for result in (arrow, frame, panda):
        assert result.column("clicks__n").to_pylist() == expected
        assert result.num_rows == 3


def test_timestamp_units_dates_and_custom_column_name(clicks: dict[str, Any], retrieval: Any) -> None:
    seconds = pa.array([int(ts(31).timestamp())], pa.timestamp("s", tz="America/New_York"))
    result = retrieval.get_historical_features(
        pa.table({"user_id": [1], "at": seconds}), ["clicks:v1:n"], timestamp_column="at"
    )
    assert result.column("clicks__n").to_pylist() == [11]
    day = pa.table({"user_id": [1], "event_timestamp": pa.array([T0.date()], pa.date32())})
    assert retrieval.get_historical_features(day, ["clicks:v1:n"]).column("clicks__n").to_pylist() == [10]


def test_several_views_in_one_call(
    clicks: dict[str, Any], config: LakebedConfig, commit: Any, retrieval: Any
) -> None:
    register_view("geo", 2, entities=["city"], features=["temp"], ttl=dt.timedelta(days=1), config=config)
    commit(
        "fv_geo_v2",
        offline_rows({"city": ["ber", "par"]}, [T0_US, T0_US + 60 * MINUTE_US], temp=[3.5, 7.0]),
    )
    entities = pa.table(
        {"city": ["par", "ber", "par"], "user_id": [1, 1, 2], "event_timestamp": [ts(61), ts(31), ts(59)]}
    )
    result = retrieval.get_historical_features(
        entities, ["geo:v2:temp", "clicks:v1:n", "clicks:v1:last_page"]
    )
    assert result.column_names == [
        "city",
        "user_id",
        "event_timestamp",
        "geo__temp",
        "clicks__n",
        "clicks__last_page",
    ]
    assert result.column("geo__temp").to_pylist() == [7.0, 3.5, None]
    assert result.column("clicks__n").to_pylist() == [11, 11, 20]


def test_empty_entity_rows(clicks: dict[str, Any], retrieval: Any) -> None:
    entities = pa.table(
        {"user_id": pa.array([], pa.int64()), "event_timestamp": pa.array([], pa.timestamp("us", tz="UTC"))}
    )
    result = retrieval.get_historical_features(entities, ["clicks:v1:n", "clicks:v1:last_page"])
    assert result.num_rows == 0
    assert result.schema.field("clicks__n").type == pa.int64()
    assert result.schema.field("clicks__last_page").type == pa.string()


def test_pinned_delta_version(clicks: dict[str, Any], commit: Any, retrieval: Any) -> None:
    commit(
        "fv_clicks_v1", offline_rows({"user_id": [1]}, [T0_US + 40 * MINUTE_US], n=[99], last_page=["new"])
    )
    entities = pa.table({"user_id": [1], "event_timestamp": [ts(45)]})
    assert retrieval.get_historical_features(entities, ["clicks:v1:n"]).column("clicks__n").to_pylist() == [
        99
    ]
    pinned = retrieval.get_historical_features(entities, ["clicks:v1:n"], versions={"clicks:v1": 0})
    assert pinned.column("clicks__n").to_pylist() == [11]
    with pytest.raises(LakebedError, match="no readable Delta version 9"):
        retrieval.get_historical_features(entities, ["clicks:v1:n"], versions={"fv_clicks_v1": 9})
    with pytest.raises(LakebedError, match="geo:v1"):
        retrieval.get_historical_features(entities, ["clicks:v1:n"], versions={"geo:v1": 0})


# Errors --------------------------------------------------------------------------------------------
def test_unknown_references_are_clear_errors(clicks: dict[str, Any], retrieval: Any) -> None:
    entities = pa.table({"user_id": [1], "event_timestamp": [ts(0)]})
    with pytest.raises(LakebedError, match="nosuch"):
        retrieval.get_historical_features(entities, ["clicks:v1:nosuch"])
    with pytest.raises(LakebedError, match="clicks:v7"):
        retrieval.get_historical_features(entities, ["clicks:v7:n"])
    with pytest.raises(LakebedError, match="nothere"):
        retrieval.get_historical_features(entities, ["nothere:v1:n"])
    with pytest.raises(LakebedError, match="not-a-ref"):
        retrieval.get_historical_features(entities, ["not-a-ref"])
    with pytest.raises(LakebedError, match="twice"):
        retrieval.get_historical_features(entities, ["clicks:v1:n", "clicks:v1:n"])


def test_missing_key_or_timestamp_column_is_named(clicks: dict[str, Any], retrieval: Any) -> None:
    with pytest.raises(LakebedError, match="user_id"):
        retrieval.get_historical_features(pa.table({"uid": [1], "event_timestamp": [ts(0)]}), ["clicks:v1:n"])
    with pytest.raises(LakebedError, match="event_timestamp"):
        retrieval.get_historical_features(pa.table({"user_id": [1], "ts": [ts(0)]}), ["clicks:v1:n"])
    with pytest.raises(LakebedError, match="'when'"):
        retrieval.get_historical_features(
            pa.table({"user_id": [1], "event_timestamp": [ts(0)]}), ["clicks:v1:n"], timestamp_column="when"
        )
    with pytest.raises(LakebedError, match="timestamp or a date"):
        retrieval.get_historical_features(
            pa.table({"user_id": [1], "event_timestamp": ["x"]}), ["clicks:v1:n"]
        )
    with pytest.raises(LakebedError, match="user_id"):
        retrieval.get_historical_features(
            pa.table({"user_id": ["x"], "event_timestamp": [ts(0)]}), ["clicks:v1:n"]
        )


def test_registered_view_without_offline_table(config: LakebedConfig, retrieval: Any) -> None:
    register_view("empty", 1, entities=["k"], features=["f"], ttl=dt.timedelta(hours=1), config=config)
    with pytest.raises(LakebedError, match="fv_empty_v1"):
        retrieval.get_historical_features(pa.table({"k": [1], "event_timestamp": [ts(0)]}), ["empty:v1:f"])


# Training sets -------------------------------------------------------------------------------------
def test_training_set_rebuilds_identically_after_new_data(
    clicks: dict[str, Any], config: LakebedConfig, commit: Any, retrieval: Any
) -> None:
    import pandas as pd

    entities = pd.DataFrame(
        {
            "user_id": [1, 2, 1, 1],
            "event_timestamp": pd.to_datetime([ts(45), ts(20), ts(130), ts(45)]),
            "label": [True, False, None, True],
        }
    )
    features = ["clicks:v1:n", "clicks:v1:last_page"]
    manifest = retrieval.create_training_set(entities, features, name="churn-1")
    folder = config.home / "training_sets" / "churn-1"
    assert (folder / "entities.parquet").exists()
    stored = json.loads((folder / "manifest.json").read_text())
    assert stored["features"] == features
    view = dict(stored["views"]["clicks:v1"])
    assert view.pop("definition_hash") == clicks["view"].definition_hash()
    assert view == {"table": "fv_clicks_v1", "delta_version": 0}
    assert (
        stored["entity_hash"] == manifest.entity_hash == retrieval.entity_hash(pa.Table.from_pandas(entities))
    )
    assert stored["entity_rows"] == str(folder / "entities.parquet")

    before = retrieval.training_set(manifest)
    assert before.column("clicks__n").to_pylist() == [11, 20, 12, 11]
    assert before.equals(retrieval.get_historical_features(entities, features))

    # Later data (a late correction and newer rows) changes today's answer but not the training set.
    commit(
        "fv_clicks_v1",
        offline_rows(
            {"user_id": [1, 2]},
            [T0_US + 40 * MINUTE_US, T0_US + 15 * MINUTE_US],
            n=[77, 88],
            last_page=["x", "y"],
        ),
    )
    now = retrieval.get_historical_features(entities, features)
    assert now.column("clicks__n").to_pylist() == [77, 88, 12, 77]
    for source in (manifest, folder / "manifest.json", folder, "churn-1"):
        assert retrieval.training_set(source).equals(before)

    with pytest.raises(LakebedError, match="already exists"):
        retrieval.create_training_set(entities, features, name="churn-1")


def test_training_set_detects_changed_entity_rows(
    clicks: dict[str, Any], config: LakebedConfig, retrieval: Any
) -> None:
    entities = pa.table({"user_id": [1, 2], "event_timestamp": [ts(45), ts(20)]})
    manifest = retrieval.create_training_set(entities, ["clicks:v1:n"], name="tampered")
    path = Path(manifest.entity_rows)
    pq.write_table(pa.table({"user_id": [1, 2], "event_timestamp": [ts(45), ts(21)]}), path)
    with pytest.raises(LakebedError, match="have changed"):
        retrieval.training_set(manifest)


def test_entity_hash_is_canonical(retrieval: Any) -> None:
    import polars as pl

    table = pa.table(
        {
            "k": pa.array([1, None, 3], pa.int64()),
            "s": pa.array(["a", None, "c"]),
            "t": pa.array([1, 2, None], pa.timestamp("us", tz="UTC")),
            "b": [True, None, False],
        }
    )
    digest = retrieval.entity_hash(table)
    assert retrieval.entity_hash(pa.concat_tables([table.slice(0, 1), table.slice(1)])) == digest
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    assert retrieval.entity_hash(frame.to_arrow()) == digest
    assert retrieval.entity_hash(table.replace_schema_metadata({"x": "y"})) == digest
    changed = table.set_column(0, "k", pa.array([1, 0, 3], pa.int64()))  # a null became 0
    assert retrieval.entity_hash(changed) != digest


# Online reads --------------------------------------------------------------------------------------
def test_online_features_in_input_order_with_ttl(
    clicks: dict[str, Any], config: LakebedConfig, retrieval: Any
) -> None:
    from lakebed.pipelines.features.online import default_online_store

    store = default_online_store(config)
    store.write("fv_clicks_v1", clicks["table"], ["user_id"])  # keeps user 1 at 120 min, user 2 at 10 min
    rows = {"user_id": [2, 3, 1, 2]}
    result = retrieval.get_online_features(
        ["clicks:v1:n", "clicks:v1:last_page"], rows, store=store, now=ts(130)
    )
    assert result.column_names == ["user_id", "clicks__n", "clicks__last_page"]
    # user 2's row (10 min) is more than the 1 h ttl old at 130 min; user 3 is unknown
    assert result.column("clicks__n").to_pylist() == [None, None, 12, None]
    assert result.column("clicks__last_page").to_pylist() == [None, None, "c", None]
    # the ttl boundary is the offline one: exactly ttl old is stale
    single = ["clicks:v1:n"]
    assert retrieval.get_online_features(single, {"user_id": 2}, store=store, now=ts(69)).column(
        1
    ).to_pylist() == [20]
    assert retrieval.get_online_features(single, {"user_id": 2}, store=store, now=ts(70)).column(
        1
    ).to_pylist() == [None]


def test_feature_store_facade(clicks: dict[str, Any], config: LakebedConfig) -> None:
    from lakebed.feature_store import FeatureStore

    store = FeatureStore(config)
    entities = pa.table({"user_id": [1], "event_timestamp": [ts(31)]})
    assert store.get_historical_features(entities, features=["clicks:v1:n"]).column(
        "clicks__n"
    ).to_pylist() == [11]
    manifest = store.create_training_set(entities, ["clicks:v1:n"], name="facade")
    assert store.training_set(manifest).column("clicks__n").to_pylist() == [11]
    assert any(v.name == "clicks" and v.version == 1 for v in store.list_feature_views())


def test_cli_features_commands(clicks: dict[str, Any], config: LakebedConfig, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    from click.testing import CliRunner

    from lakebed.cli_features import features
    from lakebed.pipelines.features.online import default_online_store

    entities = tmp_path / "entities.csv"
    pacsv.write_csv(
        pa.table(
            {
                "user_id": [1, 2, 1],
                "event_timestamp": ["2025-01-01T00:31:00Z", "2025-01-01T00:15:00Z", "2025-01-01T09:00:00Z"],
            }
        ),
        entities,
    )
    runner = CliRunner()
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        features,
        [
            "get-historical",
            "--entities",
            str(entities),
            "--features",
            "clicks:v1:n,clicks:v1:last_page",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("clicks__n").to_pylist() == [11, 20, None]

    result = runner.invoke(
        features,
        ["training-set", "create", "cli-set", "--entities", str(entities), "--features", "clicks:v1:n"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["views"]["clicks:v1"]["delta_version"] == 0
    rebuilt = tmp_path / "rebuilt.csv"
    result = runner.invoke(
        features, ["training-set", "rebuild", "cli-set", "--out", str(rebuilt)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert pacsv.read_csv(rebuilt).column("clicks__n").to_pylist() == [11, 20, None]

    default_online_store(config).write("fv_clicks_v1", clicks["table"], ["user_id"])
    result = runner.invoke(
        features,
        [
            "get-online",
            "--features",
            "clicks:v1:n",
            "--entity",
            "user_id=1",
            "--now",
            "2025-01-01T02:30:00+00:00",
            "--format",
            "json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert [r["clicks__n"] for r in json.loads(result.stdout)] == [12]


def test_online_feature_dict_and_single_entity_reads_match_the_table_path(
    clicks: dict[str, Any], config: LakebedConfig, retrieval: Any, commit: Callable[..., Any]
) -> None:
    """``get_online_feature_dict`` and the single-entity Arrow read return exactly what the general
    (table) path returns: values, nulls for misses and stale rows (ttl vs ``now``), column names, types
    and order; pass-through columns kept; several views at once; the same errors."""
    from lakebed.feature_store import FeatureStore
    from lakebed.pipelines.features.online import default_online_store

    register_view(
        "carts", 2, entities=["user_id", "shop"], features=["items"], ttl=dt.timedelta(days=1), config=config
    )
    store = default_online_store(config)
    store.write("fv_clicks_v1", clicks["table"], ["user_id"])  # user 1 at 120 min (12, "c"), user 2 at 10 min
    carts = offline_rows(
        {"user_id": pa.array([1, 2], pa.int64()), "shop": pa.array(["s1", "s2"])},
        [T0_US, T0_US],
        items=pa.array([3.5, 4.0], pa.float64()),
    )
    store.write("fv_carts_v2", carts, ["user_id", "shop"])
    facade = FeatureStore(config, online_store=store)
    refs = ["clicks:v1:last_page", "carts:v2:items", "clicks:v1:n"]
    entities: list[dict[str, Any]] = [
        {"user_id": 1, "shop": "s1"},
        {"user_id": 2, "shop": "s2"},  # clicks stale at 130 min (10 min + 1 h ttl)
        {"user_id": 3, "shop": "s1"},  # unknown everywhere
        {"shop": "s1", "user_id": 1, "label": 0.5, "ok": True},  # pass-through columns, other order
        {"user_id": np.int64(1), "shop": "s1"},  # not a plain int: the general path
    ]
    for now in (ts(60), ts(130), ts(180)):
        for entity in entities:
            table = retrieval.get_online_features(
                refs, pa.table({k: [v] for k, v in entity.items()}), store=store, now=now
            )
            single = retrieval.get_online_features(refs, entity, store=store, now=now)
            assert single.equals(table), (entity, now)
            assert single.schema == table.schema
            expected = table.to_pylist()[0]
            assert retrieval.get_online_feature_dict(refs, entity, store=store, now=now) == expected
            assert facade.get_online_feature_dict(refs, entity, now=now) == expected
            assert facade.get_online_features(refs, entity, now=now).equals(table)
            assert list(facade.get_online_feature_dict(refs, entity, now=now)) == table.column_names
    assert facade.get_online_feature_dict(refs, {"user_id": 1, "shop": "s1"}, now=ts(130)) == {
        "user_id": 1,
        "shop": "s1",
        "clicks__last_page": "c",
        "carts__items": 3.5,
        "clicks__n": 12,
    }
    # The ttl boundary is the offline one: exactly ttl old is stale.
    assert facade.get_online_feature_dict(["clicks:v1:n"], {"user_id": 2}, now=ts(69))["clicks__n"] == 20
    assert facade.get_online_feature_dict(["clicks:v1:n"], {"user_id": 2}, now=ts(70))["clicks__n"] is None
    # Errors are those of the table path.
    with pytest.raises(EntityRowsError, match=r"lack entity key column\(s\) \['shop'\]"):
        facade.get_online_feature_dict(refs, {"user_id": 1})
    with pytest.raises(EntityRowsError, match=r"lack entity key column\(s\) \['shop'\]"):
        facade.get_online_features(refs, {"user_id": 1})
    with pytest.raises(UnknownFeatureError, match="already entity-row columns"):
        facade.get_online_feature_dict(["clicks:v1:n"], {"user_id": 1, "clicks__n": 0})
    with pytest.raises(UnknownFeatureError, match="already entity-row columns"):
        facade.get_online_features(["clicks:v1:n"], {"user_id": 1, "clicks__n": 0})
    with pytest.raises(UnknownFeatureError, match="already have"):
        retrieval.get_online_feature_dict(["clicks:v1:n"], {"user_id": 1, "clicks__n": 0}, store=store)
    with pytest.raises(EntityRowsError, match="one entity; got 2"):
        facade.get_online_feature_dict(["clicks:v1:n"], {"user_id": [1, 2]})

    # A store with only the OnlineStore protocol (no read_one) gives the same answers.
    class PlainStore:
        def read(self, view_key: str, entity_rows: pa.Table, keys: Sequence[str]) -> pa.Table:
            return store.read(view_key, entity_rows, keys)

    plain = FeatureStore(config, online_store=PlainStore())
    for entity in entities[:4]:
        expected = facade.get_online_features(refs, entity, now=ts(130))
        assert plain.get_online_features(refs, entity, now=ts(130)).equals(expected)
        assert plain.get_online_feature_dict(refs, entity, now=ts(130)) == expected.to_pylist()[0]


def test_online_reads_see_new_writes_through_cached_plans(
    clicks: dict[str, Any], config: LakebedConfig
) -> None:
    """Plans and store metadata are cached, values never: a write after a read is seen by the next read."""
    from lakebed.feature_store import FeatureStore
    from lakebed.pipelines.features.online import default_online_store

    store = default_online_store(config)
    store.write("fv_clicks_v1", clicks["table"], ["user_id"])
    facade = FeatureStore(config, online_store=store)
    refs = ["clicks:v1:n", "clicks:v1:last_page"]
    assert facade.get_online_feature_dict(refs, {"user_id": 2}, now=ts(20))["clicks__n"] == 20
    assert facade.get_online_features(refs, {"user_id": 2}, now=ts(20)).column("clicks__n").to_pylist() == [
        20
    ]
    newer = offline_rows(
        {"user_id": pa.array([2], pa.int64())},
        [T0_US + 15 * MINUTE_US],
        n=pa.array([21], pa.int64()),
        last_page=pa.array(["y"]),
    )
    store.write("fv_clicks_v1", newer, ["user_id"])
    assert facade.get_online_feature_dict(refs, {"user_id": 2}, now=ts(20)) == {
        "user_id": 2,
        "clicks__n": 21,
        "clicks__last_page": "y",
    }
    assert facade.get_online_features(refs, {"user_id": [2, 2]}, now=ts(20)).column(
        "clicks__n"
    ).to_pylist() == [21, 21]
    # A second store object (its own connection, like another process) writing is seen as well.
    default_online_store(config).write(
        "fv_clicks_v1",
        offline_rows(
            {"user_id": pa.array([2], pa.int64())},
            [T0_US + 16 * MINUTE_US],
            n=pa.array([22], pa.int64()),
            last_page=pa.array(["x"]),
        ),
        ["user_id"],
    )
    assert facade.get_online_feature_dict(refs, {"user_id": 2}, now=ts(20))["clicks__n"] == 22
    assert facade.get_online_features(refs, {"user_id": 2}, now=ts(20)).column("clicks__n").to_pylist() == [
        22
    ]
