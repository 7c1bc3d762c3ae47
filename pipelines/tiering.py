"""Hot/cold tiering: a table's older rows live in a cold Delta table on object storage, transparently.

A tiered table is two Delta tables: the hot one (the catalog's URI, local; every write lands there) and the
cold one (``<cold root>/<table>``, e.g. ``s3://bucket/prefix/<table>``), split by a watermark on the
contract's ``tiering.column``: cold holds the rows below it. Watermarks are int64 in the column's units
(microseconds since the epoch for timestamps, days for dates, the value for integers).

State lives in Delta application transactions, never in side files:

* cold ``tier:<table>`` = the watermark (the cold table is the truth about what it holds), and
  ``tier-hot:<table>`` = the hot version the last copy read;
* hot ``tier-op:<table>`` = the number of the last move or recall started (with ``tier-target:<table>``,
  the watermark it aims at), ``tier-done:<table>`` = the number of the last one finished, and with it
  ``tier-wm:<table>`` = the watermark and ``tier-cold:<table>`` = the cold version that goes with it.

A move is three commits: (1) hot: the intent (``tier-op`` + 1); (2) cold: the hot rows below the target,
with ``tier:<table>`` = target; (3) hot: delete those rows, with ``tier-done``/``tier-wm``/``tier-cold``.
A recall is the mirror: (1) intent, (2) hot: append the cold rows at or above the target, (3) cold: delete
them with ``tier:<table>`` = target, (4) hot: ``tier-done``/``tier-wm``/``tier-cold``.

Readers (:func:`open_tiers`) load hot first and take all of it, and cold as of ``tier-cold`` (the cold
version of the last finished operation): a move removes its rows from hot in the commit that finishes it,
so until then hot holds every row being copied and cold is read as it was before the copy. One state
differs: a recall past its hot append (``tier-recalled`` = ``tier-op``) has its rows in hot and, until its
cold delete, in cold too; then cold is read below the recall's target only. Every state between two
commits reads every row exactly once, rows written to hot meanwhile included, so a crash at any point is
harmless and a rerun (``move``/``recall`` resume an interrupted operation first) converges. Two movers at
once: the second one's intent commit conflicts on ``tier-op`` and it stops with
:class:`TierConflictError`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TierConflictError, TierError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.pipelines import tier_access
from lakebed.pipelines.catalog import Catalog, TableEntry
from lakebed.pipelines.delta import RunContext, table_size
from lakebed.pipelines.deltalog import arrow_dataset, local_path
from lakebed.pipelines.tier_store import Copied, cold_files, in_parallel, store_errors
from lakebed.schemas.tiering import TierPolicy

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(step, rows_done, rows_total)``."""

FAULT_ENV = "LAKEBED_TIER_FAULT"
"""Fault injection for crash tests: ``<step>`` makes the mover kill its own process (SIGKILL) at that step:
``intent`` (after the intent commit), ``copy`` (mid-copy, before the cold commit), ``copied`` (after the cold
commit), ``delete`` (before the hot delete), ``recalled`` (after a recall's hot append), ``trimmed`` (after a
recall's cold delete)."""


# --- where and what --------------------------------------------------------------------------------


def cold_uri(table: str, config: LakebedConfig) -> str:
    return f"{config.cold_uri.rstrip('/')}/{table}"


def storage_options(uri: str, config: LakebedConfig) -> dict[str, str] | None:
    """delta-rs storage options for ``uri`` (the AWS_* settings for ``s3://``; none for local paths)."""
    return config.s3.to_storage_options() if uri.startswith("s3://") else None


def policy_of(entry: TableEntry) -> TierPolicy | None:
    return entry.contract.tiering if entry.contract is not None else None


def _app(name: str, table: str) -> str:
    return f"{name}:{table}"


def _txn(table: DeltaTable, app_id: str) -> int | None:
    return table.transaction_version(app_id)


def _in_flight(hot: DeltaTable, table: str) -> bool:
    """Whether a move or recall was started and not finished, as of ``hot``'s loaded version."""
    return (_txn(hot, _app("tier-op", table)) or 0) != (_txn(hot, _app("tier-done", table)) or 0)


def _open(uri: str, config: LakebedConfig, version: int | None = None) -> DeltaTable | None:
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options(uri, config))
    except DeltaTableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:  # an unreachable store, a missing bucket, wrong credentials
        raise TierError(f"cannot open the cold tier {_where(uri)}: {_scrub(str(exc), config)}") from exc


def _exists(uri: str, config: LakebedConfig) -> bool:
    """Whether a Delta table exists at ``uri`` (False when the store cannot be reached)."""
    try:
        return _open(uri, config) is not None
    except TierError:
        return False


def _where(uri: str) -> str:
    return uri if not uri.startswith("s3://") else f"s3://{uri[5:].split('/', 1)[0]} ({uri})"


def _scrub(text: str, config: LakebedConfig) -> str:
    from lakebed.lineage.events import scrub

    return scrub(text, config.secret_values())[:500]


# --- watermarks ------------------------------------------------------------------------------------


def to_units(value: Any, dtype: pa.DataType) -> int:
    """A column value (datetime, date, ISO text or int) as a watermark in the column's units."""
    if pa.types.is_timestamp(dtype):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time())
        if isinstance(value, dt.datetime):
            value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return int(value)
    if pa.types.is_date(dtype):
        if isinstance(value, str):
            value = dt.date.fromisoformat(value[:10])
        if isinstance(value, dt.datetime):
            value = value.date()
        if isinstance(value, dt.date):
            return (value - dt.date(1970, 1, 1)).days
        return int(value)
    return int(value)


