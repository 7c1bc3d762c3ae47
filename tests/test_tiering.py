"""Hot/cold tiering against a real S3 API endpoint (moto's server, see ``s3_fixtures``): moves and recalls
read transparently (Arrow, Polars, SQL, ``since=``, time travel), kill -9 at every step and at random moments
loses and doubles nothing and a rerun converges, an object store that goes down mid-copy is a clear error
and a retry succeeds, readers during a move see one answer, two movers at once end correct, and bad
credentials or a missing bucket are named without leaking the secret. No mocks of S3 or Delta.

Movers that get killed run in child processes forked from a ``multiprocessing`` forkserver that has lakebed
imported already (a fresh interpreter spends ~6 s importing it, a fork a few ms). Each child runs the real
CLI (``lakebed tier move|recall``) with the test's environment: LAKEBED_HOME, AWS_*, LAKEBED_COLD_ROOT and,
for fault tests, ``LAKEBED_TIER_FAULT``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from lakebed.cli import main
from lakebed.cli_tier import tier
from lakebed.config import get_config, reset_config
from lakebed.errors import ContractError, TierConflictError, TierError
from lakebed.pipelines import tiering
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import commit
from lakebed.pipelines.read import read_table, scan_table, sql
from lakebed.pipelines.tiering import access as tier_access
from lakebed.pipelines.tiering.move import Mover
from lakebed.pipelines.tiering.plan import quota_target
from lakebed.schemas.contract import TableContract
from lakebed.storage import arrow_dataset

if TYPE_CHECKING:
    from s3_fixtures import MotoServer, S3Proxy, S3Target

pytest_plugins = ["s3_fixtures"]

TABLE = "t"
N = 2_000  # rows of the standard table; ts spans N hours (~83 days), scattered over ids and files
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
COLUMNS = [
    {"name": "id", "type": "int64"},
    {"name": "ts", "type": "timestamp"},
    {"name": "v", "type": "float64"},
]
CONTRACT = TableContract.from_dict(
    {"name": TABLE, "columns": COLUMNS, "tiering": {"column": "ts", "hot_for": "30d"}}
)
# The same with a string column (filtered reads of both tiers once hit pyarrow's missing string_view kernels).
TEXT_CONTRACT = TableContract.from_dict(
    {
        "name": TABLE,
        "columns": [*COLUMNS, {"name": "s", "type": "string"}],
        "tiering": {"column": "ts", "hot_for": "30d"},
    }
)


def at(hours: int) -> dt.datetime:
    return BASE + dt.timedelta(hours=hours)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def rows(ids: Iterable[int], hours: Iterable[int], text: bool = False) -> pa.Table:
    ids, hours = list(ids), list(hours)
    columns = {
        "id": pa.array(ids, pa.int64()),
        "ts": pa.array([at(h) for h in hours], pa.timestamp("us", tz="UTC")),
        "v": pa.array([i * 0.5 for i in ids], pa.float64()),  # sums stay exact in float64
    }
    if text:
        columns["s"] = pa.array([f"row-{i}" for i in ids], pa.string())
    return pa.table(columns)


def write_table(n: int = N, commits: int = 2, text: bool = False) -> pa.Table:
    """Write ``n`` rows (ids 0..n-1, ``ts`` a permutation of 0..n-1 hours) in ``commits`` commits; return
    the table as read back (sorted by id): the truth every later read must equal."""
    data = rows(range(n), [(i * 7919) % n for i in range(n)], text=text)
    step = -(-n // commits)
    for start in range(0, n, step):
        commit(TABLE, data.slice(start, step), contract=TEXT_CONTRACT if text else CONTRACT)
    truth = read_table(TABLE).sort_by("id")
    assert truth.column("id").to_pylist() == list(range(n))
    assert truth.drop_columns(["ts"]).equals(data.drop_columns(["ts"]))
    return truth


# --- checks -------------------------------------------------------------------------------------------


def assert_same_ids(got: Sequence[int], want: Sequence[int], what: str = "read") -> None:
    """Multiset equality of ids, naming what is missing or doubled."""
    have, need = collections.Counter(got), collections.Counter(want)
    if have != need:
        missing = sorted((need - have).elements())
        extra = sorted((have - need).elements())
        raise AssertionError(
            f"{what}: {len(missing)} row(s) missing (e.g. {missing[:10]}), "
            f"{len(extra)} row(s) extra or doubled (e.g. {extra[:10]})"
        )


def assert_same_rows(got: pa.Table, want: pa.Table, what: str = "read_table") -> None:
    assert_same_ids(got.column("id").to_pylist(), want.column("id").to_pylist(), what)
    got = got.sort_by("id")
    assert got.schema.equals(want.schema), f"{what}: schema {got.schema} != {want.schema}"
    assert got.equals(want), f"{what}: same ids, different values"


def below(table: pa.Table, moment: dt.datetime) -> pa.Table:
    return table.filter(pc.less(table.column("ts"), pa.scalar(moment, table.schema.field("ts").type)))


def at_or_after(table: pa.Table, moment: dt.datetime) -> pa.Table:
    return table.filter(
        pc.greater_equal(table.column("ts"), pa.scalar(moment, table.schema.field("ts").type))
    )


def sql_count_sum() -> tuple[int, float]:
    result = sql(f"SELECT count(*) AS n, sum(v) AS total FROM {TABLE}").to_pylist()[0]
    return int(result["n"]), float(result["total"] or 0.0)


def check_reads(truth: pa.Table, since: Sequence[dt.datetime] = ()) -> None:
    """Every reader returns exactly ``truth``: Arrow, Polars, DuckDB SQL and feature-style ``since=``."""
    assert_same_rows(read_table(TABLE), truth)
    scanned = scan_table(TABLE).collect().sort("id")
    assert_same_ids(scanned["id"].to_list(), truth.column("id").to_pylist(), "scan_table")
    assert_frame_equal(scanned, pl.from_arrow(truth), check_dtypes=True)  # type: ignore[arg-type]
    assert sql_count_sum() == (truth.num_rows, float(pc.sum(truth.column("v")).as_py() or 0.0))
    for moment in since:
        assert_same_rows(read_table(TABLE, since=moment), at_or_after(truth, moment), f"since={moment}")


def quick_reads(ids: Sequence[int], total: float) -> None:
    """The cheaper check for big tables: ids (multiset) from Arrow, count and sum from SQL and Polars."""
    assert_same_ids(read_table(TABLE, columns=["id"]).column("id").to_pylist(), ids)
    assert sql_count_sum() == (len(ids), total)
    frame = scan_table(TABLE).select(pl.len().alias("n"), pl.col("v").sum().alias("total")).collect()
    assert (frame["n"][0], frame["total"][0]) == (len(ids), total)


def hot_table() -> DeltaTable:
    return DeltaTable(Catalog(get_config()).get(TABLE).uri)


def cold_table() -> DeltaTable | None:
    config = get_config()
    uri = tiering.cold_uri(TABLE, config)
    try:
        return DeltaTable(uri, storage_options=tiering.storage_options(uri, config))
    except Exception:
        return None


def ids_of(table: DeltaTable | None, condition: ds.Expression | None = None) -> list[int]:
    if table is None:
        return []
    data = arrow_dataset(table).to_table(columns=["id"], filter=condition)
    return data.column("id").to_pylist()


def ts_below(moment: dt.datetime) -> ds.Expression:
    return ds.field("ts") < pa.scalar(moment, pa.timestamp("us", tz="UTC"))


def assert_converged(truth: pa.Table, watermark: dt.datetime) -> None:
    """Nothing in flight, the watermark reached, hot holds exactly the rows at or above it, cold exactly
    the rows below it (each once), and every reader returns ``truth``."""
    state = tiering.status(TABLE)
    assert not state.in_flight, "an operation is still pending"
    assert state.watermark == watermark
    hot = hot_table()
    assert ids_of(hot, ts_below(watermark)) == [], "hot still holds rows below the watermark"
    assert_same_ids(ids_of(hot), at_or_after(truth, watermark).column("id").to_pylist(), "hot tier")
    assert_same_ids(ids_of(cold_table()), below(truth, watermark).column("id").to_pylist(), "cold tier")
    assert (state.hot_rows, state.cold_rows) == (
        at_or_after(truth, watermark).num_rows,
        below(truth, watermark).num_rows,
    )
    check_reads(truth)


def pause() -> dt.datetime:
    """A moment strictly between the commits before and after it (Delta times are milliseconds)."""
    time.sleep(0.05)
    moment = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    return moment


# --- child processes: the CLI in a forked child, killed or not -------------------------------------


@pytest.fixture(scope="session")
def forkserver() -> multiprocessing.context.ForkServerContext:
    """Children are forked from a server that imported lakebed once (it starts in the background)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        [
            "lakebed.cli",
            "lakebed.cli_tier",
            "lakebed.pipelines.tiering",
            "lakebed.pipelines.read",
            "rich.progress",
            "openlineage.client",  # imported lazily by the lineage run of every move: ~1 s per child
            "openlineage.client.event_v2",
            "openlineage.client.facet_v2",
            "openlineage.client.serde",
            "pyarrow.parquet",
            "test_tiering",
        ]
    )
    multiprocessing.forkserver.ensure_running()
    return context


