"""Model benchmarks: a SQL model against the same SQL in bare DuckDB, and an increment against a rebuild.

One project in a fresh lakebed home: a files source ingesting 10,000,000 generated order rows (``--quick``:
500,000) from Parquet, and two models over that table.

``models``: the ``table`` model ``revenue_by_day`` (GROUP BY day and category: revenue, lines, customers)
built by ``lakebed run`` (``run_model``: inputs pinned, DuckDB's ``read_parquet`` over the local input's
files, the write path with lineage), alternately with the baseline: the same SELECT in bare DuckDB over ``read_parquet`` of the very
files of the input table's version, then ``write_deltalake`` of its result into a fresh table. Each pair's
ratio is time(baseline) / time(lakebed) (higher is better); target: median ≥ 0.8.

``models_peak_rss``: the ``orders_paid`` model rebuilt in a child process (``bench._model_child``) over
1,000,000 and over 10,000,000 input rows (``--quick``: 50,000 and 500,000), alternately, each home
ingested beforehand by this process; the child's peak RSS (``VmHWM``) is the build's alone. Each pair's
ratio is peak(10×) / peak(1×) (lower is better); target: median ≤ 1.5, memory roughly flat while the
input grows 10×.

``models_incremental``: the ``incremental`` model ``orders_paid`` (a filter and derived columns, one output
row per paid input row) rebuilt from all input rows (``full_refresh``), alternately with an increment after
1% new input rows were ingested (untimed). Each pair's ratio is time(increment) / time(rebuild) (lower is
better); target: median ≤ 0.05. Each increment must add exactly the paid rows of the new file.
"""

from __future__ import annotations

