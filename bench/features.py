"""The offline layout on sparse entities: rows per event, materialisation time against the dense layout of
earlier versions, and point-in-time retrieval over the stored segments.

Data: ``ENTITIES`` entities (100,000; ``--quick``: 5,000), each with about ``EVENTS_PER_DAY`` (3) events a
day at random times over ``DAYS`` (90) days, one float amount each; the view ``sparse:v1`` has a count and a
sum over 1 day, a count and a max over 1 hour, and a 5 minute hop (ttl 1 day).

1. Materialisation (alternating pairs on ``SAMPLE`` = 200 entities, ``--quick``: 50): the dense layout (a
   row per entity per hop end while a window holds an event: ``compute_features`` + one commit) against
   segments (``compute_segments`` + one commit). Both times and row counts are printed; the dense layout on
   all entities would be ~288 rows per event-day and does not fit this machine, which is the point.
2. ``lakebed features backfill`` of the whole data (raw table → segments table): time, rows per event,
   rows per event per window size (target ≤ 2).
3. Point-in-time retrieval of 1,000,000 entity rows (``--quick``: 50,000) over the stored segments:
   lakebed's ``get_historical_features`` against a bare DuckDB ``ASOF LEFT JOIN`` over the stored rows
   (no ttl, no validity), scanning the offline Delta table's files through ``deltalake``'s pyarrow
   dataset as lakebed does (at 80 million segments an in-memory copy for the baseline alone would take
   ~5 GB): per-pair ratio of rates, target ≥ 0.9.
4. Identity: on the sample, the same entity rows joined against the dense table (written in the earlier
   layout under ``sparse:v2``, same definition) and against the segments give identical rows.
"""

from __future__ import annotations

from typing import Any

from bench.common import BenchOptions, RoundTimes, lakebed_home, log, timed

ENTITIES = 100_000
DAYS = 90
EVENTS_PER_DAY = 3
SAMPLE = 200
ENTITY_ROWS = 1_000_000
PIT_TARGET = 0.9
ROWS_PER_WINDOW_TARGET = 2.0
_T0_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
_DAY_US = 86_400_000_000


def view_spec(version: int) -> dict[str, Any]:
    return {
        "name": "sparse",
        "version": version,
        "entities": ["entity_id"],
        "source": {"table": "sparse_events"},
        "event_time": "event_time",
        "hop": "5m",
        "ttl": "1d",
        "allowed_lateness": "365d",
        "aggregations": [
            {"name": "n_1d", "function": "count", "window": "1d"},
            {"name": "amount_1d", "function": "sum", "column": "amount", "window": "1d"},
            {"name": "n_1h", "function": "count", "window": "1h"},
            {"name": "amount_max_1h", "function": "max", "column": "amount", "window": "1h"},
        ],
    }


def sparse_events(entities: int, seed: int = 3) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n = entities * DAYS * EVENTS_PER_DAY
    times = _T0_US + rng.integers(0, DAYS * _DAY_US, n)
    return pa.table(
        {
            "entity_id": rng.integers(0, entities, n),
            "event_time": pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "amount": rng.gamma(2.0, 30.0, n).round(2),
        }
    )