@pytest.fixture(scope="module", autouse=True)
def _start_forkserver_early(forkserver: multiprocessing.context.ForkServerContext) -> None:
    """Start the forkserver's imports while the first tests run in this process."""


def _child_main(
    env: dict[str, str], cwd: str, argv: list[str], result: str, log: str, start_at: float
) -> None:
    """Runs in the child: the test's environment, then ``lakebed <argv>``; the outcome (the exception's class
    when it failed) goes to ``result``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    reset_config()
    while time.time() < start_at:  # two movers "at once"
        time.sleep(0.001)
    outcome: dict[str, Any] = {"ok": True}
    try:
        # The `lakebed tier` group itself: the top-level group would turn errors into exit code 1.
        assert argv[0] == "tier"
        tier.main(argv[1:], prog_name="lakebed tier", standalone_mode=False)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        traceback.print_exc()
    Path(result).write_text(json.dumps(outcome))
    os._exit(0 if outcome["ok"] else 1)


@dataclass
class Child:
    process: multiprocessing.process.BaseProcess
    result_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def wait(self, timeout: float = 120) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            os.kill(self.pid, signal.SIGKILL)
            self.process.join()
            raise AssertionError(f"child {self.pid} did not finish within {timeout} s:\n{self.log()}")
        return self.process.exitcode

    def kill(self) -> None:
        if self.process.exitcode is None:
            os.kill(self.pid, signal.SIGKILL)

    @property
    def killed(self) -> bool:
        return self.process.exitcode == -signal.SIGKILL

    def outcome(self) -> dict[str, Any]:
        if not self.result_path.exists():
            return {"ok": False, "error": f"exit code {self.process.exitcode}", "message": self.log()}
        return json.loads(self.result_path.read_text())

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""


StartChild = Callable[..., Child]


@pytest.fixture
def tier_child(forkserver: multiprocessing.context.ForkServerContext, tmp_path: Path) -> Iterator[StartChild]:
    """``tier_child(argv, fault=None, start_at=0.0)`` forks ``lakebed <argv>`` with the test's environment."""
    started: list[Child] = []

    def start(argv: list[str], fault: str | None = None, start_at: float = 0.0) -> Child:
        env = dict(os.environ)
        env.pop(tiering.FAULT_ENV, None)
        if fault is not None:
            env[tiering.FAULT_ENV] = fault
        index = len(started)
        result, log = tmp_path / f"child-{index}.json", tmp_path / f"child-{index}.log"
        process = forkserver.Process(
            target=_child_main, args=(env, os.getcwd(), argv, str(result), str(log), start_at), daemon=True
        )
        process.start()
        child = Child(process, result, log)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()
        child.process.join(10)


def move_argv(before: dt.datetime) -> list[str]:
    return ["tier", "move", TABLE, "--before", iso(before)]


def recall_argv(since: dt.datetime) -> list[str]:
    return ["tier", "recall", TABLE, "--since", iso(since)]


# --- a move, transparent reads, time travel, status, late rows, recall -------------------------------