import atexit
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import (
    BenchOptions,
    RoundTimes,
    fresh_dir,
    isolated_config,
    lakebed_home,
    log,
    remove,
    report,
    timed,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from lakebed.config import LakebedConfig
    from lakebed.schemas.project import Project

ROWS = 10_000_000
FILES = 10
TARGET = 0.8
INCREMENT_SHARE = 0.01
INCREMENT_TARGET = 0.05
RSS_ROWS = 1_000_000
RSS_TARGET = 1.5
REVENUE_SQL = """SELECT CAST(ordered_at AS DATE) AS day, category, sum(quantity * unit_price) AS revenue,
  count(*) AS lines, count(DISTINCT customer_id) AS customers
FROM {source}
GROUP BY ALL"""
PAID_SQL = """/* lakebed
materialized: incremental
*/
SELECT order_id, customer_id, category, quantity * unit_price AS amount, CAST(ordered_at AS DATE) AS day
FROM bench_orders
WHERE status = 'paid'"""


def _orders(first: int, count: int) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(first)
    start = np.datetime64("2025-01-01T00:00:00", "us")
    return pa.table(
        {
            "order_id": pa.array(np.arange(first, first + count, dtype=np.int64)),
            "customer_id": pa.array(rng.integers(1, 200_000, count)),
            "category": pa.array(
                np.array(["tea", "coffee", "cups", "kettles", "beans"])[rng.integers(0, 5, count)]
            ),
            "quantity": pa.array(rng.integers(1, 10, count).astype(np.int32)),
            "unit_price": pa.array(rng.uniform(1, 200, count).round(2)),
            "status": pa.array(np.array(["paid", "open", "returned"])[rng.integers(0, 3, count)]),
            "ordered_at": pa.array(
                start + rng.integers(0, 365 * 86_400_000_000, count).astype("timedelta64[us]")
            ),
        }
    )


def _project(root: Path, rows: int) -> Path:
    import pyarrow.parquet as pq

    fresh_dir(root)
    for folder in ("sources", "models", "data/orders"):
        (root / folder).mkdir(parents=True)
    (root / "lakebed.toml").write_text('[project]\nname = "models_bench"\n')
    (root / "sources" / "orders.yaml").write_text(
        "sources:\n  - {table: bench_orders, kind: files, path: data/orders, format: parquet}\n"
    )
    (root / "models" / "revenue_by_day.sql").write_text(REVENUE_SQL.format(source="bench_orders"))
    (root / "models" / "orders_paid.sql").write_text(PAID_SQL)
    per_file = rows // FILES
    for index in range(FILES):
        pq.write_table(
            _orders(1 + index * per_file, per_file), root / "data" / "orders" / f"part-{index:03d}.parquet"
        )
    return root


def _ingest(project: Project, config: LakebedConfig) -> None:
    from lakebed.pipelines.sources import ingest_source
    from lakebed.schemas.project import FilesSource

    for source in project.sources:
        assert isinstance(source, FilesSource)
        ingest_source(project, source, config=config)


def _baseline(config: LakebedConfig, target: Path) -> int:
    """The model's SELECT in bare DuckDB over the input version's files, written with write_deltalake."""
    import duckdb
    from deltalake import DeltaTable, write_deltalake

    from lakebed.pipelines.catalog import Catalog

    files = DeltaTable(Catalog(config).get("bench_orders").uri).file_uris()
    connection = duckdb.connect()
    try:
        listed = ", ".join(f"'{f}'" for f in files)
        reader = connection.sql(REVENUE_SQL.format(source=f"read_parquet([{listed}])")).to_arrow_reader(
            131_072
        )
        shutil.rmtree(target, ignore_errors=True)
        write_deltalake(str(target), reader)
    finally:
        connection.close()
    return DeltaTable(str(target)).version()


def run(opts: BenchOptions) -> str:
    from lakebed.pipelines.models.run import run_model
    from lakebed.schemas.project import load_project

    rows = opts.scaled(ROWS)
    log(
        f"models{opts.label}: a SQL model over {rows:,} rows vs the same SQL in bare DuckDB + write_deltalake"
    )
    root = _project(opts.workdir / "models_project", rows)
    atexit.register(remove, root)
    with lakebed_home(opts.workdir / "models_home") as config:
        project = load_project(root)
        seconds, _ = timed(lambda: _ingest(project, config))
        log(f"  ingested {rows:,} rows in {seconds:.1f} s (untimed)")
        target = opts.workdir / "models_baseline_table"
        _baseline(config, target)  # untimed warm-up of both paths
        run_model(project, "revenue_by_day", full_refresh=True, config=config)
        times = RoundTimes("models", "rows/s", "bare DuckDB + write_deltalake", TARGET, opts.quick)
        for round_no in range(1, opts.rounds + 1):
            seconds, _ = timed(lambda: _baseline(config, target))
            times.record("baseline", round_no, seconds, "bare duckdb + write_deltalake")
            seconds, built = timed(
                lambda: run_model(project, "revenue_by_day", full_refresh=True, config=config)
            )
            times.record(
                "lakebed", round_no, seconds, f"lakebed run: {built.rows:,} rows, version {built.version}"
            )
        remove(target)
        lines = [times.summary(rows), _increments(opts, project, config, rows)]
    return "\n".join([*lines, _peak_rss(opts)])


def _increments(opts: BenchOptions, project: Project, config: LakebedConfig, rows: int) -> str:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from lakebed.pipelines.models.run import run_model

    log(f"models_incremental{opts.label}: an increment over {INCREMENT_SHARE:.0%} new rows vs a full rebuild")
    run_model(project, "orders_paid", full_refresh=True, config=config)  # untimed warm-up
    step = int(rows * INCREMENT_SHARE)
    ratios = []
    next_id = rows + 1
    for round_no in range(1, opts.rounds + 1):
        rebuild, _ = timed(lambda: run_model(project, "orders_paid", full_refresh=True, config=config))
        new = _orders(next_id, step)
        next_id += step
        pq.write_table(new, project.root / "data" / "orders" / f"new-{round_no:03d}.parquet")
        _ingest(project, config)
        started = time.perf_counter()
        increment = run_model(project, "orders_paid", config=config)
        seconds = time.perf_counter() - started
        paid = pc.sum(pc.equal(new.column("status"), "paid")).as_py()
        if increment.status != "incremental" or increment.rows != paid:
            raise RuntimeError(
                f"increment {increment.status} with {increment.rows:,} rows, expected {paid:,}"
            )
        log(
            f"  round {round_no}: rebuild {rebuild:6.2f} s, increment {seconds:6.3f} s ({increment.rows:,} rows)"
        )
        ratios.append(seconds / rebuild)
    return report(
        "models_incremental",
        ratios,
        target=INCREMENT_TARGET,
        better="lower",
        detail=f"time(increment of {INCREMENT_SHARE:.0%} new rows) / time(full rebuild) per pair",
        quick=opts.quick,
    )


def _prepared(rows: int, workdir: Path) -> Path:
    """A project of ``rows`` input rows ingested into a home, both under ``workdir``."""
    from lakebed.schemas.project import load_project

    project = load_project(_project(workdir / "project", rows))
    _ingest(project, isolated_config((workdir / "home").resolve()))
    return workdir


def _child(workdir: Path) -> dict[str, int]:
    import json
    import subprocess
    import sys

    from bench.common import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-m", "bench._model_child", str(workdir)],
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"model child in {workdir} exited with status {done.returncode}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rows": int(report["rows"]), "hwm_kib": int(report["vm_hwm_kib"])}


def _peak_rss(opts: BenchOptions) -> str:
    small = opts.scaled(RSS_ROWS)
    log(
        f"models_peak_rss{opts.label}: peak RSS of a model build over {small:,} and {10 * small:,} input rows"
    )
    one_dir = _prepared(small, fresh_dir(opts.workdir / "models_rss_1x"))
    ten_dir = _prepared(10 * small, fresh_dir(opts.workdir / "models_rss_10x"))
    ratios, peaks = [], []
    try:
        for round_no in range(1, opts.rounds + 1):
            one, ten = _child(one_dir), _child(ten_dir)
            log(
                f"  round {round_no}: {one['hwm_kib'] / 1024:6.0f} MiB for {one['rows']:,} output rows, "
                f"{ten['hwm_kib'] / 1024:6.0f} MiB for {ten['rows']:,}"
            )
            ratios.append(ten["hwm_kib"] / one["hwm_kib"])
            peaks.append(ten["hwm_kib"] / 1024)
    finally:
        remove(one_dir)
        remove(ten_dir)
    return report(
        "models_peak_rss",
        ratios,
        target=RSS_TARGET,
        better="lower",
        detail=f"peak RSS of the build over 10× the input rows / over 1× per pair (largest {max(peaks):.0f} MiB)",
        quick=opts.quick,
    )