def entity_rows(n_rows: int, entities: int, seed: int = 5) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    times = _T0_US - _DAY_US + rng.integers(0, (DAYS + 2) * _DAY_US, n_rows)
    return pa.table(
        {
            "entity_id": rng.integers(0, int(entities * 1.02) + 1, n_rows),
            "event_timestamp": pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )


def bare_asof(entities: Any, stored: Any, features: list[str]) -> Any:
    """The bare join: the latest stored row at or before each entity row, in input order; ``stored`` is
    the offline Delta table's pyarrow dataset, scanned by DuckDB (only the columns the join needs)."""
    import duckdb
    import numpy as np
    import pyarrow as pa

    from lakebed.pipelines.read import fetch_arrow

    numbered = entities.append_column("__rn", pa.array(np.arange(entities.num_rows, dtype=np.int64)))
    picks = ", ".join(f"f.{name}" for name in features)
    connection = duckdb.connect()
    try:
        connection.register("e", numbered)
        connection.register("f", stored)
        return fetch_arrow(
            connection.sql(
                f"SELECT e.entity_id, e.event_timestamp, {picks} FROM e ASOF LEFT JOIN f "
                "ON e.entity_id = f.entity_id AND e.event_timestamp >= f.feature_ts ORDER BY e.__rn"
            )
        )
    finally:
        connection.close()


def run(opts: BenchOptions) -> str:
    import pyarrow.compute as pc

    from lakebed.pipelines.delta import commit
    from lakebed.pipelines.features.changes import compute_segments
    from lakebed.pipelines.features.materialize import backfill
    from lakebed.pipelines.features.registry import register
    from lakebed.pipelines.features.retrieval import get_historical_features
    from lakebed.pipelines.features.windows import compute_features
    from lakebed.schemas.features import FeatureView

    n_entities = ENTITIES // 20 if opts.quick else ENTITIES
    sample = max(10, SAMPLE // 10) if opts.quick else SAMPLE
    n_rows = opts.scaled(ENTITY_ROWS)
    view = FeatureView.from_dict(view_spec(1))
    dense_view = FeatureView.from_dict(view_spec(2))
    features = [a.name for a in view.aggregations]
    windows = len({a.window_us for a in view.aggregations})
    log(
        f"features_sparse{opts.label}: {n_entities:,} entities × {DAYS} days × ~{EVENTS_PER_DAY} events/day, "
        f"windows 1d and 1h, hop 5m"
    )
    with lakebed_home(opts.workdir / "sparse_home") as config:
        events = sparse_events(n_entities)
        few = events.filter(pc.less(events.column("entity_id"), sample))
        register(view, config=config)
        register(dense_view, config=config)

        # 1. Materialisation on the sample: dense layout vs segments, alternating pairs.
        times = RoundTimes("features_materialize", "events/s", "dense layout", None, opts.quick)
        dense_rows = segment_rows = 0
        for round_no in range(1, opts.rounds + 1):
            seconds, result = timed(
                lambda: commit(
                    dense_view.offline_table,
                    compute_features(few, dense_view),
                    mode="overwrite",
                    config=config,
                )
            )
            dense_rows = result.rows
            times.record("baseline", round_no, seconds, f"{dense_rows:,} dense rows")
            seconds, result = timed(
                lambda: commit(
                    "sparse_segments_sample", compute_segments(few, view), mode="overwrite", config=config
                )
            )
            segment_rows = result.rows
            times.record("lakebed", round_no, seconds, f"{segment_rows:,} segments")
        materialize_line = times.summary(few.num_rows)
        log(
            f"  sample of {sample} entities, {few.num_rows:,} events: dense {dense_rows:,} rows "
            f"({dense_rows / few.num_rows:.1f}/event), segments {segment_rows:,} ({segment_rows / few.num_rows:.2f}/event)"
        )

        # 2. The whole data through the backfill.
        seconds, _ = timed(lambda: commit("sparse_events", events, config=config))
        log(f"  raw table: {events.num_rows:,} events committed in {seconds:.1f} s")
        seconds, result = timed(lambda: backfill(view, config=config, update_online=False))
        per_event = result.feature_rows / max(1, events.num_rows)
        per_window = per_event / windows
        log(
            f"  backfill: {result.feature_rows:,} segments for {events.num_rows:,} events in {seconds:.1f} s "
            f"({per_event:.2f} rows/event, {per_window:.2f} per window size, target ≤ {ROWS_PER_WINDOW_TARGET:.0f})"
        )

        # 3. Point-in-time retrieval over the stored segments.
        entities = entity_rows(n_rows, n_entities)
        refs = [f"sparse:v1:{name}" for name in features]
        from deltalake import DeltaTable

        from lakebed.pipelines.catalog import Catalog

        stored = DeltaTable(Catalog(config).get(view.offline_table).uri).to_pyarrow_dataset()
        bare_asof(entities.slice(0, 1000), stored, features)
        get_historical_features(entities.slice(0, 1000), refs, config=config)
        pit = RoundTimes("features_sparse_pit", "rows/s", "bare DuckDB ASOF JOIN", PIT_TARGET, opts.quick)
        ours = None
        for round_no in range(1, opts.rounds + 1):
            seconds, _ = timed(lambda: bare_asof(entities, stored, features))
            pit.record("baseline", round_no, seconds, f"{n_rows / seconds:12,.0f} rows/s")
            seconds, ours = timed(lambda: get_historical_features(entities, refs, config=config))
            pit.record("lakebed", round_no, seconds, f"{n_rows / seconds:12,.0f} rows/s")
        assert ours is not None
        matched = len(ours.column("sparse__n_1d").drop_null())
        log(f"  {matched:,} of {n_rows:,} entity rows matched fresh features")

        # 4. Identity between the layouts, on the sample's entities.
        probe = entity_rows(min(n_rows, 200_000), sample, seed=9)
        probe = probe.filter(pc.less(probe.column("entity_id"), sample))
        on_dense = get_historical_features(probe, [f"sparse:v2:{n}" for n in features], config=config)
        on_segments = get_historical_features(probe, refs, config=config)
        identical = on_dense.equals(on_segments)
        log(
            f"  point-in-time rows identical between the layouts ({probe.num_rows:,} rows): {'yes' if identical else 'no'}"
        )
    rows_verdict = "PASS" if per_window <= ROWS_PER_WINDOW_TARGET else "FAIL"
    return (
        f"{materialize_line}\n{pit.summary(n_rows)}; identical rows: {'yes' if identical else 'no'}\n"
        f"features_rows_per_window: {per_window:.2f} rows per event per window size (target ≤ "
        f"{ROWS_PER_WINDOW_TARGET:.0f}) {rows_verdict}"
    )