def test_move_and_recall_read_transparently(s3_cold: S3Target) -> None:
    truth = write_table()
    check_reads(truth, since=[at(200), at(1500)])
    version_before = hot_table().version()
    before_move = pause()

    # A move by the contract's policy (hot_for 30d): rows older than 30 days before `now`.
    now = at(1000) + dt.timedelta(days=30)
    plan = tiering.plan_move(TABLE, now=now)
    assert (plan.target, plan.rows, plan.current) == (
        tiering.to_units(at(1000), pa.timestamp("us", tz="UTC")),
        below(truth, at(1000)).num_rows,
        None,
    )
    result = tiering.move(TABLE, now=now)
    assert result.operation == "move"
    assert result.rows == below(truth, at(1000)).num_rows == 1000
    assert result.watermark == at(1000)
    assert_converged(truth, at(1000))
    check_reads(truth, since=[at(200), at(999), at(1000), at(1500)])
    assert tiering.cold_uri(TABLE, get_config()) == f"{s3_cold.cold_root}/{TABLE}"
    assert ids_of(cold_table()), "the cold table is on the S3 endpoint"

    # Status: the numbers, also as the CLI prints them.
    state = tiering.status(TABLE)
    assert (state.hot_rows, state.cold_rows, state.in_flight) == (1000, 1000, False)
    assert state.hot_bytes > 0 and state.cold_bytes > 0
    assert state.cold_uri.startswith(f"s3://{s3_cold.bucket}/")
    shown = CliRunner().invoke(main, ["tier", "status", TABLE])
    assert shown.exit_code == 0, shown.output
    assert f"watermark {at(1000)}" in shown.output
    assert f"hot   {1000:>14,} rows {state.hot_bytes:>16,} bytes" in shown.output
    assert f"cold  {1000:>14,} rows {state.cold_bytes:>16,} bytes" in shown.output
    assert state.cold_uri in shown.output and "interrupted" not in shown.output

    # Time travel to before the move reads the rows as they were (hot only, then).
    assert_same_rows(read_table(TABLE, as_of=before_move), truth, "as_of before the move")
    assert_same_rows(read_table(TABLE, version=version_before), truth, "version before the move")

    # A second move with nothing new does nothing: no commit on either tier.
    hot_version, cold_version = hot_table().version(), cold_table().version()  # type: ignore[union-attr]
    again = tiering.move(TABLE, before=at(1000))
    assert again.operation == "nothing" and again.rows == 0
    assert (hot_table().version(), cold_table().version()) == (hot_version, cold_version)  # type: ignore[union-attr]
    assert tiering.plan_move(TABLE, before=at(1000)).rows == 0

    # Late rows (timestamps below the watermark, written after the move) are visible at once...
    after_move = pause()
    late = rows(range(N, N + 25), range(100, 1000, 36))
    commit(TABLE, late)
    with_late = pa.concat_tables([truth, late]).sort_by("id")
    check_reads(with_late, since=[at(500), at(1000)])
    # ...and the next move takes them to the cold tier with the rows it moves.
    result = tiering.move(TABLE, before=at(1200))
    assert result.rows == below(with_late, at(1200)).num_rows - 1000
    assert_converged(with_late, at(1200))

    # Recall brings a range back hot; reads stay identical.
    result = tiering.recall(TABLE, since=at(600))
    assert result.operation == "recall"
    assert result.rows == below(with_late, at(1200)).num_rows - below(with_late, at(600)).num_rows
    assert_converged(with_late, at(600))
    check_reads(with_late, since=[at(100), at(600), at(1100)])
    assert tiering.recall(TABLE, since=at(600)).operation == "nothing"

    # The past stays readable through all of it (the cold tier at the version that went with it).
    assert_same_rows(read_table(TABLE, as_of=before_move), truth, "as_of before the first move")
    assert_same_rows(read_table(TABLE, as_of=after_move), truth, "as_of between the move and late rows")
    assert_same_rows(read_table(TABLE, version=version_before), truth, "version before the move")


def test_default_file_cold_tier(lakebed_home: Path) -> None:
    """No cold root configured: the cold tier is a local ``file://`` Delta table under the home."""
    truth = write_table(500)
    result = tiering.move(TABLE, before=at(200))
    assert result.rows == below(truth, at(200)).num_rows
    state = tiering.status(TABLE)
    assert state.cold_uri == f"{(lakebed_home / 'cold').resolve().as_uri()}/{TABLE}"
    assert_converged(truth, at(200))
    check_reads(truth, since=[at(100), at(300)])
    tiering.recall(TABLE, since=at(150))
    assert_converged(truth, at(150))


def test_partitioned_table_with_null_times_moves_every_row_once(lakebed_home: Path) -> None:
    """Partition folders whose values need escaping, files straddling the watermark, and rows with no time
    (null: never below a watermark, so they stay hot, and a straddling file's rewrite keeps them)."""
    contract = TableContract.from_dict(
        {
            "name": TABLE,
            "columns": [*COLUMNS, {"name": "region", "type": "string"}],
            "tiering": {"column": "ts", "hot_for": "30d"},
        }
    )
    n = 600
    data = rows(range(n), [(i * 7919) % n for i in range(n)])
    regions = ["eu west", "us/east", "ap=south%"]
    data = data.append_column("region", pa.array([regions[i % 3] for i in range(n)], pa.string()))
    no_time = pa.array([i % 50 == 0 for i in range(n)])
    data = data.set_column(
        1, "ts", pc.if_else(no_time, pa.scalar(None, data.schema.field("ts").type), data["ts"])
    )
    for start in (0, 300):
        commit(TABLE, data.slice(start, 300), contract=contract, partition_by=["region"])
    truth = read_table(TABLE).sort_by("id")
    assert truth.num_rows == n

    result = tiering.move(TABLE, before=at(250))
    moved = truth.filter(
        pc.fill_null(pc.less(truth["ts"], pa.scalar(at(250), truth.schema.field("ts").type)), False)
    )
    assert result.rows == moved.num_rows
    assert_same_ids(ids_of(cold_table()), moved.column("id").to_pylist(), "cold tier")
    stays = set(range(n)) - set(moved.column("id").to_pylist())
    assert_same_ids(ids_of(hot_table()), sorted(stays), "hot tier")
    assert_same_rows(read_table(TABLE), truth)
    cold = cold_table()
    assert cold is not None and set(cold.metadata().partition_columns) == {"region"}
    assert set(arrow_dataset(cold).to_table(columns=["region"])["region"].to_pylist()) == set(regions)
    tiering.recall(TABLE, since=at(100))
    assert_same_rows(read_table(TABLE), truth)


