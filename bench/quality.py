"""Data quality benchmarks: what the rules cost in the write path, and the two engines side by side.

One generated orders CSV of 1,000,000 rows (``--quick``: 50,000), mostly valid with about 0.1% of rows
breaking one rule each (a null customer, a repeated order id, a quantity, price or time out of bounds,
an unknown currency or status, a malformed SKU, an order value over the SQL limit).

``quality_ingest``: ``ingest_files(csv, table=..., contract=...)`` alternately with a contract declaring
only the column types (no checks run) and with the full rule set (every column rule kind, a SQL rule,
and the ``row_count``, ``unique_keys`` and ``freshness`` table rules). Each run is the day's file appended
to a table that already exists, as in a pipeline: a fresh lakebed home first ingests, untimed, an earlier
day's file (other order ids, with broken rows of its own), so the table, its quarantine table and the
results table exist; creating those two once costs about 75 ms, which a one-off first ingest pays. Each
alternating pair gives one ratio, time(rules) / time(types only) (lower is better); the median of at
least 5 pairs (fewer only with ``--quick``) is reported with ``bench.common.report`` and may be at most
1.15: the rules cost at most 15% of the write. The rules run must commit exactly the rows the types-only
run commits minus the quarantined ones, and quarantine exactly the rows generated to break a rule.

``quality_engines`` (informational, no target): the same rows as one Arrow table, checked by the Polars
engine (``RowChecker.check`` over the table's write-path-sized batches, plus the table rules) and by
the Great Expectations suite (``gx_engine.run_suite``: pandas conversion, DuckDB for the SQL rule, GX),
alternately; each pair's ratio is time(GX) / time(Polars), reported without a target. Both must count the
same failing rows per rule.
"""

from __future__ import annotations

import atexit
import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import BenchOptions, RoundTimes, fmt_size, lakebed_home, log, remove, report, timed

if TYPE_CHECKING:
    import pyarrow as pa

    from lakebed.schemas.contract import TableContract

ROWS = 1_000_000
VIOLATION_SHARE = 0.001
TARGET = 1.15
TABLE = "orders_quality_bench"
_BATCH_ROWS = 200_000
_WARMUP_LINES = 5_000
_EARLIER_ROWS = 20_000  # the earlier day's file each home starts from

_COLUMNS: list[dict[str, Any]] = [
    {"name": "order_id", "type": "int64"},
    {"name": "customer_id", "type": "int64"},
    {"name": "sku", "type": "string"},
    {"name": "quantity", "type": "int32"},
    {"name": "unit_price", "type": "decimal(10,2)"},
    {"name": "currency", "type": "string"},
    {"name": "status", "type": "string"},
    {"name": "ordered_at", "type": "timestamp"},
    {"name": "_source_file", "type": "string"},
]
_RULES: dict[str, dict[str, Any]] = {
    "order_id": {"nullable": False, "unique": True},
    "customer_id": {"nullable": False, "min": 1},
    "sku": {"nullable": False, "regex": r"^SKU-\d{5}$"},
    "quantity": {"min": 1, "max": 50},
    "unit_price": {"min": 0.01, "max": 10_000},
    "currency": {"allowed": ["EUR", "USD", "GBP"]},
    "status": {"allowed": ["placed", "paid", "shipped", "delivered", "returned"]},
    "ordered_at": {"nullable": False, "min": "2025-01-01T00:00:00Z", "max": "2026-01-01T00:00:00Z"},
}
# The kinds of broken rows, in turn: each breaks exactly one rule (a repeated id breaks it for two rows).
_BREAKS = (
    "null_customer",
    "repeated_id",
    "quantity",
    "price",
    "currency",
    "status",
    "sku",
    "ordered_at",
    "order_value",
)


def contracts() -> tuple[TableContract, TableContract]:
    """The types-only contract and the full-rules contract of the benchmark table."""
    from lakebed.schemas.contract import TableContract

    types_only = TableContract.model_validate({"name": TABLE, "keys": ["order_id"], "columns": _COLUMNS})
    full = TableContract.model_validate(
        {
            "name": TABLE,
            "keys": ["order_id"],
            "columns": [{**c, **_RULES.get(c["name"], {})} for c in _COLUMNS],
            "rules": [{"name": "order_value", "sql": "quantity * unit_price < 100000"}],
            "table_rules": {
                "row_count": {"min": 1},
                "unique_keys": {},
                "freshness": {"column": "ordered_at", "max_lag": "3650d"},
            },
        }
    )
    assert not types_only.has_rules() and full.has_rules()
    return types_only, full


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    path: Path
    rows: int
    size: int
    bad_rows: int  # rows that break a rule (both rows of a repeated id)