def from_units(units: int | None, dtype: pa.DataType) -> Any:
    """A watermark as a value people read (a datetime, date or int)."""
    if units is None:
        return None
    if pa.types.is_timestamp(dtype):
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=units)
    if pa.types.is_date(dtype):
        return dt.date(1970, 1, 1) + dt.timedelta(days=units)
    return units


def literal(units: int, dtype: pa.DataType) -> pa.Scalar:
    """The watermark as an Arrow scalar of the column's type (for dataset filters)."""
    if pa.types.is_timestamp(dtype):
        return pa.scalar(units, pa.int64()).cast(pa.timestamp("us", tz=dtype.tz)).cast(dtype)
    if pa.types.is_date(dtype):
        return pa.scalar(units, pa.int32()).cast(pa.date32()).cast(dtype)
    return pa.scalar(units, pa.int64()).cast(dtype)


def sql_units(column: str, dtype: pa.DataType) -> str:
    """A DuckDB expression giving ``column`` in watermark units."""
    quoted = '"' + column.replace('"', '""') + '"'
    if pa.types.is_timestamp(dtype):
        return f"epoch_us({quoted})"
    if pa.types.is_date(dtype):
        return f"({quoted} - DATE '1970-01-01')"
    return quoted


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One tier as a reader takes it: the Delta table (at the right version), and whether only its rows
    below the watermark are read (cold while a recall is in flight)."""

    table: DeltaTable
    below: bool = False


class Tiers:
    """A table across its tiers at one moment (see the module docstring for how it is decided). The cold
    table is opened only when a read needs it."""

    def __init__(
        self,
        name: str,
        hot: DeltaTable,
        *,
        column: str | None = None,
        watermark: int | None = None,
        in_flight: bool = False,
        open_cold: Callable[[], DeltaTable | None] | None = None,
        policy: TierPolicy | None = None,
    ) -> None:
        self.name = name
        self.hot = hot
        self.policy = policy
        self.column = column
        self.watermark = watermark
        self.in_flight = in_flight  # a recall past its hot append: cold is read below the watermark only
        self._cold: DeltaTable | None = None
        self._open_cold = open_cold

    @property
    def tiered(self) -> bool:
        return self._cold is not None or self._open_cold is not None

    @property
    def cold(self) -> DeltaTable | None:
        if self._cold is None and self._open_cold is not None:
            self._cold = self._open_cold()
            if self._cold is None:
                raise TierError(
                    f"table {self.name!r} has rows on the cold tier but its cold table is missing "
                    "(was LAKEBED_COLD_ROOT changed, or the cold prefix deleted?)"
                )
        return self._cold

    def hot_only(self) -> Tiers:
        return Tiers(self.name, self.hot, policy=self.policy)

    def record_read(self, condition: ds.Expression | None, config: LakebedConfig) -> None:
        """For an ``unread_for`` policy: record the lowest hot value a read with ``condition`` touched (the
        lowest of the hot files its statistics do not rule out; every row without a condition). Never
        fails the read: when the files cannot be worked out, every row counts as read."""
        if self.policy is None or self.policy.unread_for is None:
            return
        lowest: int | None = None
        if condition is not None:
            try:
                touched = {
                    Path(f.path).name for f in self.hot.to_pyarrow_dataset().get_fragments(filter=condition)
                }
                if not touched:
                    return  # no hot file: the read was answered by the cold tier alone
                column = self.policy.column
                lows = [
                    low
                    for action, low, _ in _file_bounds(self.hot, column, self.hot_column_type(column))
                    if Path(_file(action["path"])).name in touched
                ]
                known = [low for low in lows if low is not None]
                lowest = (
                    min(known) if known and len(known) == len(lows) else None
                )  # a file without stats: all
            except Exception as exc:  # noqa: BLE001 - recording must never fail a read
                log.debug(
                    "%s: cannot tell which hot files a read touched (%s); counting every row", self.name, exc
                )
        tier_access.record(self.name, lowest, config)

    @property
    def dtype(self) -> pa.DataType | None:
        return None if self.column is None else self.hot_column_type(self.column)

    def parts(self) -> list[Part]:
        if not self.tiered:
            return [Part(self.hot)]
        cold = self.cold
        assert cold is not None
        return [Part(self.hot), Part(cold, below=self.in_flight)]

    def condition(self, part: Part) -> ds.Expression | None:
        if not part.below or self.column is None or self.watermark is None:
            return None
        assert self.dtype is not None
        return ds.field(self.column) < literal(self.watermark, self.dtype)

    def hot_column_type(self, column: str) -> pa.DataType:
        return pa.schema(self.hot.schema().to_arrow()).field(column).type

    # DeltaTable-like, so readers that take a Delta table (feature retrieval) take tiers alike.
    def version(self) -> int:
        return self.hot.version()

    def schema(self) -> Any:
        return self.hot.schema()

    def to_pyarrow_dataset(self) -> ds.Dataset:
        return self.dataset()

    def skip_cold(self, since: int | None) -> bool:
        """Whether rows with column >= ``since`` (watermark units) can be read from hot alone."""
        return since is not None and self.watermark is not None and since >= self.watermark

    def dataset(self, schema: pa.Schema | None = None) -> ds.Dataset:
        """One pyarrow dataset over both tiers (when an operation is in flight, the rows are read now)."""
        parts = self.parts()
        if len(parts) == 1:
            return arrow_dataset(self.hot, schema)
        schema = schema or pa.schema(self.hot.schema().to_arrow())
        if not self.in_flight:
            return ds.dataset([arrow_dataset(p.table, schema) for p in parts])
        tables = [arrow_dataset(p.table, schema).to_table(filter=self.condition(p)) for p in parts]
        return ds.dataset(pa.concat_tables(tables, promote_options="permissive"))


def view_schema(table: DeltaTable) -> pa.Schema:
    """The table's schema with string/binary columns view-typed: files written as string or string_view
    (delta-rs merges) then read alike, and both tiers agree."""
    fields = []
    for f in pa.schema(table.schema().to_arrow()):
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            f = f.with_type(pa.string_view())
        elif pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            f = f.with_type(pa.binary_view())
        fields.append(f)
    return pa.schema(fields)


def open_tiers(entry: TableEntry, hot: DeltaTable, config: LakebedConfig) -> Tiers:
    """How to read ``entry`` given its hot table (already loaded at the version or time wanted)."""
    policy = policy_of(entry)
    if policy is None:
        return Tiers(entry.name, hot)
    table = entry.name
    op = _txn(hot, _app("tier-op", table)) or 0
    if op == 0:
        return Tiers(table, hot, policy=policy)  # never moved
    done = _txn(hot, _app("tier-done", table)) or 0
    version = _txn(hot, _app("tier-cold", table))
    if version is None:
        return Tiers(table, hot, policy=policy)  # the first move is not finished: every row is still hot
    uri = cold_uri(table, config)
    target = _txn(hot, _app("tier-target", table))
    recalling = op != done and target is not None and (_txn(hot, _app("tier-recalled", table)) or 0) == op
    return Tiers(
        table,
        hot,
        column=policy.column,
        watermark=target if recalling else _txn(hot, _app("tier-wm", table)),
        in_flight=recalling,
        open_cold=lambda: _open(uri, config, version),
        policy=policy,
    )


# --- status and plans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierStatus:
    table: str
    column: str | None
    watermark: Any
    hot_rows: int
    hot_bytes: int
    cold_rows: int
    cold_bytes: int
    cold_uri: str
    in_flight: bool
    policy: TierPolicy | None


def status(table: str, *, config: LakebedConfig | None = None) -> TierStatus:
    """Rows and bytes per tier, the watermark, and whether an operation is unfinished."""
    config = config or get_config()
    entry = Catalog(config).get(table)
    hot = DeltaTable(entry.uri)
    tiers = open_tiers(entry, hot, config)
    in_flight = _in_flight(hot, table)
    hot_rows, hot_bytes = table_size(hot)
    cold_rows, cold_bytes = table_size(tiers.cold)
    policy = policy_of(entry)
    dtype = tiers.dtype
    return TierStatus(
        table=table,
        column=policy.column if policy else None,
        watermark=from_units(tiers.watermark, dtype) if dtype is not None else None,
        hot_rows=hot_rows,
        hot_bytes=hot_bytes,
        cold_rows=cold_rows,
        cold_bytes=cold_bytes,
        cold_uri=cold_uri(table, config),
        in_flight=in_flight,
        policy=policy,
    )


@dataclass(frozen=True)
class MovePlan:
    table: str
    column: str
    current: int | None  # watermark now (units)
    target: int  # watermark after the move (units)
    rows: int  # hot rows below the target
    bytes: int  # approximate bytes of those rows
    reason: str

    def describe(self, dtype: pa.DataType) -> str:
        return (
            f"{self.table}: move {self.rows:,} row(s) (~{self.bytes:,} bytes) with {self.column} < "
            f"{from_units(self.target, dtype)} to the cold tier ({self.reason})"
        )


def plan_move(
    table: str,
    *,
    before: Any = None,
    now: dt.datetime | None = None,
    config: LakebedConfig | None = None,
) -> MovePlan:
    """What a move would do: the target watermark (``before``, else from the table's policy: the age
    ``hot_for``, the quota ``hot_bytes`` and the reads ``unread_for``, whichever moves most) and how many
    rows it takes."""
    config = config or get_config()
    entry = Catalog(config).get(table)
    return _plan(entry, DeltaTable(entry.uri), before=before, now=now, config=config)


def _plan(
    entry: TableEntry, hot: DeltaTable, *, before: Any, now: dt.datetime | None, config: LakebedConfig
) -> MovePlan:
    table = entry.name
    policy = policy_of(entry)
    if policy is None:
        raise TierError(
            f"table {table!r} has no tiering policy: add `tiering: {{column: ..., hot_for: 90d}}` to its contract"
        )
    dtype = pa.schema(hot.schema().to_arrow()).field(policy.column).type
    tiers = open_tiers(entry, hot, config)
    candidates: list[tuple[int, str]] = []
    if before is not None:
        candidates.append((to_units(before, dtype), f"before {before}"))
    else:
        if policy.hot_for is not None:
            moment = (now or dt.datetime.now(dt.UTC)) - policy.hot_for
            candidates.append((to_units(moment, dtype), f"older than {policy.hot_for.days}d"))
        if policy.hot_bytes is not None:
            quota = _quota_target(hot, policy.column, policy.hot_bytes, dtype)
            if quota is not None:
                candidates.append((quota, f"hot tier over {policy.hot_bytes:,} bytes"))
        if policy.unread_for is not None:
            unread = _unread_target(table, policy.unread_for, dtype, now or dt.datetime.now(dt.UTC), config)
            if unread is not None:
                candidates.append(unread)
    if not candidates:
        return MovePlan(table, policy.column, tiers.watermark, tiers.watermark or 0, 0, 0, "within policy")
    target, reason = max(candidates)
    rows, size = _below(hot, policy.column, target, dtype)
    return MovePlan(table, policy.column, tiers.watermark, target, rows, size, reason)


def _unread_target(
    table: str, unread_for: dt.timedelta, dtype: pa.DataType, now: dt.datetime, config: LakebedConfig
) -> tuple[int, str] | None:
    """The ``unread_for`` watermark: below the lowest value reads touched within the window and (for a
    time column) below the window itself; None when a read touched every row (or, for a column that is
    not a time, when nothing read the table)."""
    since = now - unread_for
    age = to_units(since, dtype) if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) else None
    lowest = tier_access.lowest_read(table, since, config)
    days = f"{unread_for.days}d" if unread_for.days else str(unread_for)
    if lowest == tier_access.EVERYTHING:
        return None
    if not isinstance(lowest, int):
        return None if age is None else (age, f"older than {days} and not read for {days}")
    target = lowest if age is None else min(lowest, age)
    return target, f"below what reads touched in the last {days}"


def _below(hot: DeltaTable, column: str, target: int, dtype: pa.DataType) -> tuple[int, int]:
    """Hot rows below ``target`` and about how many bytes they take: files wholly below it counted from
    their statistics, the others by reading that column."""
    import pyarrow.parquet as pq

    rows = size = 0
    bound = literal(target, dtype)
    for action, whole in _files_below(hot, column, dtype, target):
        total = int(action["num_records"] or 0)
        if whole:
            count = total
        else:
            values = pq.read_table(
                local_path(hot.table_uri) / _file(action["path"]), columns=[column]
            ).column(column)
            count = int(pc.sum(pc.less(values, bound)).as_py() or 0)
        rows += count
        size += int(action["size_bytes"]) * count // total if total else 0
    return rows, size


def _quota_target(hot: DeltaTable, column: str, quota: int, dtype: pa.DataType) -> int | None:
    """The lowest watermark that leaves at most ``quota`` bytes hot, from the files' column statistics
    (or partition values)."""
    files = sorted(
        ((high, int(action["size_bytes"])) for action, _, high in _file_bounds(hot, column, dtype)),
        key=lambda f: (f[0] is None, f[0]),
    )
    remaining = sum(size for _, size in files)
    target = None
    for newest, size in files:
        if remaining <= quota or newest is None:
            break
        remaining -= size
        target = newest + 1
    return target


# --- moving ----------------------------------------------------------------------------------------


@dataclass
class MoveResult:
    table: str
    operation: str  # move, recall, resume, nothing
    watermark: Any = None
    rows: int = 0
    cold_version: int | None = None
    hot_version: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


_ATTEMPTS = 3  # tries at the hot removal (and copies) before a move gives up for a rerun
FilePlan = list[tuple[dict[str, Any], bool]]
"""Hot files holding rows below a watermark: (add action, True when every row is below it)."""


FileBounds = list[tuple[dict[str, Any], int | None, int | None]]
"""Each hot file's add action with the lowest and (an upper bound of) the highest tiering value in it."""