def test_table_partitioned_by_its_tiering_column(lakebed_home: Path) -> None:
    """Tiering by a date column the table is partitioned by: whole partitions move, none is rewritten."""
    contract = TableContract.from_dict(
        {
            "name": TABLE,
            "columns": [{"name": "id", "type": "int64"}, {"name": "day", "type": "date"}],
            "tiering": {"column": "day", "hot_for": "30d"},
        }
    )
    days = [dt.date(2025, 1, 1) + dt.timedelta(days=i % 10) for i in range(200)]
    data = pa.table({"id": pa.array(range(200), pa.int64()), "day": pa.array(days, pa.date32())})
    commit(TABLE, data, contract=contract, partition_by=["day"])
    truth = read_table(TABLE).sort_by("id")
    hot = hot_table()
    one_day = max(int(a["size_bytes"]) for a in pa.table(hot.get_add_actions(flatten=True)).to_pylist())
    # A quota of about seven partitions' bytes moves the oldest days (partition values stand for statistics).
    quota = quota_target(hot, "day", 7 * one_day, pa.date32())
    assert quota is not None and dt.date(2025, 1, 3) < tiering.from_units(quota, pa.date32()) <= dt.date(
        2025, 1, 5
    )
    result = tiering.move(TABLE, before=dt.date(2025, 1, 4))
    assert result.rows == 60
    cold = cold_table()
    assert cold is not None
    cold_days = arrow_dataset(cold).to_table(columns=["day"])["day"].to_pylist()
    assert sorted(set(cold_days)) == [dt.date(2025, 1, d) for d in (1, 2, 3)]
    assert len(cold_days) == 60
    assert_same_rows(read_table(TABLE), truth)
    assert read_table(TABLE, since=dt.date(2025, 1, 5)).num_rows == 120


def _data_files(root: Path) -> set[str]:
    return {str(f.relative_to(root)) for f in root.rglob("*.parquet")}


def test_vacuum_frees_the_hot_disk_after_the_grace_and_spares_an_interrupted_recall(
    lakebed_home: Path, tier_child: StartChild
) -> None:
    truth = write_table(600, commits=3)
    hot_root = Path(hot_table().table_uri.removeprefix("file://"))
    cold_root = lakebed_home / "cold" / TABLE
    before = _data_files(hot_root)
    tiering.move(TABLE, before=at(400))
    kept = tiering.vacuum(TABLE)  # the policy's grace (7 days): nothing is old enough yet
    assert (kept.hot_files, kept.cold_files) == (0, 0) and _data_files(hot_root) >= before
    version_before = hot_table().version() - 1

    done = tiering.vacuum(TABLE, grace=dt.timedelta(0))
    assert done.hot_files > 0 and done.cold_files == 0
    assert _data_files(hot_root) == _live_files(hot_table(), hot_root), "only the current files remain"
    assert_converged(truth, at(400))
    with pytest.raises(OSError):  # the files of the version before the move are gone, as asked
        read_table(TABLE, version=version_before)

    child = tier_child(recall_argv(at(200)), fault="trimmed")  # cold rows deleted, recall unfinished
    child.wait()
    assert child.killed
    interrupted = tiering.vacuum(TABLE, grace=dt.timedelta(0))
    assert interrupted.cold_files == 0 and "in flight" in interrupted.note
    check_reads(truth)  # readers still read the cold version before the recall's delete
    tiering.recall(TABLE, since=at(200))
    cold_before = _data_files(cold_root)
    result = CliRunner().invoke(main, ["tier", "vacuum", TABLE, "--grace", "0s"])
    assert result.exit_code == 0, result.output
    assert "from the cold tier" in result.output
    assert _data_files(cold_root) < cold_before
    assert_converged(truth, at(200))


def _live_files(table: DeltaTable, root: Path) -> set[str]:
    return {str(Path(uri.removeprefix("file://")).relative_to(root)) for uri in table.file_uris()}


UNREAD_CONTRACT = TableContract.from_dict(
    {"name": TABLE, "columns": COLUMNS, "tiering": {"column": "ts", "unread_for": "30d"}}
)


def test_tiering_policy_needs_a_rule_and_keeps_its_durations() -> None:
    with pytest.raises(ContractError, match="tiering: give hot_for .* unread_for"):
        TableContract.from_dict({"name": TABLE, "columns": COLUMNS, "tiering": {"column": "ts"}})
    policy = UNREAD_CONTRACT.tiering
    assert policy is not None and policy.unread_for == dt.timedelta(days=30)
    assert policy.grace == dt.timedelta(days=7)
    assert policy.model_dump(mode="json")["unread_for"] == "30d"


def test_unread_for_moves_what_no_read_touched(lakebed_home: Path) -> None:
    """``unread_for``: rows older than the age move unless reads touched them within it; reads whose
    range lakebed cannot see count as touching every row."""
    data = rows(range(1000), range(1000))  # ts = BASE + 0..999 hours: all older than 30 days
    for start in range(0, 1000, 100):  # one file per 100 hours, so reads can skip files
        commit(TABLE, data.slice(start, 100), contract=UNREAD_CONTRACT)
    truth = read_table(TABLE).sort_by("id")
    access = lakebed_home / "tiering" / "access" / f"{TABLE}.json"
    assert json.loads(access.read_text())["days"] == {dt.datetime.now(dt.UTC).date().isoformat(): "all"}
    access.unlink()  # forget that full read

    plan = tiering.plan_move(TABLE)  # nothing read yet: everything is older than 30 days and unread
    assert plan.rows == 1000 and "not read for 30d" in plan.reason

    read_table(TABLE, since=at(650))  # touches the files from hour 600 up
    plan = tiering.plan_move(TABLE)
    assert (plan.target, plan.rows) == (tiering.to_units(at(600), pa.timestamp("us", tz="UTC")), 600)
    read_table(TABLE, filter=ds.field("ts") >= pa.scalar(at(420), pa.timestamp("us", tz="UTC")))
    assert tiering.plan_move(TABLE).rows == 400  # the file holding hour 420 starts at hour 400

    tiering.move(TABLE)
    assert_converged(truth, at(400))
    access.unlink()  # forget the checks' full reads
    read_table(TABLE, since=at(900))  # the hot tier alone: hours 900 up
    assert tiering.plan_move(TABLE).rows == 500, "hours 400 to 899 were not read"

    sql(f"SELECT count(*) FROM {TABLE} WHERE ts > TIMESTAMP '2030-01-01'")  # opaque to lakebed
    assert json.loads(access.read_text())["days"] == {dt.datetime.now(dt.UTC).date().isoformat(): "all"}
    assert tiering.plan_move(TABLE).rows == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)  # a month on, nothing read since
    assert tiering.plan_move(TABLE, now=later).rows == 600

    access.write_text("damaged")  # a damaged record keeps everything hot until it ages out
    assert tiering.plan_move(TABLE).rows == 0
    read_table(TABLE, since=at(950))
    assert json.loads(access.read_text())["days"] == {dt.datetime.now(dt.UTC).date().isoformat(): "all"}