def _break(batch: pa.Table, start: int, rng: Any) -> tuple[pa.Table, int]:
    """``batch`` with about ``VIOLATION_SHARE`` of its rows broken, one rule each; how many rows fail."""
    import numpy as np
    import pyarrow as pa

    n = batch.num_rows
    picked = np.sort(rng.choice(n, max(1, round(n * VIOLATION_SHARE)), replace=False))
    columns = {name: batch.column(name).to_pylist() for name in batch.column_names}
    bad = 0
    for number, row in enumerate(picked.tolist()):
        kind = _BREAKS[(start + number) % len(_BREAKS)]
        if kind == "repeated_id":
            source = row - 1 if row > 0 and row - 1 not in picked else row + 1
            if source >= n or source in picked:
                continue
            columns["order_id"][row] = columns["order_id"][source]
            bad += 2
            continue
        bad += 1
        if kind == "null_customer":
            columns["customer_id"][row] = None
        elif kind == "quantity":
            columns["quantity"][row] = 0
        elif kind == "price":
            columns["unit_price"][row] = 12_345.67
        elif kind == "currency":
            columns["currency"][row] = "XXX"
        elif kind == "status":
            columns["status"][row] = "lost"
        elif kind == "sku":
            columns["sku"][row] = "sku-12"
        elif kind == "ordered_at":
            columns["ordered_at"][row] = dt.datetime(2024, 12, 31, tzinfo=dt.UTC)
        elif kind == "order_value":
            columns["quantity"][row], columns["unit_price"][row] = 50, 9_999.0
    return pa.table(columns, schema=batch.schema), bad


