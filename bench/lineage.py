"""Lineage benchmarks: what recording OpenLineage costs in the write path, and how fast the store answers.

``lineage_batch``: one generated orders CSV of 1,000,000 rows (``--quick``: 50,000) ingested by
``ingest_files`` alternately with lineage off (``lineage_enabled=False``) and on (the default: START and
COMPLETE events appended to ``HOME/lineage/events.jsonl``), each in a fresh lakebed home (at least 7
rounds each, 3 with ``--quick``). The ratio of each alternating pair is on seconds / off seconds; target:
median ≤ 1.03. Both must commit every row; the on run must have written events and the off run none.

``lineage_stream``: 200,000 small JSON messages (``--quick``: 10,000) on the embedded Kafka broker (the
one ``bench.stream_ingest`` starts), ingested by ``ingest_stream(..., until_caught_up=True)`` in 40
micro-batches (``max_records`` 5,000; ``--quick``: 250) alternately with lineage off and on. Each
micro-batch is a child run of the worker's run. At least 5 rounds each (3 with ``--quick``). Same ratio
and target: ≤ 1.03. The on run must have recorded one completed child run per committed micro-batch.

In both, the wall time spent inside ``LineageRun.emit`` (building each event with ``run_event`` and
appending it to the event file) is clocked in every run and printed beside the on run's time: a figure
for where the overhead goes that does not drown in the round-to-round noise of a small machine. So is
the process's CPU time (``time.process_time``, all threads); the verdict is on wall-clock time.

``lineage_queries``: lineage stores of 100,000 and 1,000,000 events (``--quick``: 10,000 and 50,000) of
a synthetic pipeline: 50 tables over 7 levels (10 raw tables ingested from files, each further table
reading two tables of the level below at their latest versions), one run per table per round (START and
COMPLETE, about 0.5% of the transforms FAIL), a Dagster run as the parent of each round. The events are
built with ``lakebed.lineage.events.run_event`` once per table and kind (the real facets and shapes) and
copied with fresh run ids, versions and times. They are appended to ``HOME/lineage/events.jsonl`` and
loaded by one ``LineageStore.sync()`` (its time and events/s are logged). A fresh store's first call
loads the Delta table into DuckDB and builds the lineage index (``refresh``; its time and the process's
peak RSS are in the detail). Then 5 rounds of 40 calls each (``--quick``: 10), interleaved:
``store.producer(table, version)`` (any table and version), ``store.upstream(table, version, depth=5)``
and ``store.downstream(table, version, depth=5)`` (a table of the two deepest levels, so an upstream walk
spans five runs back), and a few of the bare DuckDB scan of the same Delta table (``count(*) WHERE run_id
= ?``) for scale. Reported per size: the p50 and the p99 of upstream and of downstream in each round
(``lineage_queries_p50_100k``, ``lineage_downstream_p99_1m``, ...), in ms; targets p50 ≤ 30 ms, p99 ≤ 100 ms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import json
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bench.common import BenchOptions, RoundTimes, fmt_size, lakebed_home, log, remove, report, timed

if TYPE_CHECKING:
    from lakebed.config import LakebedConfig
    from lakebed.lineage.events import DatasetRef
    from lakebed.lineage.store import LineageStore

T = TypeVar("T")

OVERHEAD_TARGET = 1.03
ROUNDS = {"lineage_batch": 7, "lineage_stream": 5}  # at least, in a full run
ROUNDS_QUICK = 3

BATCH_ROWS = 1_000_000
BATCH_TABLE = "orders_lineage_bench"
_CSV_BATCH_ROWS = 200_000
_WARMUP_ROWS = 5_000

STREAM_MESSAGES = 200_000
STREAM_MESSAGES_QUICK = 10_000
MICRO_BATCHES = 40  # max_records = messages / MICRO_BATCHES
STREAM_TABLE = "events_lineage_bench"
_WARMUP_MESSAGES = 2_000

STORE_EVENTS = (100_000, 1_000_000)
STORE_EVENTS_QUICK = (10_000, 50_000)
QUERY_CALLS = 200  # per store size, in QUERY_ROUNDS rounds
QUERY_CALLS_QUICK = 50
QUERY_ROUNDS = 5
QUERY_P50_TARGET_MS = 30.0
QUERY_P99_TARGET_MS = 100.0
LEVELS = (10, 10, 10, 8, 6, 4, 2)  # tables per level: 50 in all, 7 levels deep
FAIL_SHARE = 0.005
UPSTREAM_DEPTH = 5


def _rounds(opts: BenchOptions, name: str) -> int:
    return max(opts.rounds, ROUNDS_QUICK if opts.quick else ROUNDS[name])


def _lineage(config: LakebedConfig, enabled: bool) -> LakebedConfig:
    return config.model_copy(update={"lineage_enabled": enabled})


def _events_file(config: LakebedConfig) -> Path:
    from lakebed.lineage.emit import events_path

    return events_path(config)


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _order(round_no: int) -> tuple[bool, bool]:
    """Which side goes first in a round: off first in odd rounds, on first in even ones."""
    return (False, True) if round_no % 2 else (True, False)


@dataclass(frozen=True)
class _Run:
    """One timed ingest: its seconds, rows committed, events written and time spent emitting them."""

    seconds: float
    rows: int
    events: int
    emit_seconds: float  # wall time inside LineageRun.emit (building and appending the events)
    cpu_seconds: float  # CPU time of this process (all its threads) during the run
    micro_batches: int = 0
    children: int = 0  # completed child runs of the worker's run


@contextlib.contextmanager
def _emit_clock() -> Iterator[list[float]]:
    """Sum the wall time of ``LineageRun.emit`` calls while inside (the cost of lineage that can be
    pinned on it; with lineage off each call returns at once). Wrapped in both kinds of run alike."""
    from lakebed.lineage.runs import LineageRun

    original = LineageRun.emit
    spent = [0.0]

    def emit(self: LineageRun, event_type: str, error: BaseException | None = None) -> None:
        start = time.perf_counter()
        try:
            original(self, event_type, error)
        finally:
            spent[0] += time.perf_counter() - start

    LineageRun.emit = emit
    try:
        yield spent
    finally:
        LineageRun.emit = original


def _measured(work: Callable[[], T]) -> tuple[float, float, float, T]:
    """Wall seconds of ``work()``, of them spent in ``LineageRun.emit``, the process's CPU seconds (all
    threads) meanwhile, and the result."""
    with _emit_clock() as spent:
        cpu = time.process_time()
        seconds, result = timed(work)
        cpu = time.process_time() - cpu
    return seconds, spent[0], cpu, result


def _check_events(run: _Run, enabled: bool) -> None:
    if enabled and run.events == 0:
        raise RuntimeError("lineage on: no events in HOME/lineage/events.jsonl")
    if not enabled and run.events:
        raise RuntimeError(f"lineage off: {run.events} events written anyway")


def _round_detail(run: _Run, enabled: bool, rate: str) -> str:
    emitted = f", emit {_ms(run.emit_seconds)} ({run.emit_seconds / run.seconds:.1%})" if enabled else ""
    return (
        f"lineage {'on ' if enabled else 'off'}: {rate}  CPU {run.cpu_seconds:5.2f} s  {run.rows:,} rows, "
        f"{run.events} events{emitted}"
    )


def _overhead_line(name: str, times: RoundTimes, runs: dict[str, list[_Run]], what: str, quick: bool) -> str:
    """The :func:`report` line of the per-pair ratios on seconds / off seconds (wall clock, the verdict),
    with the best of each side, what the best on run spent emitting and the best CPU times of each side as
    a cross-check less sensitive to other load on the machine."""
    ratios = [
        on / off if off > 0 else float("nan")
        for off, on in zip(times.seconds["baseline"], times.seconds["lakebed"], strict=True)
    ]
    off, on = min(times.seconds["baseline"]), min(times.seconds["lakebed"])
    best = min(runs["lakebed"], key=lambda r: r.seconds)
    cpu_off = min(r.cpu_seconds for r in runs["baseline"])
    cpu_on = min(r.cpu_seconds for r in runs["lakebed"])
    detail = (
        f"lineage on vs off for {what}: best {on:.2f} s vs {off:.2f} s ({best.events} events, emit "
        f"{_ms(best.emit_seconds)} = {best.emit_seconds / on:.1%} of the best on run; best CPU on/off "
        f"{cpu_on / cpu_off:.3f}×)"
    )
    return report(name, ratios, target=OVERHEAD_TARGET, better="lower", detail=detail, quick=quick)


# --- lineage_batch -----------------------------------------------------------------------------------


def _write_orders(path: Path, rows: int) -> int:
    """``rows`` order lines (``lakebed.samples.orders``) as CSV at ``path``; returns its size."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from lakebed.samples import orders

    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pacsv.CSVWriter(sink, orders(1).schema) as writer:
        done = 0
        while done < rows:
            count = min(_CSV_BATCH_ROWS, rows - done)
            writer.write_table(orders(count, start_id=done + 1))
            done += count
    return path.stat().st_size