def test_an_access_record_waits_briefly_for_its_lock(lakebed_home: Path) -> None:
    """A read whose access record is locked by another process waits about 50 ms, then leaves no record
    (it never fails nor stalls the read); once the lock is free, reads record again."""
    import subprocess
    import sys

    config = get_config()
    folder = lakebed_home / "tiering" / "access"
    folder.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print(flush=True); "
            "sys.stdin.read()",
            str(folder / f"{TABLE}.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()  # the other process holds the lock
        started = time.monotonic()
        tier_access.record(TABLE, 5, config)
        assert time.monotonic() - started < 1.0
        assert not (folder / f"{TABLE}.json").exists()
    finally:
        holder.communicate(b"")
    tier_access.record(TABLE, 5, config)
    assert json.loads((folder / f"{TABLE}.json").read_text())["days"] == {
        dt.datetime.now(dt.UTC).date().isoformat(): 5
    }


# --- the hot table changes under a move -------------------------------------------------------------


def test_a_compaction_just_before_the_hot_removal_doubles_nothing(lakebed_home: Path) -> None:
    from lakebed.pipelines.maintenance import maintain

    truth = write_table(600, commits=6)
    calls: list[bool] = []
    real = DeltaTable.create_write_transaction

    def compact_first(self: DeltaTable, *args: Any, **kwargs: Any) -> Any:
        props = kwargs.get("commit_properties")
        names = [t.app_id for t in (props.app_transactions or [])] if props is not None else []
        if not calls and any(n.startswith("tier-done") for n in names):
            calls.append(True)
            maintain(TABLE)  # rewrites (and removes) the files the move copied
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DeltaTable, "create_write_transaction", compact_first)
        tiering.move(TABLE, before=at(300))
    assert calls == [True]
    assert_converged(truth, at(300))


def test_old_rows_deleted_and_late_rows_written_during_a_move(
    lakebed_home: Path, tier_child: StartChild
) -> None:
    truth = write_table(600, commits=3)
    child = tier_child(move_argv(at(300)), fault="copied")  # copied to cold, not yet removed from hot
    child.wait()
    assert child.killed
    victim = below(truth, at(300)).column("id")[0].as_py()
    DeltaTable(Catalog(get_config()).get(TABLE).uri).delete(f"id = {victim}")  # rewrites a copied file
    late = rows([600], [10])
    commit(TABLE, late)
    want = pa.concat_tables([truth.filter(pc.not_equal(truth["id"], victim)), late]).sort_by("id")
    check_reads(want)
    tiering.move(TABLE, before=at(300))  # finishes the interrupted move from hot as it is now
    assert_converged(want, at(300))


def test_an_interrupted_first_move_then_a_further_move_in_one_run(
    s3_cold: S3Target, tier_child: StartChild
) -> None:
    truth = write_table()
    child = tier_child(move_argv(at(500)), fault="intent")
    child.wait()
    assert child.killed
    result = tiering.move(TABLE, before=at(1000))  # resumes (creating cold), then moves further
    assert any("interrupted" in note for note in result.notes) and result.operation == "move"
    assert_converged(truth, at(1000))


def test_timestamps_finer_than_the_statistics(lakebed_home: Path) -> None:
    """Delta keeps timestamp statistics to the millisecond: a file whose largest value is 700 us past the
    watermark's millisecond is not wholly below it."""
    base = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    times = [base + dt.timedelta(microseconds=us) for us in (0, 100, 300, 700)]
    data = pa.table(
        {
            "id": pa.array(range(4), pa.int64()),
            "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
            "v": pa.array([0.0, 0.5, 1.0, 1.5]),
        }
    )
    commit(TABLE, data, contract=CONTRACT)
    watermark = base + dt.timedelta(microseconds=500)
    assert tiering.move(TABLE, before=watermark).rows == 3
    assert sorted(read_table(TABLE, since=watermark).column("id").to_pylist()) == [3]
    assert sorted(read_table(TABLE).column("id").to_pylist()) == [0, 1, 2, 3]


def test_a_column_added_after_a_move_reaches_cold_and_recalls(lakebed_home: Path) -> None:
    truth = write_table(400)
    tiering.move(TABLE, before=at(100))
    wider = rows(range(400, 420), range(20)).append_column("note", pa.array(["x"] * 20, pa.string()))
    commit(TABLE, wider)  # a new column, on rows below the watermark
    tiering.move(TABLE, before=at(200))
    cold = cold_table()
    assert cold is not None and "note" in pa.schema(cold.schema().to_arrow()).names
    frame = scan_table(TABLE).filter(pl.col("note") == "x").collect()
    assert frame.height == 20
    assert read_table(TABLE).num_rows == 420
    tiering.recall(TABLE, since=at(0))
    assert read_table(TABLE, filter=ds.field("note") == "x").num_rows == 20
    assert read_table(TABLE).num_rows == 420 and not tiering.status(TABLE).in_flight
    del truth


def test_a_home_whose_path_needs_escaping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "lake bed%home"
    monkeypatch.setenv("LAKEBED_HOME", str(home))
    reset_config()
    try:
        truth = write_table(300)
        tiering.move(TABLE, before=at(100))
        assert_converged(truth, at(100))
        tiering.vacuum(TABLE, grace=dt.timedelta(0))
        check_reads(truth)
    finally:
        reset_config()


def test_reads_of_an_unread_for_table_never_fail_on_recording(lakebed_home: Path) -> None:
    contract = TableContract.from_dict(
        {
            "name": TABLE,
            "columns": [*COLUMNS, {"name": "s", "type": "string"}],
            "tiering": {"column": "ts", "unread_for": "30d"},
        }
    )
    commit(TABLE, rows(range(50), range(50), text=True), contract=contract)
    assert read_table(TABLE, filter=ds.field("s") == "row-7").num_rows == 1
    assert read_table(TABLE, filter=ds.field("s").isin(["row-1", "row-2"])).num_rows == 2


def test_late_rows_move_to_cold_on_a_move_to_the_same_watermark(s3_cold: S3Target) -> None:
    truth = write_table(400)
    tiering.move(TABLE, before=at(200))
    late = rows(range(400, 410), range(0, 200, 20))
    commit(TABLE, late)
    with_late = pa.concat_tables([truth, late]).sort_by("id")
    check_reads(with_late)
    plan = tiering.plan_move(TABLE, before=at(200))
    assert plan.rows == late.num_rows  # the plan sees them...
    tiering.move(TABLE, before=at(200))  # ...and the move must take them to cold, not drop them
    assert_converged(with_late, at(200))