def _file_bounds(hot: DeltaTable, column: str, dtype: pa.DataType) -> FileBounds:
    """Every file of ``hot`` (its add action from ``get_add_actions(flatten=False)``) with the lowest and
    an upper bound of the highest value of ``column`` in it, in watermark units: from the file's statistics,
    or its partition value when ``column`` is a partition column. None where unknown (no statistics) or
    null (a null partition)."""
    partitioned = column in _partition_columns(hot)
    bounds: FileBounds = []
    for action in pa.table(hot.get_add_actions(flatten=False)).to_pylist():
        if partitioned:
            value = (action.get("partition") or {}).get(column)
            low = high = None if value is None else to_units(value, dtype)
        else:
            smallest = (action.get("min") or {}).get(column)
            largest = (action.get("max") or {}).get(column)
            low = None if smallest is None else to_units(smallest, dtype)
            high = None if largest is None else _upper(largest, dtype)
        bounds.append((action, low, high))
    return bounds


def _files_below(hot: DeltaTable, column: str, dtype: pa.DataType, target: int) -> FilePlan:
    """The hot files holding rows below ``target``, from the files' statistics (or partition values).
    Files without statistics are taken as straddling (their rows are then read). Rows whose column is
    null never move (nor does a null partition)."""
    partitioned = column in _partition_columns(hot)
    chosen = []
    for action, low, high in _file_bounds(hot, column, dtype):
        if high is not None and high < target:
            chosen.append((action, True))
        elif partitioned and low is None:
            continue
        elif low is None or low < target:  # straddles the target (or has no statistics)
            chosen.append((action, False))
    return chosen


