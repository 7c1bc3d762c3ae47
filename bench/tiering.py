"""Hot/cold tiering benchmarks: what a move costs against copying the same bytes, and what reading costs.

The data: order lines from ``lakebed.samples.orders`` (24,000,000 for ``tier_move``, 2,000,000 for
``tier_read``; ``--quick``: 1/20) with evenly spaced, unique ``ordered_at`` times over 2025, written in time
order by ten ``lakebed.commit`` calls under a contract with ``tiering: {column: ordered_at, hot_for: 3650d}``
(so each commit's file holds one tenth of the year). The move boundary is the first time of the ninth
commit: 80% of the rows, exactly the first eight files.

``tier_move``: ``pipelines.tiering.move(table, before=boundary)`` (intent commit, streaming copy with the
row checksum, cold commit, read-back verification, hot delete) against the baseline, a raw copy of the
same Parquet bytes (those eight hot files) to the same store: ``shutil.copyfile`` into a folder for the
``file://`` cold tier, boto3 ``upload_file`` into the same bucket for the S3 cold tier (moto's S3 server
on 127.0.0.1, in a child process). Each round restores the freshly written hot table from a snapshot and
moves it to a fresh cold prefix, each timing starting after an ``os.sync()``, the two taking turns to go
first. Each round is a pair; the ratio per cold tier (``tier_move_file``, ``tier_move_s3``) is the median
over the pairs (at least 5, 6 for ``file://``) of move rate / copy rate in MB/s of the moved files' Parquet
bytes, with its min–max. Target per cold tier: move ≥ 0.7 × raw copy (time(move) ≤ time(copy) / 0.7). A move also has a fixed
cost (three commits, a lineage run, planning) that no copy has: the table is large enough (~375 MB moved)
for throughput, not that cost, to decide the ratio, and the cost is printed on its own: the time of a move
of a 5,000-row table (after an untimed first one).

``tier_read`` (informational, no target): the same rows as a tiered table (moved as above) and as one
untiered table (the same commits, never moved), read with ``read_table``: a full scan, and a scan with
``since=`` a time above the watermark (the last tenth of the rows: the hot tier only). Ratios tiered rate
/ untiered rate (above 1: the tiered read is faster), the median of the per-round pairs (at least 5) with
min–max, for both cold tiers (``tier_read_full_file``, ``tier_read_hot_s3``, ...). Both reads must return the
same rows as the untiered table. The filtered read must not touch the cold store: it is run once more
with the cold store broken (S3: the endpoint pointed at a server that answers every request with 403
AccessDenied and counts them; ``file://``: a cold root whose table has a corrupt Delta log) and must
still succeed, with no request made.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bench.common import (
    MB,
    BenchOptions,
    RoundTimes,
    fmt_size,
    free_port,
    lakebed_home,
    log,
    remove,
    stop_process,
    timed,
    wait_for_port,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from lakebed.config import LakebedConfig

ROWS = 2_000_000
MOVE_ROWS = 24_000_000
COMMITS = 10
MOVED_COMMITS = 8  # the boundary: 80% of the rows go cold
HOT_READ_COMMIT = 9  # since= the first time of this commit: the last tenth, all hot
MOVE_TARGET = 0.70
READ_ROUNDS = 5
TABLE = "orders_tiered_bench"
FLAT_TABLE = "orders_untiered_bench"
COLUMN = "ordered_at"
BUCKET = "lakebed-bench-cold"
_WARMUP_ROWS = 5_000
_YEAR = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


# --- data ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orders:
    """The benchmark rows as the ten commits, and the times that split them."""

    chunks: list[pa.Table]

    @property
    def rows(self) -> int:
        return sum(c.num_rows for c in self.chunks)

    def first_time(self, commit: int) -> dt.datetime:
        value: dt.datetime = self.chunks[commit].column(COLUMN)[0].as_py()
        return value

    @property
    def boundary(self) -> dt.datetime:
        return self.first_time(MOVED_COMMITS)

    @property
    def moved_rows(self) -> int:
        return sum(c.num_rows for c in self.chunks[:MOVED_COMMITS])


def make_orders(rows: int) -> Orders:
    """``rows`` order lines with unique, evenly spaced times over 2025, split into ``COMMITS`` chunks."""
    import numpy as np
    import pyarrow as pa

    from lakebed.samples import orders

    table = orders(rows)
    step = 365 * 86_400 * 1_000_000 // rows
    start = int(_YEAR.timestamp()) * 1_000_000
    times = pa.array(start + np.arange(rows, dtype=np.int64) * step, pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    table = table.set_column(table.schema.get_field_index(COLUMN), COLUMN, times)
    size = -(-rows // COMMITS)
    return Orders([table.slice(i * size, size) for i in range(COMMITS)])


def _contract(name: str, schema: pa.Schema) -> Any:
    from lakebed.schemas.contract import TableContract

    return TableContract.from_arrow(name, schema, tiering={"column": COLUMN, "hot_for": "3650d"})


def write_table(name: str, data: Orders, config: LakebedConfig) -> None:
    """The table, one ``lakebed.commit`` per chunk, in time order."""
    import lakebed

    contract = _contract(name, data.chunks[0].schema)
    for chunk in data.chunks:
        lakebed.commit(name, chunk, contract=contract, config=config)


# --- cold stores ----------------------------------------------------------------------------------------


class FileStore:
    """The ``file://`` cold tier: a local folder; the raw copy is ``shutil.copyfile``."""

    label = "file://"
    key = "file"
    baseline = "raw file copy"
    move_rounds = 6  # cheap, and local copies are the noisier

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def cold_root(self, prefix: str) -> str:
        return (self.root / prefix).as_uri()

    def config(self, home: Path, prefix: str) -> LakebedConfig:
        return _config(home, self.cold_root(prefix))

    def copy(self, files: list[Path], prefix: str) -> None:
        target = self.root / prefix
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copyfile(file, target / file.name)

    def clear(self, prefix: str) -> None:
        remove(self.root / prefix)

    def broken_config(self, home: Path, prefix: str, table: str) -> tuple[LakebedConfig, Any]:
        """A config whose cold tier cannot be read: the table there has a corrupt Delta log."""
        broken = self.root / f"{prefix}-broken"
        log_dir = broken / table / "_delta_log"
        log_dir.mkdir(parents=True, exist_ok=True)
        for version in range(8):
            (log_dir / f"{version:020d}.json").write_text("this is not a Delta log\n")
        return _config(home, broken.as_uri()), None

    def close(self) -> None:
        remove(self.root)