# --- kill -9 at every step ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [pytest.param(True, id="first-move", marks=pytest.mark.slow), pytest.param(False, id="later-move")],
)
@pytest.mark.parametrize("step", ["intent", "copy", "copied", "delete"])
def test_kill_9_during_a_move_loses_nothing_and_a_rerun_converges(
    s3_cold: S3Target, tier_child: StartChild, step: str, first: bool
) -> None:
    truth = write_table()
    if not first:
        tiering.move(TABLE, before=at(400))
    child = tier_child(move_argv(at(1000)), fault=step)
    child.wait()
    assert child.killed, f"the mover was not killed at {step!r}: {child.outcome()}"
    check_reads(truth, since=[at(300), at(1000), at(1500)])
    if not (first and step in ("intent", "copy")):  # those: see test_status_reports_an_interrupted_first_move
        assert tiering.status(TABLE).in_flight
        pending = CliRunner().invoke(main, ["tier", "status", TABLE])
        assert "interrupted move or recall is pending" in pending.output, pending.output

    result = tiering.move(TABLE, before=at(1000))  # finishes the interrupted move
    assert any("interrupted" in note for note in result.notes), result
    assert_converged(truth, at(1000))
    assert tiering.move(TABLE, before=at(1000)).operation == "nothing"


def test_status_reports_an_interrupted_first_move(s3_cold: S3Target, tier_child: StartChild) -> None:
    write_table(400)
    child = tier_child(move_argv(at(200)), fault="intent")
    child.wait()
    assert child.killed
    assert tiering.status(TABLE).in_flight
    pending = CliRunner().invoke(main, ["tier", "status", TABLE])
    assert "interrupted move or recall is pending" in pending.output, pending.output


@pytest.mark.parametrize(
    ("step", "rerun"),
    [
        ("recalled", "move"),
        pytest.param("intent", "recall", marks=pytest.mark.slow),  # `intent` is covered by the move test
        pytest.param("intent", "move", marks=pytest.mark.slow),
        pytest.param("recalled", "recall", marks=pytest.mark.slow),
    ],
)
def test_kill_9_during_a_recall_loses_nothing_and_a_rerun_converges(
    s3_cold: S3Target, tier_child: StartChild, step: str, rerun: str
) -> None:
    truth = write_table()
    tiering.move(TABLE, before=at(1000))
    child = tier_child(recall_argv(at(600)), fault=step)
    child.wait()
    assert child.killed, f"the recall was not killed at {step!r}: {child.outcome()}"
    assert tiering.status(TABLE).in_flight
    check_reads(truth, since=[at(300), at(600), at(1000)])

    if rerun == "recall":
        tiering.recall(TABLE, since=at(600))
    else:  # what `tier status` advises: `tier move` finishes whatever was interrupted
        tiering.move(TABLE, before=at(600))
    assert_converged(truth, at(600))


@pytest.mark.parametrize("step", ["recalled", pytest.param("trimmed", marks=pytest.mark.slow)])
def test_rows_written_while_a_recall_is_interrupted_are_read(
    s3_cold: S3Target, tier_child: StartChild, step: str
) -> None:
    """Rows written to hot below the recall's target (and below the old watermark) while the recall is
    interrupted are read at once, and stay once the rerun finishes it."""
    truth = write_table()
    tiering.move(TABLE, before=at(1000))
    child = tier_child(recall_argv(at(600)), fault=step)
    child.wait()
    assert child.killed, f"the recall was not killed at {step!r}: {child.outcome()}"
    late = rows(range(N, N + 12), [100, 300, 500, 599, 600, 700, 900, 999, 1000, 1200, 1500, 1999])
    commit(TABLE, late)
    with_late = pa.concat_tables([truth, late]).sort_by("id")
    check_reads(with_late, since=[at(300), at(600), at(1000)])
    tiering.recall(TABLE, since=at(600))
    check_reads(with_late, since=[at(300), at(600), at(1000)])
    tiering.move(TABLE, before=at(600))  # the late rows below the watermark go cold
    assert_converged(with_late, at(600))


def test_kill_9_after_the_copy_then_late_rows_then_rerun(s3_cold: S3Target, tier_child: StartChild) -> None:
    """Rows below the target written while a move is interrupted are neither lost nor doubled by the rerun,
    and the next move leaves none of them hot below the watermark."""
    truth = write_table(400)
    tiering.move(TABLE, before=at(100))
    child = tier_child(move_argv(at(200)), fault="copied")
    child.wait()
    assert child.killed
    late = rows(range(400, 420), range(120, 200, 4))  # between the old and the new watermark
    commit(TABLE, late)
    with_late = pa.concat_tables([truth, late]).sort_by("id")
    tiering.move(TABLE, before=at(200))  # finishes the interrupted move
    state = tiering.status(TABLE)
    assert not state.in_flight and state.watermark == at(200)
    check_reads(with_late)
    tiering.move(TABLE, before=at(300))
    assert_converged(with_late, at(300))


def test_late_rows_are_visible_while_a_move_is_interrupted(s3_cold: S3Target, tier_child: StartChild) -> None:
    truth = write_table(400)
    tiering.move(TABLE, before=at(100))
    child = tier_child(move_argv(at(200)), fault="copied")
    child.wait()
    assert child.killed
    late = rows(range(400, 420), range(120, 200, 4))
    commit(TABLE, late)
    check_reads(pa.concat_tables([truth, late]).sort_by("id"))


# --- kill -9 at random moments ------------------------------------------------------------------------