def _upper(largest: Any, dtype: pa.DataType) -> int:
    """An upper bound of a file's values from its ``max`` statistic: Delta keeps timestamps to the
    millisecond (delta-rs truncates), so the true largest may be up to 999 microseconds more."""
    units = to_units(largest, dtype)
    return units + 999 if pa.types.is_timestamp(dtype) else units


def _split(source: Path, column: str, bound: pa.Scalar) -> tuple[pa.Table, pa.Table]:
    """The rows of a data file below ``bound`` and the others (nulls included), from one read."""
    import pyarrow.parquet as pq

    rows = pq.read_table(source)
    below = pc.fill_null(pc.less(rows.column(column), bound), False)
    return rows.filter(below), rows.filter(pc.invert(below))


def _parquet(rows: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink, compression="zstd")
    return bytes(sink.getvalue())


def _file(path: str) -> str:
    """A data file's path relative to the table's root (where it is, and what add and remove actions
    take) from its path as the Delta log has it (URL-encoded)."""
    return unquote(path)


def _new_path(like: dict[str, Any]) -> str:
    """A new data file's path beside ``like``'s (in the same partition folder)."""
    folder = _file(like["path"]).rsplit("/", 1)[0] + "/" if "/" in like["path"] else ""
    return f"{folder}part-{uuid.uuid4()}-c000.zstd.parquet"