def _ingest(csv: Path, home: Path, *, enabled: bool) -> _Run:
    """Ingest ``csv`` into a fresh home with lineage ``enabled``."""
    from lakebed.pipelines.ingest import ingest_files

    with lakebed_home(home) as base:
        config = _lineage(base, enabled)
        seconds, emitting, cpu, result = _measured(
            lambda: ingest_files(csv, table=BATCH_TABLE, config=config)
        )
        events = _count_lines(_events_file(config))  # outside the timing
    return _Run(seconds, result.rows, events, emitting, cpu)


def run_batch(opts: BenchOptions) -> str:
    rows = opts.scaled(BATCH_ROWS)
    log(f"lineage_batch{opts.label}: CSV ingest of {rows:,} rows with lineage on vs off")
    csv = opts.workdir / "orders_lineage.csv"
    warm = opts.workdir / "orders_lineage_warmup.csv"
    times = RoundTimes("lineage_batch", "rows/s", "lineage off", OVERHEAD_TARGET, opts.quick)
    runs: dict[str, list[_Run]] = {"baseline": [], "lakebed": []}
    try:
        seconds, size = timed(lambda: _write_orders(csv, rows))
        log(f"  generated {csv.name}: {rows:,} rows, {fmt_size(size)} in {seconds:.1f} s")
        _write_orders(warm, _WARMUP_ROWS)
        for enabled in (False, True):  # untimed: imports and first-use setup of both paths
            _ingest(warm, opts.workdir / "lineage_warmup_home", enabled=enabled)
        for round_no in range(1, _rounds(opts, "lineage_batch") + 1):
            for enabled in _order(round_no):
                which = "lakebed" if enabled else "baseline"
                run = _ingest(csv, opts.workdir / f"lineage_{which}_home", enabled=enabled)
                rate = f"{rows / run.seconds:9,.0f} rows/s"
                times.record(which, round_no, run.seconds, _round_detail(run, enabled, rate))
                if run.rows != rows:
                    raise RuntimeError(
                        f"lineage {'on' if enabled else 'off'}: committed {run.rows:,} of {rows:,} rows"
                    )
                _check_events(run, enabled)
                runs[which].append(run)
    finally:
        remove(csv)
        remove(warm)
    return _overhead_line("lineage_batch", times, runs, f"{rows:,} rows", opts.quick)