def _random_kills(tier_child: StartChild, iterations: int, n: int) -> None:
    seed = int(os.environ.get("LAKEBED_TEST_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"kill -9 seed {seed} (LAKEBED_TEST_SEED={seed} reproduces)")
    truth = write_table(n, commits=4)
    ids, total = truth.column("id").to_pylist(), float(pc.sum(truth.column("v")).as_py())

    # How long an operation takes here, so the kills land anywhere in it.
    started = time.monotonic()
    child = tier_child(move_argv(at(n // 10)))
    assert child.wait() == 0, child.log()
    duration = time.monotonic() - started
    kills, log = 0, []
    for iteration in range(iterations):
        current = tiering.status(TABLE).watermark  # cold's watermark when an operation is pending
        watermark = (current - BASE) // dt.timedelta(hours=1) if current is not None else 0
        can_move = watermark < n * 8 // 10
        if can_move and (rng.random() < 0.6 or watermark == 0):
            target = rng.randint(watermark + 1, n * 8 // 10)
            argv = move_argv(at(target))
        else:
            target = rng.randint(0, watermark - 1)
            argv = recall_argv(at(target))
        delay = rng.uniform(0.0, duration)
        child = tier_child(argv)
        time.sleep(delay)
        child.kill()
        code = child.wait()
        kills += child.killed
        log.append(f"{iteration}: {argv[1]} {target} after {delay:.2f}s -> {code}")
        if code not in (0, -signal.SIGKILL):
            raise AssertionError(f"seed {seed}: {log[-1]}: {child.outcome()}")
        try:
            quick_reads(ids, total)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, after {log}: {exc}") from None
    assert kills, f"seed {seed}: no operation was killed mid-way ({log})"
    final = n * 9 // 10  # above every target the loop may have left pending
    tiering.move(TABLE, before=at(final))
    state = tiering.status(TABLE)
    assert not state.in_flight and state.watermark == at(final)
    assert_same_ids(ids_of(hot_table(), ts_below(at(final))), [], "hot below the watermark")
    assert_same_ids(ids_of(cold_table()), below(truth, at(final)).column("id").to_pylist(), "cold tier")
    quick_reads(ids, total)


def test_kill_9_at_random_moments_quick(s3_cold: S3Target, tier_child: StartChild) -> None:
    _random_kills(tier_child, iterations=3, n=4_000)


@pytest.mark.slow
def test_kill_9_at_random_moments_soak(s3_cold: S3Target, tier_child: StartChild) -> None:
    _random_kills(tier_child, iterations=25, n=100_000)


# --- the object store goes down ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [pytest.param(True, id="first-move", marks=pytest.mark.slow), pytest.param(False, id="later-move")],
)
def test_store_down_mid_copy_is_a_clear_error_and_a_retry_succeeds(
    s3_cold_via_proxy: tuple[S3Target, S3Proxy], first: bool
) -> None:
    target, proxy = s3_cold_via_proxy
    truth = write_table()
    if not first:
        tiering.move(TABLE, before=at(400))
    hot_before = sorted(ids_of(hot_table()))
    copying = []

    def store_goes_down(step: str, done: int, total: int) -> None:
        if step == "copy" and proxy.running:  # rows are streaming to the store: take it down
            copying.append((done, total))
            proxy.stop()

    with pytest.raises(TierError) as failure:
        tiering.move(TABLE, before=at(1000), progress=store_goes_down)
    assert copying, "the store must go down during the copy"
    message = str(failure.value)
    assert f"s3://{target.bucket}" in message and "copy" in message, message
    chain = "".join(traceback.format_exception(failure.value))
    assert target.secret_key not in chain
    assert sorted(ids_of(hot_table())) == hot_before, "hot data must be intact"

    proxy.start()
    check_reads(truth)
    tiering.move(TABLE, before=at(1000))
    assert_converged(truth, at(1000))


@pytest.mark.slow
def test_store_down_before_a_move_is_a_tier_error(s3_cold_via_proxy: tuple[S3Target, S3Proxy]) -> None:
    target, proxy = s3_cold_via_proxy
    truth = write_table()
    tiering.move(TABLE, before=at(400))
    proxy.stop()
    with pytest.raises(TierError, match=f"s3://{target.bucket}") as failure:
        tiering.move(TABLE, before=at(1000))
    assert target.secret_key not in "".join(traceback.format_exception(failure.value))
    proxy.start()
    tiering.move(TABLE, before=at(1000))
    assert_converged(truth, at(1000))


# --- concurrent readers and movers ------------------------------------------------------------------


def test_readers_see_the_same_rows_during_a_move_and_a_recall(
    s3_cold: S3Target, tier_child: StartChild
) -> None:
    truth = write_table(20_000, commits=3)
    want = (truth.num_rows, float(pc.sum(truth.column("v")).as_py()))
    seen: list[tuple[str, float, tuple[int, float]]] = []
    errors: list[str] = []
    stop = threading.Event()

    def read_arrow() -> tuple[int, float]:
        data = read_table(TABLE, columns=["v"])
        return data.num_rows, float(pc.sum(data.column("v")).as_py())

    def read_polars() -> tuple[int, float]:
        frame = scan_table(TABLE).select(pl.len(), pl.col("v").sum()).collect()
        return int(frame.item(0, 0)), float(frame.item(0, 1))

    readers = {"read_table": read_arrow, "sql": sql_count_sum, "scan_table": read_polars}

    def reader() -> None:
        while not stop.is_set():
            for name, read in readers.items():
                try:
                    seen.append((name, time.monotonic(), read()))
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(f"{name}: {type(exc).__name__}: {exc}"[:500])

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        windows = []
        for argv in (move_argv(at(15_000)), recall_argv(at(8_000))):
            started = time.monotonic()
            child = tier_child(argv)
            assert child.wait() == 0, child.log()
            windows.append((started, time.monotonic()))
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors[:5]
    wrong = [(name, got) for name, _, got in seen if got != want]
    assert not wrong, f"{len(wrong)} of {len(seen)} reads differ from {want}: {wrong[:5]}"
    for started, ended in windows:
        during = [name for name, moment, _ in seen if started <= moment <= ended]
        assert len(during) >= 3, f"only {len(during)} reads overlapped the operation"
    assert_converged(truth, at(8_000))


@pytest.mark.parametrize(
    "targets",
    [
        pytest.param((1000,), id="1-round"),
        pytest.param((500, 800, 1100, 1400), id="4-rounds", marks=pytest.mark.slow),
    ],
)
def test_two_movers_at_once_one_wins_and_the_end_is_correct(
    s3_cold: S3Target, tier_child: StartChild, targets: tuple[int, ...]
) -> None:
    """Two `tier move` processes started at the same instant with the same target."""
    truth = write_table()
    tiering.move(TABLE, before=at(200))  # the first move's race: test_a_second_mover_during_the_copy
    outcomes = []
    for target in targets:
        start_at = time.time() + 0.3
        pair = [tier_child(move_argv(at(target)), start_at=start_at) for _ in range(2)]
        codes = [child.wait() for child in pair]
        results = [child.outcome() for child in pair]
        outcomes.append((target, results))
        assert 0 in codes, f"neither mover finished: {results}"
        assert_converged(truth, at(target))
        for result in results:
            assert result["ok"] or result["error"] == "TierConflictError", (
                f"target {target}: the other mover must stop cleanly (TierConflictError) or find nothing "
                f"to do, got {result}"
            )
    print(outcomes)


@pytest.mark.parametrize(
    "first",
    [pytest.param(True, id="first-move", marks=pytest.mark.slow), pytest.param(False, id="later-move")],
)
def test_a_second_mover_during_the_copy(s3_cold: S3Target, tier_child: StartChild, first: bool) -> None:
    """Deterministic interleaving: mover B runs from start to end while mover A is copying (A's progress
    callback runs B). B finishes A's operation; A must then stop with TierConflictError (or find it done)
    and nothing may be doubled, now or after the next move."""
    truth = write_table()
    if not first:
        tiering.move(TABLE, before=at(400))
    other: list[dict[str, Any]] = []

    def run_other_mover(step: str, done: int, total: int) -> None:
        if step == "copy" and not other:
            child = tier_child(move_argv(at(1000)))
            child.wait()
            other.append(child.outcome())

    with contextlib.suppress(TierConflictError):
        tiering.move(TABLE, before=at(1000), progress=run_other_mover)
    assert other == [{"ok": True}]
    assert_converged(truth, at(1000))
    tiering.move(TABLE, before=at(1500))
    assert_converged(truth, at(1500))


def test_a_second_mover_before_the_intent(s3_cold: S3Target, tier_child: StartChild) -> None:
    """Deterministic interleaving: mover B commits its intent after mover A planned its move (B runs, and
    is killed, just before A's intent commit). A must stop with TierConflictError or finish B's
    operation; a rerun converges."""
    truth = write_table()
    tiering.move(TABLE, before=at(400))
    real_begin = Mover.begin
    other: list[bool] = []

    def another_mover_starts_then_begin(self: Any, target: int) -> int:
        if not other:
            child = tier_child(move_argv(at(1000)), fault="intent")
            child.wait()
            other.append(child.killed)
        return real_begin(self, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Mover, "begin", another_mover_starts_then_begin)
        with contextlib.suppress(TierConflictError):
            tiering.move(TABLE, before=at(1000))
    assert other == [True]
    tiering.move(TABLE, before=at(1000))
    assert_converged(truth, at(1000))


def test_a_second_mover_during_the_delete(
    s3_cold: S3Target, tier_child: StartChild, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic interleaving: mover B runs from start to end just before mover A's hot commit (3)."""
    truth = write_table()
    tiering.move(TABLE, before=at(400))
    other: list[dict[str, Any]] = []

    def run_other_mover() -> None:
        if not other:
            child = tier_child(move_argv(at(1000)))
            child.wait()
            other.append(child.outcome())

    with pytest.MonkeyPatch.context() as patch:
        for name in ("delete", "create_write_transaction"):  # whichever commit (3) on hot uses
            real = getattr(DeltaTable, name)

            def hooked(self: DeltaTable, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
                if not self.table_uri.startswith("s3://"):  # the hot table (cold is on S3)
                    run_other_mover()
                return _real(self, *args, **kwargs)

            patch.setattr(DeltaTable, name, hooked)
        with contextlib.suppress(TierConflictError):
            tiering.move(TABLE, before=at(1000))
    assert other == [{"ok": True}]
    assert_converged(truth, at(1000))


# --- credentials and buckets --------------------------------------------------------------------------

WRONG_SECRET = "wrong-secret-for-lakebed-9d2e71"
PointLakebed = Callable[..., "S3Target"]


def _with_wrong_credentials(
    point_lakebed: PointLakebed, server: MotoServer, auth: tuple[str, str, str], which: str
) -> tuple[str, str]:
    """Tier a table with good credentials, then switch lakebed to bad ones; returns (bucket, good secret)."""
    bucket, key, secret = auth
    point_lakebed(server.endpoint, bucket, access_key=key, secret_key=secret)
    write_table(400)
    tiering.move(TABLE, before=at(100))
    bad_key = key if which == "wrong-secret" else "AKIAUNKNOWNLAKEBED01"
    point_lakebed(server.endpoint, bucket, access_key=bad_key, secret_key=WRONG_SECRET)
    return bucket, secret


@pytest.mark.parametrize("which", ["wrong-secret", "unknown-key"])
def test_wrong_credentials_are_a_tier_error_naming_the_bucket_never_the_secret(
    s3_server: MotoServer, s3_authenticating: tuple[str, str, str], point_lakebed: PointLakebed, which: str
) -> None:
    bucket, secret = _with_wrong_credentials(point_lakebed, s3_server, s3_authenticating, which)
    calls: dict[str, Callable[[], object]] = {
        "move": lambda: tiering.move(TABLE, before=at(200)),
        "recall": lambda: tiering.recall(TABLE, since=at(50)),
        "read_table": lambda: read_table(TABLE),
        "status": lambda: tiering.status(TABLE),
    }
    for name, call in calls.items():
        with pytest.raises(TierError) as failure:
            call()
        assert f"s3://{bucket}" in str(failure.value), f"{name}: the error does not name the bucket"
        text = "".join(traceback.format_exception(failure.value))  # the chained causes too
        assert WRONG_SECRET not in text and secret not in text, f"{name} shows the secret: {text}"


def _missing_bucket(server: MotoServer, point_lakebed: PointLakebed) -> S3Target:
    return point_lakebed(server.endpoint, f"lakebed-missing-{time.time_ns() % 10**12}")


def test_missing_bucket_is_a_tier_error_naming_it_and_a_move_works_once_it_exists(
    s3_server: MotoServer, point_lakebed: PointLakebed
) -> None:
    target = _missing_bucket(s3_server, point_lakebed)
    truth = write_table(400)
    with pytest.raises(TierError) as failure:
        tiering.move(TABLE, before=at(200))
    assert f"s3://{target.bucket}" in str(failure.value), failure.value
    assert target.secret_key not in "".join(traceback.format_exception(failure.value))
    assert sorted(ids_of(hot_table())) == list(range(400)), "hot data must be intact"
    s3_server.client().create_bucket(Bucket=target.bucket)
    tiering.move(TABLE, before=at(200))
    assert_converged(truth, at(200))


def test_a_failed_move_to_a_missing_bucket_leaves_the_table_readable(
    s3_server: MotoServer, point_lakebed: PointLakebed
) -> None:
    _missing_bucket(s3_server, point_lakebed)
    truth = write_table(400)
    with pytest.raises(Exception):  # noqa: B017, PT011
        tiering.move(TABLE, before=at(200))
    check_reads(truth)


# --- string columns -----------------------------------------------------------------------------------


def test_since_reads_both_tiers_of_a_table_with_a_string_column(s3_cold: S3Target) -> None:
    truth = write_table(400, text=True)
    tiering.move(TABLE, before=at(200))
    check_reads(truth)
    assert_same_rows(
        read_table(TABLE, since=at(100)), at_or_after(truth, at(100)), "since below the watermark"
    )


@pytest.mark.slow
def test_reads_of_a_table_with_a_string_column_while_a_move_is_interrupted(
    s3_cold: S3Target, tier_child: StartChild
) -> None:
    truth = write_table(400, text=True)
    tiering.move(TABLE, before=at(100))
    child = tier_child(move_argv(at(200)), fault="copied")
    child.wait()
    assert child.killed
    check_reads(truth)