class _Mover:
    """One move or recall of one table. It keeps one hot table object, brought up to date incrementally
    (:meth:`hot`), and one cold one (:meth:`cold`): opening a Delta table costs a read of its log, and on
    object storage several requests. A step takes what it needs from the hot table before calling
    :meth:`hot` again, which may move the shared object on."""

    def __init__(self, table: str, config: LakebedConfig, run: RunContext, progress: Progress | None) -> None:
        self.table = table
        self.config = config
        self.run = run
        self.progress = progress
        self.entry = Catalog(config).get(table)
        policy = policy_of(self.entry)
        if policy is None:
            raise TierError(f"table {table!r} has no tiering policy in its contract")
        self.column = policy.column
        self.hot_uri = self.entry.uri
        self.hot_root = local_path(self.hot_uri)
        self.cold_uri = cold_uri(table, config)
        self.options = storage_options(self.cold_uri, config)
        self._hot = DeltaTable(self.hot_uri)
        self.dtype = pa.schema(self._hot.schema().to_arrow()).field(self.column).type
        self.result = MoveResult(table, "nothing")
        self._cold_table: DeltaTable | None = None
        self._cold_read = False
        self._copied: tuple[int, FilePlan] | None = None  # (hot version, files) this mover copied
        self._moved: dict[int, int] = {}  # rows copied per operation

    # state
    def hot(self) -> DeltaTable:
        """The hot table at its latest version."""
        self._hot.update_incremental()
        return self._hot

    def hot_at(self, version: int) -> DeltaTable:
        return DeltaTable(self.hot_uri, version=version)

    def cold(self, *, reload: bool = True) -> DeltaTable | None:
        """The cold table at its latest version (None while it does not exist); with ``reload=False``, as
        last read (if it was). Acting on an outdated cold table is safe: every cold commit carries
        ``tier:<table>``, so one made against an outdated version conflicts, and the first one creates the
        table only if it does not exist."""
        if self._cold_table is None:
            if reload or not self._cold_read:
                self._cold_table = _open(self.cold_uri, self.config)
                self._cold_read = True
        elif reload:
            try:
                self._cold_table.update_incremental()
            except (DeltaError, OSError) as exc:
                raise TierError(
                    f"cannot read the cold tier {_where(self.cold_uri)}: {_scrub(str(exc), self.config)}"
                ) from exc
        return self._cold_table

    def properties(self, transactions: dict[str, int], **extra: str) -> CommitProperties:
        now = int(time.time() * 1000)
        return CommitProperties(
            custom_metadata={
                **self.run.commit_metadata(),
                **{f"lakebed.tier.{k}": v for k, v in extra.items()},
            },
            app_transactions=[
                Transaction(app_id=_app(name, self.table), version=value, last_updated=now)
                for name, value in transactions.items()
            ],
        )

    def hot_marker(self, transactions: dict[str, int], **extra: str) -> int:
        """An empty hot commit carrying ``transactions`` (intent and completion markers), committed against
        the hot version last read: a marker another mover committed since conflicts (same application id)."""
        hot = self._hot
        try:
            write_deltalake(
                hot,
                pa.schema(hot.schema().to_arrow()).empty_table(),
                mode="append",
                commit_properties=self.properties(transactions, **extra),
            )
        except CommitFailedError as exc:
            raise TierConflictError(
                f"{self.table}: another mover changed the tier state ({_scrub(str(exc), self.config)})"
            ) from None
        return hot.version()

    def state(self) -> tuple[int, int, int | None]:
        hot = self.hot()
        return (
            _txn(hot, _app("tier-op", self.table)) or 0,
            _txn(hot, _app("tier-done", self.table)) or 0,
            _txn(hot, _app("tier-target", self.table)),
        )

    # operations
    def begin(self, target: int) -> int:
        """The intent commit; a concurrent mover's intent makes this fail (one wins)."""
        op, done, _ = self.state()
        if op != done:  # (this mover finished any interrupted operation first): another one just began
            raise TierConflictError(f"{self.table}: another mover began operation {op} at the same moment")
        self.hot_marker({"tier-op": op + 1, "tier-target": target}, intent=str(target))
        _fault("intent")
        return op + 1

    def move(self, op: int, target: int) -> None:
        cold = self.cold(reload=False)
        if cold is not None and _txn(cold, _app("tier-copied", self.table)) == op:  # copied already
            version, snapshot = cold.version(), _txn(cold, _app("tier-hot", self.table))
        else:
            version, snapshot = self.copy_to_cold(op, target, cold)
        self.delete_hot(op, target, version, snapshot)

    def copy_to_cold(
        self, op: int, target: int, base: DeltaTable | None, *, again: bool = False
    ) -> tuple[int, int]:
        """Commit (2): every hot row below ``target`` into cold, with the watermark.

        Files wholly below the target are copied byte for byte (no decoding: object-store speed); the
        rows below the target of files that straddle it are written as new files. Every file is verified
        in the store before the one cold commit that adds them all, so a crash before it leaves nothing
        behind and one after it needs no copy again. The commit is made against ``base``, the cold table
        as read before the copy: every cold commit carries ``tier:<table>``, so a mover that committed to
        cold meanwhile makes this one conflict (or, for the first move, the table exists). ``again``: this
        operation copied before, from hot files that have changed since; the same commit removes those
        copies. Returns the cold version committed and the hot version copied."""
        hot = self.hot()
        snapshot, schema, partitions = hot.version(), hot.schema(), _partition_columns(hot)
        files = _files_below(hot, self.column, self.dtype, target)
        self._copied = (snapshot, files)
        bound = literal(target, self.dtype)
        errors: tuple[type[BaseException], ...] = (DeltaError, *store_errors())
        try:
            store = cold_files(self.cold_uri, self.config)
            tasks: list[Callable[[], Copied]] = []
            planned: list[tuple[str, dict[str, Any], str]] = []  # (path, like, statistics)
            total = 0
            for action, whole in files:
                source = self.hot_root / _file(action["path"])
                if whole:
                    path, rows, stat = _file(action["path"]), int(action["num_records"]), _stats_of(action)
                    tasks.append(partial(store.copy, source, path, rows))
                else:
                    below, _ = _split(source, self.column, bound)
                    if not below.num_rows:
                        continue
                    path, rows, stat = _new_path(action), below.num_rows, _stats_for(below)
                    tasks.append(partial(store.write, _parquet(below), path, rows))
                planned.append((path, action, stat))
                total += rows
            adds: list[AddAction] = []
            moved = 0
            for copied, (path, like, stat) in zip(in_parallel(tasks), planned, strict=True):
                adds.append(_add_action(path, copied.size, like, stat))
                moved += copied.rows
                if self.progress:
                    self.progress("copy", moved, total)
                _fault("copy")
            if moved != total:
                raise TierError(
                    f"{self.table}: the cold store holds {moved:,} of the {total:,} rows below the watermark "
                    "(the Delta log and the data files disagree); nothing was moved"
                )
            if base is not None:
                self._evolve_cold(base, schema)
            properties = self.properties({"tier": target, "tier-hot": snapshot, "tier-copied": op})
            if base is None:
                create_table_with_add_actions(
                    self.cold_uri,
                    schema,
                    adds,
                    mode="error",  # another mover created it meanwhile: stop, never add twice
                    partition_by=partitions or None,
                    storage_options=self.options,
                    commit_properties=properties,
                )
                version = 0
                self._cold_read = False  # opened when next asked for
            else:
                replaced = self._operation_files(base) if again else []
                base.create_write_transaction(
                    [*replaced, *adds],
                    mode="append",
                    schema=schema,
                    partition_by=partitions or None,
                    commit_properties=properties,
                )
                base.update_incremental()
                version = base.version()
        except (CommitFailedError, DeltaProtocolError) as exc:
            raise TierConflictError(
                f"{self.table}: the cold table changed during the copy ({_scrub(str(exc), self.config)})"
            ) from None
        except TierError as exc:
            raise TierError(f"{self.table}: {exc}") from exc
        except errors as exc:
            if base is None and _exists(self.cold_uri, self.config):
                raise TierConflictError(
                    f"{self.table}: another mover created the cold table meanwhile"
                ) from None
            raise TierError(
                f"{self.table}: copy to the cold tier {_where(self.cold_uri)} failed, hot data untouched: "
                f"{_scrub(str(exc), self.config)}"
            ) from exc
        _fault("copied")
        self._moved[op] = moved
        self.result.rows = sum(self._moved.values())
        return version, snapshot

    def _evolve_cold(self, cold: DeltaTable, schema: Any) -> None:
        """Give cold the columns hot has gained (an empty commit merging the schema, carrying the cold
        watermark as it is, so that it conflicts like every cold commit)."""
        wanted = pa.schema(schema.to_arrow())
        if set(wanted.names) <= set(pa.schema(cold.schema().to_arrow()).names):
            return
        write_deltalake(
            cold,
            wanted.empty_table(),
            mode="append",
            schema_mode="merge",
            commit_properties=self.properties(
                {"tier": _txn(cold, _app("tier", self.table)) or 0}, schema="hot"
            ),
        )

    def _operation_files(self, cold: DeltaTable) -> list[AddAction | RemoveAction]:
        """Removals of the files the operation in flight added to cold: those not in the cold version of
        the last finished operation (no other operation writes to cold meanwhile)."""
        finished = _txn(self._hot, _app("tier-cold", self.table))
        kept = set() if finished is None else set(_paths(_open(self.cold_uri, self.config, finished)))  # type: ignore[arg-type]
        now = int(time.time() * 1000)
        return [
            _remove_action(action, now)
            for action in pa.table(cold.get_add_actions(flatten=False)).to_pylist()
            if action["path"] not in kept
        ]

    def delete_hot(self, op: int, target: int, cold_version: int, snapshot: int | None) -> None:
        """Commit (3): remove the copied rows from hot, marking the operation done.

        One commit removes exactly the files the copy read (``snapshot``, the hot version named by
        ``tier-hot`` in the cold commit ``cold_version``), re-adding the rows at or above the target of
        files that straddled it, so rows written to hot since stay there, visible, for the next move. If
        those files changed meanwhile (a compaction, a delete or update of old rows), the copy is made
        again from hot as it is now, replacing this operation's files in cold (readers do not see them
        before the operation is done), and the removal is tried again."""
        for _ in range(_ATTEMPTS):
            if snapshot is not None and self.remove_files(op, target, snapshot, cold_version):
                self.result.cold_version = cold_version
                return
            cold_version, snapshot = self.copy_to_cold(op, target, self.cold(), again=True)
        raise TierError(
            f"{self.table}: the hot files kept changing during the move ({_ATTEMPTS} copies); rerun it "
            "(readers are not affected)"
        )

    def remove_files(self, op: int, target: int, snapshot: int, cold_version: int) -> bool:
        """Remove the files the copy read from hot, with the completion markers; False when they are no
        longer all there."""
        if self._copied is not None and self._copied[0] == snapshot:
            files = self._copied[1]
        else:
            files = _files_below(self.hot_at(snapshot), self.column, self.dtype, target)
        now = int(time.time() * 1000)
        bound = literal(target, self.dtype)
        store = cold_files(self.hot_uri, self.config)  # the hot table's own folder
        actions: list[AddAction | RemoveAction] = []
        for action, whole in files:
            actions.append(_remove_action(action, now))
            if not whole:
                _, kept = _split(self.hot_root / _file(action["path"]), self.column, bound)
                if kept.num_rows:
                    path = _new_path(action)
                    written = store.write(_parquet(kept), path, kept.num_rows)
                    actions.append(_add_action(path, written.size, action, _stats_for(kept)))
        _fault("delete")
        for _ in range(_ATTEMPTS):
            hot = self.hot()
            if (_txn(hot, _app("tier-done", self.table)) or 0) >= op:
                raise TierConflictError(f"{self.table}: another mover finished operation {op} meanwhile")
            present = set(_paths(hot))
            if any(action["path"] not in present for action, _ in files):
                return False
            properties = self.properties(
                {"tier-done": op, "tier-wm": target, "tier-cold": cold_version}, done=str(target)
            )
            # No retries: delta-rs does not count a compaction's removal of a file this commit removes as a
            # conflict, so any commit in between sends us back to look at the files again.
            properties.max_commit_retries = 0
            try:
                hot.create_write_transaction(
                    actions,
                    mode="append",
                    schema=hot.schema(),
                    partition_by=_partition_columns(hot) or None,
                    commit_properties=properties,
                )
            except CommitFailedError:
                continue
            self.result.hot_version = self.hot().version()
            return True
        return False

    def recall(self, op: int, target: int) -> None:
        """Bring cold rows at or above ``target`` back to hot (the mirror of a move)."""
        hot = self.hot()
        if (_txn(hot, _app("tier-recalled", self.table)) or 0) < op:
            cold = self.cold()
            assert cold is not None
            condition = ds.field(self.column) >= literal(target, self.dtype)
            schema = pa.schema(hot.schema().to_arrow())  # columns added since the rows went cold: null
            rows = cold.to_pyarrow_dataset(schema=schema).to_table(filter=condition)
            if self.progress:
                self.progress("recall", rows.num_rows, rows.num_rows)
            write_deltalake(
                hot,
                rows,
                mode="append",
                commit_properties=self.properties({"tier-recalled": op}, recalled=str(target)),
            )
            self.result.rows = rows.num_rows
            _fault("recalled")
        cold = self.cold()
        assert cold is not None
        if _txn(cold, _app("tier", self.table)) != target:
            predicate = f"{_quote(self.column)} >= {_sql_literal(target, self.dtype)}"
            cold.delete(predicate, commit_properties=self.properties({"tier": target}))
            _fault("trimmed")
        self.hot()
        self.result.hot_version = self.hot_marker(
            {"tier-done": op, "tier-wm": target, "tier-cold": cold.version()}, done=str(target)
        )
        self.result.cold_version = cold.version()

    def resume(self) -> bool:
        """Finish an interrupted operation; False when there was none."""
        op, done, target = self.state()
        if op == done or target is None:
            return False
        wm = _txn(self._hot, _app("tier-wm", self.table))
        if wm is not None and target < wm:
            self.recall(op, target)
        else:
            self.move(op, target)
        self.result.notes.append(f"finished interrupted operation {op}")
        return True


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _remove_action(action: dict[str, Any], now: int) -> RemoveAction:
    """The removal of a data file, from its add action as ``get_add_actions(flatten=False)`` gives it."""
    return RemoveAction(
        path=_file(action["path"]),
        data_change=True,
        deletion_timestamp=now,
        size=int(action["size_bytes"]),
        partition_values=_partition_values(action) or None,
    )


