"""Online feature reads: lakebed's ``FeatureStore.get_online_features`` against bare sqlite3 lookups.

The online table of view ``online_bench:v1`` (ttl 1 day; four features: three float64, one string) holds
100,000 entities (``--quick``: 5,000), written through lakebed's SQLite online store (WAL) into a fresh
lakebed home, every row fresh (feature_ts within the last hour).

Single-entity gets: 5,000 random entities (``--quick``: 1,000), each read once per round in two forms:
``store.get_online_feature_dict(refs, {"entity_id": k})`` (a plain dict: the serving path) and
``store.get_online_features(refs, {"entity_id": k})`` (a one-row Arrow table), the view resolution cached
by the store after the first call; the baseline is a bare ``sqlite3`` primary-key lookup of the same table
in the same file (``SELECT feature_ts, f... FROM fv_online_bench_v1 WHERE entity_id = ?`` on one open
connection, ``fetchone()``). Each round is one pair: p50 and p99 latency of every path over the same
keys; the ratio (lakebed / baseline, lower is better) is the median over the pairs with its min–max.
Targets: the dict path's p50 and p99 ≤ 3 × the baseline's (the Arrow path's ratios are reported beside it
without a target: building any Arrow table costs a few baseline lookups by itself). Batch: per round, 20
calls of 1,000 random entities (duplicates possible), lakebed with a one-column Arrow table against one
bare ``SELECT ... WHERE entity_id IN (...)`` put back in input order in Python; p50 ratio, no target. The rows of all paths are compared ("identical rows: yes/no").
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.common import BenchOptions, lakebed_home, log, report
from bench.pit_retrieval import register_view

BASELINE_NAME = "bare sqlite3 PK lookup"
ENTITIES = 100_000
LOOKUPS = 5_000
QUICK_LOOKUPS = 1_000
BATCH = 1_000
BATCH_CALLS = 20
TARGET = 3.0
VIEW, VERSION = "online_bench", 1
TABLE = f"fv_{VIEW}_v{VERSION}"
FEATURES = ("spend_1h", "spend_1d", "avg_order_1d", "last_event_type")
TTL = dt.timedelta(days=1)


def online_rows(n: int, now_us: int, seed: int = 3) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    spend = rng.gamma(2.0, 30.0, n).round(2)
    return pa.table(
        {
            "entity_id": np.arange(n, dtype=np.int64),
            "feature_ts": pa.array(now_us - rng.integers(0, 3_600_000_000, n), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "spend_1h": spend,
            "spend_1d": (spend * rng.uniform(1, 5, n)).round(2),
            "avg_order_1d": rng.gamma(2.0, 15.0, n).round(2),
            "last_event_type": pa.array(rng.choice(["view", "add_to_cart", "purchase"], n)),
        }
    )


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    import numpy as np

    values = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _latencies(call: Callable[[int], Any], keys: list[int]) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for key in keys:
        start = clock()
        call(key)
        samples.append(clock() - start)
    return samples


def run(opts: BenchOptions) -> str:
    import gc
    import sqlite3

    import numpy as np
    import pyarrow as pa

    from lakebed.feature_store import FeatureStore
    from lakebed.pipelines.features.online import default_online_store

    n_entities = opts.scaled(ENTITIES)
    n_lookups = QUICK_LOOKUPS if opts.quick else LOOKUPS
    log(
        f"online_lookup{opts.label}: {n_entities:,} entities, {n_lookups:,} single gets, lakebed vs {BASELINE_NAME}"
    )
    refs = [f"{VIEW}:v{VERSION}:{name}" for name in FEATURES]
    columns = ", ".join(["feature_ts", *FEATURES])
    rng = np.random.default_rng(17)
    with lakebed_home(opts.workdir / "online_home") as config:
        register_view(VIEW, VERSION, entities=["entity_id"], features=FEATURES, ttl=TTL, config=config)
        now_us = time.time_ns() // 1000
        store = default_online_store(config)
        started = time.perf_counter()
        store.write(TABLE, online_rows(n_entities, now_us), ["entity_id"])
        log(f"  wrote {n_entities:,} online rows in {time.perf_counter() - started:.1f} s ({store.path})")
        features = FeatureStore(config, online_store=store)
        bare = sqlite3.connect(store.path, isolation_level=None)
        bare.execute("PRAGMA journal_mode=WAL")
        single_sql = f"SELECT {columns} FROM {TABLE} WHERE entity_id = ?"

        def lakebed_get(key: int) -> Any:
            return features.get_online_features(refs, {"entity_id": key})

        def lakebed_dict(key: int) -> Any:
            return features.get_online_feature_dict(refs, {"entity_id": key})

        def bare_get(key: int) -> Any:
            return bare.execute(single_sql, (key,)).fetchone()

        keys = rng.integers(0, n_entities, n_lookups).tolist()
        for key in keys[:200]:  # warm-up: imports, view resolution, SQLite page cache
            lakebed_get(key)
            lakebed_dict(key)
            bare_get(key)
        # Per round (one pair): p50 and p99 of each path.
        rounds: list[dict[str, tuple[float, float]]] = []
        gc.disable()
        try:
            for _ in range(opts.rounds):
                rounds.append(
                    {
                        "bare": _percentiles(_latencies(bare_get, keys)),
                        "dict": _percentiles(_latencies(lakebed_dict, keys)),
                        "arrow": _percentiles(_latencies(lakebed_get, keys)),
                    }
                )
        finally:
            gc.enable()

        # Batches of 1,000 entities, p50 per round of BATCH_CALLS calls.
        batches = [rng.integers(0, n_entities, BATCH).tolist() for _ in range(BATCH_CALLS)]

        def lakebed_batch(index: int) -> Any:
            return features.get_online_features(refs, pa.table({"entity_id": batches[index]}))

        def bare_batch(index: int) -> list[Any]:
            wanted = batches[index]
            marks = ", ".join("?" for _ in set(wanted))
            found = {
                row[0]: row[1:]
                for row in bare.execute(
                    f"SELECT entity_id, {columns} FROM {TABLE} WHERE entity_id IN ({marks})",
                    list(set(wanted)),
                )
            }
            return [found.get(key) for key in wanted]

        lakebed_batch(0)
        bare_batch(0)
        calls = list(range(BATCH_CALLS))
        batch_pairs = [
            (
                _percentiles(_latencies(bare_batch, calls))[0],
                _percentiles(_latencies(lakebed_batch, calls))[0],
            )
            for _ in range(opts.rounds)
        ]

        # Same rows? (the ttl cannot null anything: every row is fresh)
        sample = batches[0]
        ours_rows = lakebed_batch(0).drop_columns(["entity_id"]).to_pylist()
        expected = bare_batch(0)
        identical = all(
            list(row.values()) == list(base[1:]) for row, base in zip(ours_rows, expected, strict=True)
        ) and all(
            list(lakebed_get(k).drop_columns(["entity_id"]).to_pylist()[0].values()) == list(bare_get(k)[1:])
            and list(lakebed_dict(k).values())[1:] == list(bare_get(k)[1:])
            and lakebed_dict(k) == lakebed_get(k).to_pylist()[0]
            for k in sample[:100]
        )
        bare.close()
        store.close()

    def ratios(path: str, pct: int) -> list[float]:
        return [r[path][pct] / r["bare"][pct] if r["bare"][pct] else float("nan") for r in rounds]

    def median_us(path: str, pct: int) -> float:
        return statistics.median(r[path][pct] for r in rounds)

    for path in ("dict", "arrow", "bare"):
        log(
            f"  single get  {path:5}: median p50 {median_us(path, 0):8.1f} µs  p99 {median_us(path, 1):8.1f} µs"
        )
    batch_ours = statistics.median(o for _, o in batch_pairs) / 1000.0
    batch_theirs = statistics.median(b for b, _ in batch_pairs) / 1000.0
    log(f"  batch of {BATCH:,}: lakebed p50 {batch_ours:.2f} ms  bare p50 {batch_theirs:.2f} ms")
    log(f"  identical rows: {'yes' if identical else 'no'}")
    same = f"identical rows: {'yes' if identical else 'no'}"
    lines = [
        report(
            f"online_lookup_{path}_{name}",
            ratios(path, pct),
            target=TARGET if path == "dict" else None,
            better="lower",
            unit="×",
            detail=f"median {median_us(path, pct):.1f} µs vs {BASELINE_NAME} {median_us('bare', pct):.1f} µs; {same}",
            quick=opts.quick,
        )
        for path in ("dict", "arrow")
        for pct, name in ((0, "p50"), (1, "p99"))
    ]
    lines.append(
        report(
            "online_lookup_batch_p50",
            [o / b if b else float("nan") for b, o in batch_pairs],
            target=None,
            better="lower",
            unit="×",
            detail=f"batch of {BATCH:,}: median {batch_ours:.2f} vs {batch_theirs:.2f} ms",
            quick=opts.quick,
        )
    )
    return "\n".join(lines)
