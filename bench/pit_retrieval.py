"""Point-in-time retrieval: lakebed's ``get_historical_features`` against a hand-written DuckDB ASOF JOIN.

An offline table of 10,000,000 feature rows (``--quick``: 500,000): 100 rows per entity at distinct hourly
times 1–3 hours apart, three features (``amount_sum`` float64, ``txn_count`` int64, ``amount_max``
float64), written once through ``commit`` into ``fv_pit_bench_v1`` of a fresh lakebed home, with the view
``pit_bench:v1`` (ttl 2 h) registered. 1,000,000 entity rows (``--quick``: 50,000) in random order, with
random times over the whole range and 2% of unknown entities, so many rows match and many are null.

Baseline: the same join written by hand in DuckDB over the same data already in memory as Arrow (the
offline table read once, untimed): a row number, ``ASOF LEFT JOIN ... ON key AND ts >= feature_ts``, the
ttl as a ``CASE`` after the match and ``ORDER BY`` the row number. lakebed's time includes resolving the
view in the registry and scanning the Delta table. Alternating rounds, best of each, in entity rows/s.
Target: lakebed ≥ 0.5 × baseline. The two results are compared row for row ("identical rows: yes/no").
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bench.common import BenchOptions, RoundTimes, lakebed_home, log, timed

BASELINE_NAME = "hand-written DuckDB ASOF JOIN"
ENTITY_ROWS = 1_000_000
FEATURE_ROWS = 10_000_000
ROWS_PER_ENTITY = 100
TARGET = 0.5
VIEW, VERSION = "pit_bench", 1
TABLE = f"fv_{VIEW}_v{VERSION}"
FEATURES = ("amount_sum", "txn_count", "amount_max")
TTL = dt.timedelta(hours=2)
_T0_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
_HOUR_US = 3_600_000_000


def feature_rows(n_rows: int, seed: int = 7) -> Any:
    """``n_rows`` offline rows: ROWS_PER_ENTITY per entity at distinct times (hour slots 1–3 h apart)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    entities = max(1, n_rows // ROWS_PER_ENTITY)
    n = entities * ROWS_PER_ENTITY
    slot = np.tile(np.arange(ROWS_PER_ENTITY, dtype=np.int64), entities)
    hours = slot * 2 + rng.integers(0, 2, n)
    amounts = rng.gamma(2.0, 40.0, n).round(2)
    return pa.table(
        {
            "entity_id": np.repeat(np.arange(entities, dtype=np.int64), ROWS_PER_ENTITY),
            "feature_ts": pa.array(_T0_US + hours * _HOUR_US, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "amount_sum": amounts,
            "txn_count": rng.integers(1, 20, n),
            "amount_max": (amounts / rng.uniform(1.0, 3.0, n)).round(2),
        }
    )


def entity_rows(n_rows: int, entities: int, seed: int = 11) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    span = (2 * ROWS_PER_ENTITY + 6) * _HOUR_US
    times = _T0_US - 3 * _HOUR_US + rng.integers(0, span, n_rows)
    return pa.table(
        {
            "entity_id": rng.integers(0, int(entities * 1.02) + 1, n_rows),
            "event_timestamp": pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "label": rng.integers(0, 2, n_rows).astype(np.int8),
        }
    )


def register_view(
    name: str, version: int, *, entities: Any, features: Any, ttl: dt.timedelta, config: Any
) -> Any:
    """Register view ``name:v<version>`` (one ``last`` aggregation per feature name) in the registry;
    its source table is never read here, the offline/online rows are written directly."""
    from lakebed.pipelines.features.registry import register
    from lakebed.schemas.features import FeatureView

    view = FeatureView.from_dict(
        {
            "name": name,
            "version": version,
            "entities": list(entities),
            "source": {"table": f"{name}_events"},
            "event_time": "event_time",
            "hop": "1h",
            "ttl": ttl,
            "aggregations": [{"name": f, "function": "last", "column": f, "window": "1h"} for f in features],
        }
    )
    register(view, config=config)
    return view


def baseline(entities: Any, features: Any) -> Any:
    """The hand-written join over in-memory Arrow data."""
    import duckdb
    import numpy as np
    import pyarrow as pa

    from lakebed.pipelines.read import fetch_arrow

    numbered = entities.append_column("__rn", pa.array(np.arange(entities.num_rows, dtype=np.int64)))
    ttl_hours = int(TTL.total_seconds() // 3600)
    fresh = f"f.feature_ts > e.event_timestamp - INTERVAL {ttl_hours} HOUR"
    picks = ", ".join(f"CASE WHEN {fresh} THEN f.{name} END AS {name}" for name in FEATURES)
    connection = duckdb.connect()
    try:
        connection.register("e", numbered)
        connection.register("f", features)
        relation = connection.sql(
            f"SELECT e.entity_id, e.event_timestamp, e.label, {picks} "
            "FROM e ASOF LEFT JOIN f ON e.entity_id = f.entity_id AND e.event_timestamp >= f.feature_ts "
            "ORDER BY e.__rn"
        )
        return fetch_arrow(relation)
    finally:
        connection.close()


def _same_rows(ours: Any, theirs: Any) -> bool:
    if ours.num_rows != theirs.num_rows or ours.num_columns != theirs.num_columns:
        return False
    aligned = theirs.rename_columns(ours.column_names).cast(ours.schema)
    return bool(ours.equals(aligned))


def run(opts: BenchOptions) -> str:
    n_features = opts.scaled(FEATURE_ROWS)
    n_entities = opts.scaled(ENTITY_ROWS)
    log(
        f"pit_retrieval{opts.label}: {n_entities:,} entity rows × {n_features:,} feature rows, "
        f"lakebed vs {BASELINE_NAME}"
    )
    from lakebed.pipelines.delta import commit
    from lakebed.pipelines.features.retrieval import get_historical_features
    from lakebed.pipelines.read import read_table

    refs = [f"{VIEW}:v{VERSION}:{name}" for name in FEATURES]
    with lakebed_home(opts.workdir / "pit_home") as config:
        seconds, offline = timed(lambda: feature_rows(n_features))
        log(f"  generated {offline.num_rows:,} feature rows in {seconds:.1f} s")
        seconds, result = timed(lambda: commit(TABLE, offline, config=config))
        log(f"  committed {TABLE} (version {result.version}) in {seconds:.1f} s")
        register_view(VIEW, VERSION, entities=["entity_id"], features=FEATURES, ttl=TTL, config=config)
        entities = entity_rows(n_entities, offline.num_rows // ROWS_PER_ENTITY)
        offline = None  # the baseline gets the table as read back, like lakebed
        in_memory = read_table(TABLE, config=config)  # the baseline's Arrow data, read once, untimed

        # Untimed warm-up of both paths on a small slice.
        baseline(entities.slice(0, 1000), in_memory)
        get_historical_features(entities.slice(0, 1000), refs, config=config)

        times = RoundTimes("pit_retrieval", "rows/s", BASELINE_NAME, TARGET, opts.quick)
        ours = theirs = None
        for round_no in range(1, opts.rounds + 1):
            seconds, theirs = timed(lambda: baseline(entities, in_memory))
            times.record("baseline", round_no, seconds, f"{n_entities / seconds:12,.0f} rows/s")
            seconds, ours = timed(lambda: get_historical_features(entities, refs, config=config))
            times.record("lakebed", round_no, seconds, f"{n_entities / seconds:12,.0f} rows/s")
        identical = ours is not None and theirs is not None and _same_rows(ours, theirs)
        matched = ours.column(ours.num_columns - 1).drop_null().__len__() if ours is not None else 0
        log(f"  {matched:,} of {n_entities:,} entity rows matched a fresh feature row")
        log(f"  identical rows: {'yes' if identical else 'no'}")
    line = times.summary(n_entities)
    return f"{line}; identical rows: {'yes' if identical else 'no'}"