def _add_action(path: str, size: int, like: dict[str, Any], stats: str) -> AddAction:
    partitions = _partition_values(like)
    return AddAction(
        path=path,
        size=size,
        partition_values=partitions,
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=stats,
    )


def _partition_values(action: dict[str, Any]) -> dict[str, str | None]:
    """A file's partition values (text, as in the log) from ``get_add_actions(flatten=False)``."""
    values = action.get("partition") or {}
    return {k: None if v is None else _partition_text(v) for k, v in values.items()}


def _partition_text(value: Any) -> str:
    """A partition value as the Delta protocol writes it in the log."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _partition_columns(table: DeltaTable) -> list[str]:
    return list(table.metadata().partition_columns)


def _stat_value(value: Any, high: bool) -> Any:
    """A statistics value as Delta writes it (timestamps to milliseconds, rounded outwards)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value
        millis = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if high and millis != value:
            millis += dt.timedelta(milliseconds=1)
        return millis.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are not JSON: no statistic (readers then read the file)
    if isinstance(value, bool | int | float | str):
        return value
    return None


def _stats_json(rows: int, low: dict[str, Any], high: dict[str, Any], nulls: dict[str, Any]) -> str:
    def clean(values: dict[str, Any], is_high: bool) -> dict[str, Any]:
        out = {k: _stat_value(v, is_high) for k, v in values.items() if v is not None}
        return {k: v for k, v in out.items() if v is not None}

    return json.dumps(
        {
            "numRecords": rows,
            "minValues": clean(low, False),
            "maxValues": clean(high, True),
            "nullCount": {k: int(v) for k, v in nulls.items() if isinstance(v, int)},
        }
    )