# --- lineage_stream ----------------------------------------------------------------------------------


def _child_runs(path: Path, parent_run_id: str) -> tuple[int, int]:
    """Events in the file, and completed runs in it whose parent is ``parent_run_id``."""
    if not path.exists():
        return 0, 0
    events = children = 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            events += 1
            event = json.loads(line)
            parent = ((event["run"].get("facets") or {}).get("parent") or {}).get("run") or {}
            if event.get("eventType") == "COMPLETE" and parent.get("runId") == parent_run_id:
                children += 1
    return events, children


def _stream(bootstrap: str, topic: str, home: Path, *, enabled: bool, max_records: int) -> _Run:
    from lakebed.pipelines.stream.ingest import ingest_stream

    with lakebed_home(home) as base:
        config = _lineage(base, enabled)
        seconds, emitting, cpu, result = _measured(
            lambda: ingest_stream(
                topic,
                STREAM_TABLE,
                bootstrap=bootstrap,
                until_caught_up=True,
                max_records=max_records,
                config=config,
            )
        )
        if result.dead_letters:
            raise RuntimeError(f"{result.dead_letters} dead letters in a clean topic")
        events, children = _child_runs(_events_file(config), result.run_id)  # outside the timing
    return _Run(seconds, result.records, events, emitting, cpu, result.rounds, children)