class S3Store:
    """The S3 cold tier: moto's S3 server on 127.0.0.1; the raw copy is boto3 ``upload_file`` of the same
    files into the same bucket.

    The server runs in a child process (``python -m moto.server``), not in a thread here: several delta-rs
    calls (``DeltaTable.history``, ``transaction_version``) hold the GIL while they wait on S3, so an
    in-process ``ThreadedMotoServer`` cannot answer them and the request times out after 180 s."""

    label = "s3 (moto)"
    key = "s3"
    baseline = "boto3 upload_file"
    move_rounds = 5

    def __init__(self) -> None:
        import boto3

        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        wait_for_port(port, self.process, "the moto S3 server", timeout=30.0)
        self.client = boto3.client("s3", **self.settings(self.endpoint).to_boto3_kwargs())
        self.client.create_bucket(Bucket=BUCKET)

    @staticmethod
    def settings(endpoint: str) -> Any:
        from pydantic import SecretStr

        from lakebed.config import S3Settings

        return S3Settings(
            endpoint_url=endpoint,
            access_key_id=SecretStr("test"),  # moto's dummy credentials
            secret_access_key=SecretStr("test"),
            region="us-east-1",
            allow_http=True,
        )

    def cold_root(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def config(self, home: Path, prefix: str) -> LakebedConfig:
        return _config(home, self.cold_root(prefix), self.settings(self.endpoint))

    def copy(self, files: list[Path], prefix: str) -> None:
        for file in files:
            self.client.upload_file(str(file), BUCKET, f"{prefix}/{file.name}")

    def clear(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})

    def broken_config(self, home: Path, prefix: str, table: str) -> tuple[LakebedConfig, DenyingServer]:
        """The same cold root, but the S3 endpoint is a server that denies (and counts) every request."""
        denier = DenyingServer()
        return _config(home, self.cold_root(prefix), self.settings(denier.endpoint)), denier

    def close(self) -> None:
        stop_process(self.process, timeout=10)