def generate_csv(path: Path, rows: int, *, first_id: int = 1) -> Generated:
    """The benchmark's orders CSV (``lakebed.samples.orders`` from order id ``first_id``, with broken rows
    mixed in)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from lakebed.samples import orders

    def write() -> int:
        rng = np.random.default_rng(2025)
        bad, done = 0, 0
        with pa.OSFile(str(path), "wb") as sink, pacsv.CSVWriter(sink, orders(1).schema) as writer:
            while done < rows:
                count = min(_BATCH_ROWS, rows - done)
                batch, broken = _break(orders(count, start_id=first_id + done), done, rng)
                writer.write_table(batch)
                bad += broken
                done += count
        return bad

    path.parent.mkdir(parents=True, exist_ok=True)
    seconds, bad = timed(write)
    size = path.stat().st_size
    log(
        f"  generated {path.name}: {rows:,} rows, {bad:,} breaking a rule, {fmt_size(size)} in {seconds:.1f} s"
    )
    return Generated(path, rows, size, bad)


def _head(source: Path, dest: Path, lines: int) -> Path:
    with source.open("rb") as src, dest.open("wb") as out:
        out.writelines(itertools.islice(src, lines))
    return dest


# --- (a) ingest with and without rules ---------------------------------------------------------------


def _ingest(csv: Path, earlier: Path, home: Path, contract: TableContract) -> tuple[float, int, int]:
    """Seconds to append ``csv`` under ``contract`` to a fresh home's table made from ``earlier``
    (untimed); the rows it committed and quarantined."""
    from lakebed.pipelines.ingest import ingest_files
    from lakebed.pipelines.quality import quarantine_rows

    with lakebed_home(home) as config:
        ingest_files(earlier, table=TABLE, contract=contract, config=config)
        before = quarantine_rows(TABLE, config=config).num_rows
        seconds, result = timed(lambda: ingest_files(csv, table=TABLE, contract=contract, config=config))
        quarantined = quarantine_rows(TABLE, config=config).num_rows - before  # outside the timing
    return seconds, result.rows, quarantined


def run_ingest(opts: BenchOptions, data: Generated) -> str:
    types_only, full = contracts()
    earlier = generate_csv(opts.workdir / "orders_quality_earlier.csv", _EARLIER_ROWS, first_id=data.rows + 1)
    warm = _head(data.path, opts.workdir / "quality_warmup.csv", _WARMUP_LINES)
    try:
        _ingest(warm, earlier.path, opts.workdir / "warmup_home", types_only)  # untimed: imports, first use
        _ingest(warm, earlier.path, opts.workdir / "warmup_home", full)
        return _rounds(opts, data, earlier.path, types_only, full)
    finally:
        remove(warm)
        remove(earlier.path)


def _rounds(
    opts: BenchOptions, data: Generated, earlier: Path, types_only: TableContract, full: TableContract
) -> str:
    times = RoundTimes("quality_ingest", "rows/s", "types-only contract", TARGET, opts.quick)
    quarantined = 0
    for round_no in range(1, opts.rounds + 1):
        seconds, plain_rows, _ = _ingest(data.path, earlier, opts.workdir / "types_home", types_only)
        times.record("baseline", round_no, seconds, f"types only: {plain_rows:,} rows committed")
        seconds, rows, quarantined = _ingest(data.path, earlier, opts.workdir / "rules_home", full)
        times.record(
            "lakebed", round_no, seconds, f"all rules: {rows:,} rows committed, {quarantined:,} quarantined"
        )
        if plain_rows != data.rows:
            raise RuntimeError(f"types-only ingest committed {plain_rows:,} of {data.rows:,} rows")
        if rows + quarantined != plain_rows or quarantined != data.bad_rows:
            raise RuntimeError(
                f"rules ingest committed {rows:,} and quarantined {quarantined:,} rows; expected "
                f"{plain_rows - data.bad_rows:,} and {data.bad_rows:,}"
            )
    ratios = [r / p for p, r in zip(times.seconds["baseline"], times.seconds["lakebed"], strict=True)]
    best_plain, best_rules = min(times.seconds["baseline"]), min(times.seconds["lakebed"])
    return report(
        "quality_ingest",
        ratios,
        target=TARGET,
        better="lower",
        unit="ratio",
        detail=(
            f"time(all rules) / time(types only) per pair; best {best_rules:.2f} s vs {best_plain:.2f} s for "
            f"{data.rows:,} rows, {quarantined:,} quarantined"
        ),
        quick=opts.quick,
    )


# --- (b) Polars engine vs Great Expectations -------------------------------------------------------------


def _read_table(csv: Path, contract: TableContract) -> pa.Table:
    import pyarrow.csv as pacsv

    types = {k: v for k, v in contract.column_types().items() if not k.startswith("_")}
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=False)
    # One chunk per column, so the Polars engine gets write-path-sized batches (the reader's are small).
    return pacsv.read_csv(str(csv), convert_options=convert).combine_chunks()


def _polars_check(contract: TableContract, table: pa.Table, now: dt.datetime) -> dict[str, int]:
    """Failing rows per rule by the Polars engine, as the write path runs it (batch by batch)."""
    from lakebed.config import LakebedConfig
    from lakebed.quality.polars_engine import RowChecker, TableRuleState
    from lakebed.quality.rules import compile_rules

    rules = compile_rules(contract)
    checker, state = RowChecker(rules, contract), TableRuleState(rules)
    failed: dict[str, int] = {r.name: 0 for r in rules.row_rules}
    batch_rows = LakebedConfig.model_fields["batch_rows"].default
    for batch in table.to_batches(max_chunksize=batch_rows):
        outcome = checker.check(batch)
        for name, count in outcome.failed.items():
            failed[name] = failed.get(name, 0) + count
        state.update(batch)  # all rows, as GX judges them (the write path passes only the valid ones)
    for result in state.evaluate(existing_rows=0, now=now):
        failed[result.rule.name] = result.failed_rows
    return failed


def _gx_check(contract: TableContract, table: pa.Table, now: dt.datetime) -> dict[str, int]:
    from lakebed.quality.gx_engine import run_suite

    return {r.rule.name: r.failed_rows for r in run_suite(contract, table, now=now)}


def run_engines(opts: BenchOptions, data: Generated) -> str:
    _, full = contracts()
    table = _read_table(data.path, full)
    now = dt.datetime.now(dt.UTC)
    _gx_check(full, table.slice(0, _WARMUP_LINES), now)  # untimed: importing GX takes seconds
    _polars_check(full, table.slice(0, _WARMUP_LINES), now)
    times = RoundTimes("quality_engines", "rows/s", "polars", None, opts.quick)
    counts: dict[str, dict[str, int]] = {}
    for round_no in range(1, opts.rounds + 1):
        seconds, counts["polars"] = timed(lambda: _polars_check(full, table, now))
        times.record(
            "baseline", round_no, seconds, f"polars: {sum(counts['polars'].values()):,} rule failures"
        )
        seconds, counts["gx"] = timed(lambda: _gx_check(full, table, now))
        times.record("lakebed", round_no, seconds, f"gx: {sum(counts['gx'].values()):,} rule failures")
    if counts["gx"] != counts["polars"]:
        raise RuntimeError(f"engines disagree: polars {counts['polars']}, gx {counts['gx']}")
    ratios = [g / p for p, g in zip(times.seconds["baseline"], times.seconds["lakebed"], strict=True)]
    polars, gx = min(times.seconds["baseline"]), min(times.seconds["lakebed"])
    return report(
        "quality_engines",
        ratios,
        target=None,
        better="lower",
        detail=(
            f"time(great expectations) / time(polars) per pair; best {gx:.2f} s vs {polars:.2f} s on "
            f"{table.num_rows:,} rows, {len(counts['gx'])} rules"
        ),
        quick=opts.quick,
    )


# --- the targets: one CSV shared by both -----------------------------------------------------------------

_generated: dict[Path, Generated] = {}


def _data(opts: BenchOptions) -> Generated:
    """The benchmark CSV of this run, generated on first use (removed when the process exits)."""
    path = opts.workdir / "orders_quality.csv"
    if path not in _generated or not path.exists():
        _generated[path] = generate_csv(path, opts.scaled(ROWS))
        atexit.register(remove, path)
    return _generated[path]


def run_ingest_target(opts: BenchOptions) -> str:
    log(f"quality_ingest{opts.label}: ingest with all quality rules vs with column types only")
    return run_ingest(opts, _data(opts))


def run_engines_target(opts: BenchOptions) -> str:
    log(f"quality_engines{opts.label}: Polars engine vs Great Expectations suite on the same rows")
    return run_engines(opts, _data(opts))