def run_stream(opts: BenchOptions) -> str:
    from bench.stream_ingest import _KAFKA

    messages = STREAM_MESSAGES_QUICK if opts.quick else STREAM_MESSAGES
    max_records = max(1, messages // MICRO_BATCHES)
    log(
        f"lineage_stream{opts.label}: Kafka → Delta stream ingest of {messages:,} messages in micro-batches "
        f"of {max_records:,}, lineage on vs off"
    )
    bootstrap = _KAFKA.bootstrap
    topic = _KAFKA.topic(messages)
    warm = _KAFKA.topic(_WARMUP_MESSAGES)
    for enabled in (False, True):  # untimed: imports, first connections
        _stream(bootstrap, warm, opts.workdir / "lineage_warmup_home", enabled=enabled, max_records=500)

    times = RoundTimes("lineage_stream", "msg/s", "lineage off", OVERHEAD_TARGET, opts.quick)
    runs: dict[str, list[_Run]] = {"baseline": [], "lakebed": []}
    for round_no in range(1, _rounds(opts, "lineage_stream") + 1):
        for enabled in _order(round_no):
            which = "lakebed" if enabled else "baseline"
            run = _stream(
                bootstrap,
                topic,
                opts.workdir / f"lineage_{which}_home",
                enabled=enabled,
                max_records=max_records,
            )
            rate = f"{messages / run.seconds:9,.0f} msg/s"
            detail = _round_detail(run, enabled, rate)
            times.record(which, round_no, run.seconds, f"{detail}, {run.micro_batches} micro-batches")
            if run.rows != messages:
                raise RuntimeError(f"lakebed wrote {run.rows:,} rows for {messages:,} messages")
            if enabled and run.children != run.micro_batches:
                raise RuntimeError(
                    f"lineage on: {run.children} completed child runs for {run.micro_batches} micro-batches"
                )
            _check_events(run, enabled)
            runs[which].append(run)
    micro_batches = runs["lakebed"][-1].micro_batches
    return _overhead_line(
        "lineage_stream", times, runs, f"{messages:,} messages in {micro_batches} micro-batches", opts.quick
    )


# --- lineage_queries: a synthetic store --------------------------------------------------------------

_RUN = "00000000-0000-4000-8000-00000000a001"  # placeholders, replaced in the serialised templates
_PARENT = "00000000-0000-4000-8000-00000000a002"
_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PLACEHOLDER = re.compile(r"(00000000-0000-4000-8000-00000000a00[12]|2000-01-01T00:00:00\+00:00|@V\d+@)")


class _Template:
    """A serialised event with its placeholders cut out: ``fill`` puts values in their place."""

    def __init__(self, event: dict[str, Any]) -> None:
        text = json.dumps(event, separators=(",", ":"))
        self.parts = _PLACEHOLDER.split(text)

    def fill(self, values: dict[str, str]) -> str:
        parts = self.parts.copy()
        for i in range(1, len(parts), 2):
            parts[i] = values[parts[i]]
        return "".join(parts)


@dataclass
class _Table:
    name: str
    level: int
    parents: tuple[int, ...]  # indices of the tables it reads (at their latest versions)
    start: _Template
    complete: _Template
    fail: _Template | None  # raw ingests do not fail here
    version: int = -1

    @property
    def output_key(self) -> str:
        """The placeholder of the output version (the inputs' are ``@V0@``, ``@V1@``, ...)."""
        return f"@V{max(1, len(self.parents))}@"


def _schema(level: int, index: int) -> Any:
    import pyarrow as pa

    if level == 0:
        from lakebed.samples import orders

        return orders(1).schema.append(pa.field("_source_file", pa.string()))
    return pa.schema(
        [
            ("customer_id", pa.int64()),
            ("day", pa.date32()),
            (f"metric_{index}", pa.float64()),
            ("orders", pa.int64()),
            ("revenue", pa.decimal128(12, 2)),
            ("currency", pa.string()),
            ("updated_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def _pipeline(config: LakebedConfig) -> list[_Table]:
    """The synthetic pipeline's tables in dependency order, with their event templates."""
    from lakebed.lineage.events import JobInfo, ParentRef, file_dataset, run_event, table_dataset

    tables_root = Path(config.tables_root)
    parent = ParentRef(_PARENT, "dagster", "daily_refresh")
    tags = {"dagster.run_id": _PARENT, "dagster.job": "daily_refresh"}
    tables: list[_Table] = []
    first_of_level: list[int] = []
    for level, count in enumerate(LEVELS):
        first_of_level.append(len(tables))
        for j in range(count):
            name = f"l{level}_{'raw' if level == 0 else 'agg'}_{j:02d}"
            schema = _schema(level, j)
            lineage: dict[str, list[tuple[DatasetRef, str, str]]] | None = None
            if level == 0:
                parents: tuple[int, ...] = ()
                source = file_dataset(config.landing_root / f"{name}.csv", sha256="@V0@")
                inputs = [source]
                lineage = {c: [(source, c, "DIRECT:IDENTITY")] for c in schema.names}
                job = JobInfo(config.lineage_namespace, f"ingest:{name}", code_version="3f2c9ab")
            else:
                below, size = first_of_level[level - 1], LEVELS[level - 1]
                parents = (below + j % size, below + (j + 1) % size)
                inputs = [
                    table_dataset(tables[p].name, str(tables_root / tables[p].name), None) for p in parents
                ]
                inputs = [dataclasses.replace(ref, version=f"@V{k}@") for k, ref in enumerate(inputs)]
                job = JobInfo(config.lineage_namespace, f"transform:{name}", code_version="3f2c9ab")
            output = dataclasses.replace(
                table_dataset(
                    name,
                    str(tables_root / name),
                    None,
                    schema=schema,
                    rows=50_000 + 1_000 * j,
                    size=1_400_000 + 10_000 * j,
                    column_lineage=lineage,
                    extra={"kind": "table", "operation": "append"},
                ),
                version=f"@V{max(1, len(parents))}@",
            )

            def event(
                kind: str, ins: list[DatasetRef], outs: list[DatasetRef], job: JobInfo = job
            ) -> _Template:
                error = "ValueError: division by zero in revenue" if kind == "FAIL" else None
                return _Template(
                    run_event(
                        kind,
                        run_id=_RUN,
                        job=job,
                        inputs=ins,
                        outputs=outs,
                        parent=parent,
                        error=error,
                        tags=tags,
                        event_time=_TIME,
                    )
                )

            tables.append(
                _Table(
                    name,
                    level,
                    parents,
                    start=event("START", [], []),
                    complete=event("COMPLETE", inputs, [output]),
                    fail=event("FAIL", inputs, []) if level else None,
                )
            )
    return tables


def _write_store_events(path: Path, tables: list[_Table], events: int) -> tuple[int, int]:
    """Append ``events`` events (rounded down to whole runs: START, then COMPLETE or FAIL) of round after
    round of the pipeline to ``path``; returns the events and rounds written."""
    rng = random.Random(2025)
    total = events // 2 * 2
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=total)
    step, took = dt.timedelta(seconds=2), dt.timedelta(milliseconds=900)
    time_key = _TIME.isoformat()
    written = rounds = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        while written < total:
            rounds += 1
            lines: list[str] = []
            values = {_PARENT: str(uuid.uuid4())}  # the round's Dagster run
            for table in tables:
                if written + len(lines) >= total:
                    break
                values[_RUN] = str(uuid.uuid4())
                if table.level == 0:
                    values["@V0@"] = f"{rng.getrandbits(256):064x}"  # the file's sha256
                for k, p in enumerate(table.parents):
                    values[f"@V{k}@"] = str(tables[p].version)
                failed = table.fail is not None and rng.random() < FAIL_SHARE
                if not failed:
                    table.version += 1
                    values[table.output_key] = str(table.version)
                values[time_key] = moment.isoformat()
                lines.append(table.start.fill(values))
                values[time_key] = (moment + took).isoformat()
                lines.append((table.fail if failed and table.fail else table.complete).fill(values))
                moment += step
            out.write("\n".join(lines) + "\n")
            written += len(lines)
    return written, rounds


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def _bare_scan(uri: str, db: Any, run_id: str) -> int:
    """The baseline: open the Delta table, scan it with DuckDB for one run's events."""
    from deltalake import DeltaTable

    data = DeltaTable(uri).to_pyarrow_dataset()
    db.register("lineage_scan", data)
    try:
        rows = db.execute("SELECT count(*) FROM lineage_scan WHERE run_id = ?", [run_id]).fetchall()
    finally:
        db.unregister("lineage_scan")
    return int(rows[0][0])


def _check_producer(store: LineageStore, table: str, version: int) -> None:
    info = store.producer(table, version)
    if not any(o.table == table and o.version == str(version) for o in info.outputs):
        raise RuntimeError(f"producer({table!r}, {version}) is run {info.run_id}, which did not write it")


def _store_size(events: int) -> str:
    return f"{events // 1_000_000}m" if events >= 1_000_000 else f"{events // 1000}k"


def _queries_at(opts: BenchOptions, events: int, calls: int) -> list[str]:
    """One store of ``events`` events: sync, first load, then ``QUERY_ROUNDS`` rounds of interleaved
    producer / upstream / downstream / bare-scan calls; the report lines of p50 and p99 per round."""
    import duckdb

    from lakebed.lineage.store import LineageStore

    size = _store_size(events)
    with lakebed_home(opts.workdir / f"lineage_store_home_{size}") as config:
        path = _events_file(config)
        tables = _pipeline(config)
        seconds, (written, rounds) = timed(lambda: _write_store_events(path, tables, events))
        log(
            f"  [{size}] appended {written:,} events ({rounds:,} pipeline rounds, "
            f"{fmt_size(path.stat().st_size)}) to {path.name} in {seconds:.1f} s"
        )
        sync_seconds, added = timed(LineageStore(config).sync)
        if added != written:
            raise RuntimeError(f"sync loaded {added:,} of {written:,} events")
        log(
            f"  [{size}] sync: {added:,} events in {sync_seconds:.1f} s ({added / sync_seconds:,.0f} events/s)"
        )
        remove(path)  # the Delta table holds them now (and the disk is freed)

        store = LineageStore(config)
        rss_before = _rss_mib()
        load_seconds, _ = timed(store.refresh)
        rss_after = _rss_mib()
        _check_producer(store, tables[-1].name, tables[-1].version)
        log(
            f"  [{size}] first load (DuckDB copy + index) {load_seconds:.1f} s, peak RSS "
            f"{rss_before:,.0f} → {rss_after:,.0f} MiB"
        )

        rng = random.Random(7)
        deep = [t for t in tables if t.level >= len(LEVELS) - 2]
        db = duckdb.connect()
        run_ids = [r["run_id"] for r in store.runs(limit=64)]
        for table in (tables[0], deep[0]):  # untimed warm-up of each call
            _check_producer(store, table.name, table.version)
            store.upstream(table.name, table.version, depth=UPSTREAM_DEPTH)
            store.downstream(deep[0].name, deep[0].version, depth=UPSTREAM_DEPTH)
        _bare_scan(store.uri, db, run_ids[0])

        kinds = ("producer", "upstream", "downstream", "scan")
        per_round: dict[str, list[list[float]]] = {k: [] for k in kinds}
        nodes: list[int] = []
        down_nodes: list[int] = []
        gc.collect()
        for _ in range(QUERY_ROUNDS):
            latency: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(max(1, calls // QUERY_ROUNDS)):
                table = rng.choice(tables)
                version = rng.randint(0, table.version)
                start = time.perf_counter()
                info = store.producer(table.name, version)
                latency["producer"].append(time.perf_counter() - start)
                if not any(o.table == table.name and o.version == str(version) for o in info.outputs):
                    raise RuntimeError(
                        f"producer({table.name!r}, {version}) named a run that did not write it"
                    )

                table = rng.choice(deep)
                version = rng.randint(0, table.version)
                start = time.perf_counter()
                graph = store.upstream(table.name, version, depth=UPSTREAM_DEPTH)
                latency["upstream"].append(time.perf_counter() - start)
                nodes.append(len(graph.nodes))

                table = rng.choice(deep)
                version = rng.randint(0, table.version)
                start = time.perf_counter()
                graph = store.downstream(table.name, version, depth=UPSTREAM_DEPTH)
                latency["downstream"].append(time.perf_counter() - start)
                down_nodes.append(len(graph.edges))

                if len(latency["scan"]) < 10:  # the baseline scan is slow at size: a few per round
                    run_id = rng.choice(run_ids)
                    start = time.perf_counter()
                    found = _bare_scan(store.uri, db, run_id)
                    latency["scan"].append(time.perf_counter() - start)
                    if found != 2:
                        raise RuntimeError(f"the bare scan found {found} events of run {run_id}, not 2")
            for k in kinds:
                per_round[k].append(latency[k])
        if min(nodes) < 2 * UPSTREAM_DEPTH:
            raise RuntimeError(f"upstream graphs of only {min(nodes)} nodes: the walk did not go deep")

    every = {k: [x for r in v for x in r] for k, v in per_round.items()}
    for key in kinds:
        log(
            f"  [{size}] {key + ':':12} p50 {_ms(_quantile(every[key], 0.5)):>9}  "
            f"p99 {_ms(_quantile(every[key], 0.99)):>9}  over {len(every[key])} calls"
        )
    scan = _quantile(every["scan"], 0.5)
    lines = []
    for key, name, extent in (
        ("upstream", "lineage_queries", f"{min(nodes)}–{max(nodes)} graph nodes"),
        ("downstream", "lineage_downstream", f"{min(down_nodes)}–{max(down_nodes)} graph edges"),
    ):
        for q, target in ((0.5, QUERY_P50_TARGET_MS), (0.99, QUERY_P99_TARGET_MS)):
            values = [_quantile(r, q) * 1000 for r in per_round[key]]
            detail = (
                f"{key}(depth {UPSTREAM_DEPTH}) over {written:,} events, {extent}; first load "
                f"{load_seconds:.1f} s, RSS {rss_after:,.0f} MiB; producer p50 "
                f"{_ms(_quantile(every['producer'], 0.5))}, bare DuckDB scan p50 {_ms(scan)}"
            )
            lines.append(
                report(
                    f"{name}_p{round(q * 100)}_{size}",
                    values,
                    target=target,
                    better="lower",
                    unit="ms",
                    detail=detail,
                    quick=opts.quick,
                )
            )
    for line in lines:
        log("  " + line)
    return lines


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_queries(opts: BenchOptions) -> str:
    sizes = STORE_EVENTS_QUICK if opts.quick else STORE_EVENTS
    calls = QUERY_CALLS_QUICK if opts.quick else QUERY_CALLS
    log(
        f"lineage_queries{opts.label}: lineage stores of {' and '.join(f'{e:,}' for e in sizes)} events "
        f"({len(LEVELS)} levels, {sum(LEVELS)} tables): sync, first load, producer / upstream / downstream "
        f"(depth {UPSTREAM_DEPTH}) in {QUERY_ROUNDS} rounds"
    )
    lines: list[str] = []
    for events in sizes:
        lines.extend(_queries_at(opts, events, calls))
    return "\n".join(lines)