class DenyingServer:
    """An HTTP server answering every request with S3's 403 AccessDenied (not retried), counting them."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _deny(self) -> None:
                owner.requests.append(f"{self.command} {self.path}")
                body = b"<Error><Code>AccessDenied</Code><Message>cold store broken</Message></Error>"
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _deny

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib name
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _config(home: Path, cold_root: str, s3: Any = None) -> LakebedConfig:
    from lakebed.config import LakebedConfig

    extra = {"s3": s3} if s3 is not None else {}
    return LakebedConfig(
        home=home, hot_root=home / "tables", cold_root=cold_root, landing_dir=home / "landing", **extra
    )


Store = FileStore | S3Store
Outcome = TypeVar("Outcome")


def _on_each_store(opts: BenchOptions, run: Callable[[Store], Outcome]) -> list[Outcome]:
    """``run`` against each cold store in turn (``file://``, then S3), each closed afterwards."""
    outcomes = []
    for make in (lambda: FileStore(opts.workdir / "cold-file"), S3Store):
        store = make()
        try:
            outcomes.append(run(store))
        finally:
            store.close()
    return outcomes


# --- helpers ----------------------------------------------------------------------------------------------


def _files_below(name: str, boundary: dt.datetime, config: LakebedConfig) -> tuple[list[Path], int]:
    """The hot table's data files whose rows all lie before ``boundary``, and their row count."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from lakebed.pipelines.catalog import Catalog

    entry = Catalog(config).get(name)
    actions = pa.table(DeltaTable(entry.uri).get_add_actions(flatten=True)).to_pylist()
    root = Path(entry.uri.removeprefix("file://"))
    chosen = [a for a in actions if a[f"max.{COLUMN}"] < boundary]
    straddling = [a for a in actions if a[f"min.{COLUMN}"] < boundary <= a[f"max.{COLUMN}"]]
    if straddling:
        raise RuntimeError(f"{len(straddling)} hot file(s) hold rows on both sides of the boundary")
    return [root / a["path"] for a in chosen], sum(int(a["num_records"]) for a in chosen)


def _snapshot(home: Path, pristine: Path) -> None:
    remove(pristine)
    shutil.copytree(home, pristine, symlinks=True)


def _restore(pristine: Path, home: Path) -> None:
    remove(home)
    shutil.copytree(pristine, home, symlinks=True)


# --- tier_move --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoveOutcome:
    store: str
    line: str  # the store's report line
    bytes: int
    rows: int
    small_move_seconds: float


def _move(config: LakebedConfig, boundary: dt.datetime, table: str = TABLE) -> tuple[float, int]:
    from lakebed.pipelines.tiering import move

    seconds, result = timed(lambda: move(table, before=boundary, config=config))
    return seconds, result.rows


def _warm_up(store: Store, opts: BenchOptions) -> float:
    """One small move and copy, untimed (imports, first connections, first-use setup); then the time of
    a second small move (of another table): a move's fixed cost."""
    home = opts.workdir / "tier_warmup_home"
    data = make_orders(_WARMUP_ROWS)
    with lakebed_home(home):
        config = store.config(home, "warmup")
        write_table(TABLE, data, config)
        write_table(FLAT_TABLE, data, config)
        files, _ = _files_below(TABLE, data.boundary, config)
        store.copy(files, "warmup-raw")
        _move(config, data.boundary)
        seconds, _ = _move(config, data.boundary, FLAT_TABLE)
    store.clear("warmup")
    store.clear("warmup-raw")
    log(f"  fixed cost: a move of a {_WARMUP_ROWS:,}-row table took {seconds * 1000:.0f} ms")
    return seconds


def _move_rounds(store: Store, data: Orders, opts: BenchOptions) -> MoveOutcome:
    log(f"  cold tier {store.label}:")
    small = _warm_up(store, opts)
    home = opts.workdir / "tier_move_home"
    pristine = opts.workdir / "tier_move_pristine"
    with lakebed_home(home):
        seconds, _ = timed(lambda: write_table(TABLE, data, store.config(home, "unused")))
        files, rows = _files_below(TABLE, data.boundary, store.config(home, "unused"))
        size = sum(f.stat().st_size for f in files)
        log(
            f"  wrote {data.rows:,} rows in {COMMITS} commits in {seconds:.1f} s; moving {rows:,} rows "
            f"in {len(files)} files ({fmt_size(size)})"
        )
        if rows != data.moved_rows:
            raise RuntimeError(
                f"the files below the boundary hold {rows:,} rows, expected {data.moved_rows:,}"
            )
        _snapshot(home, pristine)
        times = RoundTimes(f"tier_move_{store.key}", "MB/s", store.baseline, MOVE_TARGET, opts.quick)
        try:
            for round_no in range(1, max(store.move_rounds, opts.rounds) + 1):
                _restore(pristine, home)
                prefix = f"move-r{round_no}"
                config = store.config(home, prefix)
                # Alternate which goes first: the second of a pair runs while the store still settles the
                # first one's writes (on this machine's virtual disk that can cost it up to 2x).
                if round_no % 2:
                    _time_copy(store, files, prefix, times, round_no, size)
                    moved = _time_move(config, data.boundary, times, round_no, size)
                else:
                    moved = _time_move(config, data.boundary, times, round_no, size)
                    _time_copy(store, files, prefix, times, round_no, size)
                if moved != rows:
                    raise RuntimeError(f"the move moved {moved:,} rows, expected {rows:,}")
                _check_moved(config, data, rows)
                store.clear(prefix)
                store.clear(f"{prefix}-raw")
        finally:
            remove(pristine)
    return MoveOutcome(store.label, times.summary(size / MB), size, rows, small)


def _time_copy(
    store: Store, files: list[Path], prefix: str, times: RoundTimes, round_no: int, size: int
) -> None:
    os.sync()  # each timing starts with no dirty pages left to write back
    seconds, _ = timed(lambda: store.copy(files, f"{prefix}-raw"))
    times.record("baseline", round_no, seconds, f"{size / MB / seconds:7.1f} MB/s  {store.baseline}")


def _time_move(
    config: LakebedConfig, boundary: dt.datetime, times: RoundTimes, round_no: int, size: int
) -> int:
    os.sync()
    seconds, moved = _move(config, boundary)
    times.record("lakebed", round_no, seconds, f"{size / MB / seconds:7.1f} MB/s  {moved:,} rows moved")
    return moved


def _check_moved(config: LakebedConfig, data: Orders, moved: int) -> None:
    """Outside the timing: the status agrees (cold holds the moved rows, in the store asked for)."""
    from lakebed.pipelines.tiering import status

    state = status(TABLE, config=config)
    if state.cold_rows != moved or state.hot_rows != data.rows - moved:
        raise RuntimeError(f"after the move: {state.hot_rows:,} hot and {state.cold_rows:,} cold rows")


def run_move(opts: BenchOptions) -> str:
    log(
        f"tier_move{opts.label}: move 80% of a table to the cold tier vs a raw copy of the same Parquet files"
    )
    data = make_orders(opts.scaled(MOVE_ROWS))
    outcomes = _on_each_store(opts, lambda store: _move_rounds(store, data, opts))
    rows = outcomes[0].rows
    fixed = ", ".join(f"{o.store} {o.small_move_seconds * 1000:.0f} ms" for o in outcomes)
    return "\n".join(o.line for o in outcomes) + (
        f"\ntier_move: {rows:,} of {data.rows:,} rows ({fmt_size(outcomes[0].bytes)} Parquet) moved per round; "
        f"fixed cost (a {_WARMUP_ROWS:,}-row move): {fixed}{opts.label}"
    )


# --- tier_read --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOutcome:
    store: str
    lines: tuple[str, str]  # the full-scan and hot-only report lines
    cold_untouched: str  # "yes" or what went wrong


def _same_rows(ours: pa.Table, theirs: pa.Table, what: str) -> None:
    if ours.num_rows != theirs.num_rows:
        raise RuntimeError(
            f"{what}: the tiered table read {ours.num_rows:,} rows, the untiered {theirs.num_rows:,}"
        )
    if ours.schema.remove_metadata() != theirs.schema.remove_metadata():
        raise RuntimeError(f"{what}: schemas differ:\n{ours.schema}\nvs\n{theirs.schema}")
    if not ours.sort_by("order_id").equals(theirs.sort_by("order_id")):
        raise RuntimeError(f"{what}: the tiered and untiered tables read different rows")


def _read_rounds(store: Store, data: Orders, opts: BenchOptions) -> ReadOutcome:
    from lakebed.pipelines.read import read_table

    log(f"  cold tier {store.label}:")
    home = opts.workdir / "tier_read_home"
    prefix = "read"
    since = data.first_time(HOT_READ_COMMIT)
    with lakebed_home(home):
        config = store.config(home, prefix)
        write_table(TABLE, data, config)
        write_table(FLAT_TABLE, data, config)
        _move(config, data.boundary)
        _check_moved(config, data, data.moved_rows)
        # Untimed warm-up of each read.
        for name in (TABLE, FLAT_TABLE):
            read_table(name, config=config)
            read_table(name, since=since, config=config)
        full = RoundTimes(f"tier_read_full_{store.key}", "rows/s", "untiered", None, opts.quick)
        hot = RoundTimes(f"tier_read_hot_{store.key}", "rows/s", "untiered", None, opts.quick)
        results: dict[str, pa.Table] = {}
        for round_no in range(1, max(READ_ROUNDS, opts.rounds) + 1):
            seconds, results["flat_full"] = timed(lambda: read_table(FLAT_TABLE, config=config))
            full.record(
                "baseline", round_no, seconds, f"full scan, untiered: {results['flat_full'].num_rows:,} rows"
            )
            seconds, results["full"] = timed(lambda: read_table(TABLE, config=config))
            full.record(
                "lakebed", round_no, seconds, f"full scan, tiered:   {results['full'].num_rows:,} rows"
            )
            seconds, results["flat_hot"] = timed(lambda: read_table(FLAT_TABLE, since=since, config=config))
            hot.record(
                "baseline",
                round_no,
                seconds,
                f"since={since:%Y-%m-%d}, untiered: {results['flat_hot'].num_rows:,} rows",
            )
            seconds, results["hot"] = timed(lambda: read_table(TABLE, since=since, config=config))
            hot.record(
                "lakebed",
                round_no,
                seconds,
                f"since={since:%Y-%m-%d}, tiered:   {results['hot'].num_rows:,} rows",
            )
        if results["flat_full"].num_rows != data.rows:
            raise RuntimeError(
                f"the untiered full scan read {results['flat_full'].num_rows:,} of {data.rows:,} rows"
            )
        _same_rows(results["full"], results["flat_full"], "full scan")
        _same_rows(results["hot"], results["flat_hot"], "filtered scan")
        untouched = _cold_untouched(store, home, prefix, since, results["flat_hot"])
        store.clear(prefix)
    return ReadOutcome(
        store.label, (full.summary(data.rows), hot.summary(results["hot"].num_rows)), untouched
    )


def _cold_untouched(store: Store, home: Path, prefix: str, since: dt.datetime, expected: pa.Table) -> str:
    """Read the hot-only filter once more with the cold store broken: "yes", or what went wrong."""
    from lakebed.pipelines.read import read_table

    config, denier = store.broken_config(home, prefix, TABLE)
    try:
        try:
            table = read_table(TABLE, since=since, config=config)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the ratios still stand
            message = str(exc).splitlines()[0][:160]
            log(f"  filtered read with the cold store broken FAILED: {type(exc).__name__}: {message}")
            return f"NO (failed with the cold store broken: {type(exc).__name__})"
        requests = denier.requests if denier is not None else []
        if requests:
            log(f"  filtered read with the cold store broken made {len(requests)} request(s): {requests[:3]}")
            return f"NO ({len(requests)} cold request(s))"
        _same_rows(table, expected, "filtered scan with the cold store broken")
        log("  filtered read with the cold store broken: ok, same rows" + (", 0 requests" if denier else ""))
        return "yes"
    finally:
        if denier is not None:
            denier.close()
        else:
            store.clear(f"{prefix}-broken")


def run_read(opts: BenchOptions) -> str:
    log(f"tier_read{opts.label}: read a tiered table vs the same rows in one untiered table")
    data = make_orders(opts.scaled(ROWS))
    outcomes = _on_each_store(opts, lambda store: _read_rounds(store, data, opts))
    untouched = ", ".join(f"{o.store} {o.cold_untouched}" for o in outcomes)
    return "\n".join(line for o in outcomes for line in o.lines) + (
        f"\ntier_read: {data.rows:,} rows, {data.moved_rows:,} cold; hot-only read with the cold store broken "
        f"succeeded untouched: {untouched}{opts.label}"
    )