def _stats_of(action: dict[str, Any]) -> str:
    return _stats_json(
        int(action["num_records"]),
        action.get("min") or {},
        action.get("max") or {},
        action.get("null_count") or {},
    )


def _stats_for(rows: pa.Table) -> str:
    low, high, nulls = {}, {}, {}
    for name in rows.column_names:
        column = rows.column(name)
        nulls[name] = column.null_count
        try:
            bounds = pc.min_max(column).as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            continue
        low[name], high[name] = bounds["min"], bounds["max"]
    return _stats_json(rows.num_rows, low, high, nulls)


def _paths(table: DeltaTable) -> list[str]:
    """The data files of ``table``'s loaded version (relative paths, as in the Delta log)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return actions.column("path").to_pylist() if actions.num_rows else []


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _sql_literal(units: int, dtype: pa.DataType) -> str:
    """The watermark as a SQL literal delta-rs predicates understand."""
    value = from_units(units, dtype)
    if pa.types.is_timestamp(dtype):
        unit = {"s": "Second", "ms": "Millisecond", "us": "Microsecond", "ns": "Nanosecond"}[dtype.unit]
        zone = f'Some("{dtype.tz}")' if dtype.tz else "None"
        text = value.strftime("%Y-%m-%dT%H:%M:%S.%f") + ("Z" if dtype.tz else "")
        return f"arrow_cast('{text}', 'Timestamp({unit}, {zone})')"
    if pa.types.is_date(dtype):
        return f"'{value.isoformat()}'::date"
    return str(value)


def move(
    table: str,
    *,
    before: Any = None,
    run: RunContext | None = None,
    progress: Progress | None = None,
    config: LakebedConfig | None = None,
    now: dt.datetime | None = None,
) -> MoveResult:
    """Move the rows below the planned watermark (``before``, else the policy's) to the cold tier.

    Finishes an interrupted move or recall first. Idempotent: a move to the current watermark with no
    late rows does nothing."""
    config = config or get_config()
    run = run or RunContext(job=f"tier_move:{table}")
    started = time.perf_counter()
    mover = _Mover(table, config, run, progress)
    with lineage_run(run, config=config) as lineage:
        lineage.add_input(table_dataset(table, mover.hot_uri, mover.hot().version()))
        mover.cold()  # an unreachable store, a missing bucket or bad credentials stop us before any commit
        resumed = mover.resume()
        plan = _plan(mover.entry, mover.hot(), before=before, now=now, config=config)
        if plan.rows and (plan.current is None or plan.target >= plan.current):
            op = mover.begin(plan.target)
            mover.move(op, plan.target)
            mover.result.operation = "move"
        elif resumed:
            mover.result.operation = "resume"
        mover.result.watermark = from_units(
            open_tiers(mover.entry, mover.hot(), config).watermark, mover.dtype
        )
        if mover.result.cold_version is not None:
            lineage.add_output(
                table_dataset(table, mover.cold_uri, mover.result.cold_version, extra={"tier": "cold"})
            )
        if mover.result.hot_version is not None:
            lineage.add_output(
                table_dataset(table, mover.hot_uri, mover.result.hot_version, extra={"tier": "hot"})
            )
    mover.result.seconds = time.perf_counter() - started
    return mover.result


def recall(
    table: str,
    *,
    since: Any,
    run: RunContext | None = None,
    progress: Progress | None = None,
    config: LakebedConfig | None = None,
) -> MoveResult:
    """Bring the cold rows with column >= ``since`` back to the hot tier (lowering the watermark)."""
    config = config or get_config()
    run = run or RunContext(job=f"tier_recall:{table}")
    started = time.perf_counter()
    mover = _Mover(table, config, run, progress)
    with lineage_run(run, config=config) as lineage:
        mover.cold()  # an unreachable store, a missing bucket or bad credentials stop us before any commit
        mover.resume()
        target = to_units(since, mover.dtype)
        current = open_tiers(mover.entry, mover.hot(), config).watermark
        if current is None or target >= current:
            mover.result.notes.append("nothing to recall: the cold tier holds no rows at or above that")
        else:
            op = mover.begin(target)
            mover.recall(op, target)
            mover.result.operation = "recall"
            lineage.add_output(
                table_dataset(table, mover.hot_uri, mover.result.hot_version, extra={"tier": "hot"})
            )
            lineage.add_output(
                table_dataset(table, mover.cold_uri, mover.result.cold_version, extra={"tier": "cold"})
            )
        mover.result.watermark = from_units(
            open_tiers(mover.entry, mover.hot(), config).watermark, mover.dtype
        )
    mover.result.seconds = time.perf_counter() - started
    return mover.result


@dataclass(frozen=True)
class VacuumResult:
    table: str
    hot_files: int
    cold_files: int
    note: str = ""

    def describe(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return (
            f"{self.table}: {self.hot_files} file(s) deleted from the hot tier, {self.cold_files} from the cold "
            f"tier{note}"
        )


def vacuum(
    table: str, *, grace: dt.timedelta | None = None, config: LakebedConfig | None = None
) -> VacuumResult:
    """Delete the files moves and recalls removed (and any other file no table version needs) from both
    tiers once ``grace`` (default: the policy's) has passed since their removal: readers of older
    versions keep working until then. The cold tier is left alone while an operation is in flight (readers
    then still read an older cold version)."""
    config = config or get_config()
    entry = Catalog(config).get(table)
    policy = policy_of(entry)
    grace = grace if grace is not None else (policy.grace if policy else dt.timedelta(days=7))
    hours = math.ceil(grace.total_seconds() / 3600)  # never shorter than asked

    def vacuum_table(delta: DeltaTable) -> int:
        return len(delta.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False))

    hot = DeltaTable(entry.uri)
    hot_files = vacuum_table(hot)
    if policy is None:
        return VacuumResult(table, hot_files, 0)
    if _in_flight(hot, table):
        return VacuumResult(table, hot_files, 0, "cold tier skipped: an operation is in flight")
    cold = _open(cold_uri(table, config), config)
    try:
        cold_files = vacuum_table(cold) if cold is not None else 0
    except (DeltaError, OSError) as exc:
        raise TierError(
            f"cannot vacuum the cold tier {_where(cold_uri(table, config))}: {_scrub(str(exc), config)}"
        ) from exc
    return VacuumResult(table, hot_files, cold_files)


def describe(result: MoveResult) -> str:
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    return (
        f"{result.table}: {result.operation}, {result.rows:,} row(s), watermark {result.watermark}, "
        f"cold version {result.cold_version}, hot version {result.hot_version}, {result.seconds:.2f} s{notes}"
    )


__all__ = [
    "MovePlan",
    "MoveResult",
    "Part",
    "TierStatus",
    "Tiers",
    "VacuumResult",
    "cold_uri",
    "move",
    "open_tiers",
    "plan_move",
    "recall",
    "status",
    "vacuum",
    "view_schema",
]
