"""What a table's tiers hold (:func:`status`) and what a move would do (:func:`plan_move`): the target
watermark its policy gives and the hot rows below it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TierError
from lakebed.pipelines.catalog import Catalog, TableEntry
from lakebed.pipelines.delta import table_size
from lakebed.pipelines.tiering import access
from lakebed.pipelines.tiering.actions import file_path
from lakebed.pipelines.tiering.files import file_bounds, files_below
from lakebed.pipelines.tiering.storage import cold_uri, in_flight, policy_of
from lakebed.pipelines.tiering.view import open_tiers
from lakebed.pipelines.tiering.watermark import from_units, literal, to_units
from lakebed.schemas.tiering import TierPolicy
from lakebed.storage import local_path


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
    unfinished = in_flight(hot, table)
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
        in_flight=unfinished,
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
    return plan_for(entry, DeltaTable(entry.uri), before=before, now=now, config=config)


def plan_for(
    entry: TableEntry, hot: DeltaTable, *, before: Any, now: dt.datetime | None, config: LakebedConfig
) -> MovePlan:
    """:func:`plan_move` for ``entry`` with its hot table loaded."""
    table = entry.name
    policy = policy_of(entry)
    if policy is None:
        raise TierError(
            f"table {table!r} has no tiering policy: add `tiering: {{column: ..., hot_for: 90d}}` to its contract"
        )
    dtype = pa.schema(hot.schema().to_arrow()).field(policy.column).type
    tiers = open_tiers(entry, hot, config)
    if before is not None:
        candidates = [(to_units(before, dtype), f"before {before}")]
    else:
        candidates = _policy_targets(entry.name, hot, policy, dtype, now or dt.datetime.now(dt.UTC), config)
    if not candidates:
        return MovePlan(table, policy.column, tiers.watermark, tiers.watermark or 0, 0, 0, "within policy")
    target, reason = max(candidates)
    rows, size = _below(hot, policy.column, target, dtype)
    return MovePlan(table, policy.column, tiers.watermark, target, rows, size, reason)


def _policy_targets(
    table: str,
    hot: DeltaTable,
    policy: TierPolicy,
    dtype: pa.DataType,
    now: dt.datetime,
    config: LakebedConfig,
) -> list[tuple[int, str]]:
    """The watermark each of the policy's rules gives, with the rule."""
    candidates: list[tuple[int, str]] = []
    if policy.hot_for is not None:
        moment = now - policy.hot_for
        candidates.append((to_units(moment, dtype), f"older than {policy.hot_for.days}d"))
    if policy.hot_bytes is not None:
        quota = quota_target(hot, policy.column, policy.hot_bytes, dtype)
        if quota is not None:
            candidates.append((quota, f"hot tier over {policy.hot_bytes:,} bytes"))
    if policy.unread_for is not None:
        unread = _unread_target(table, policy.unread_for, dtype, now, config)
        if unread is not None:
            candidates.append(unread)
    return candidates


def _unread_target(
    table: str, unread_for: dt.timedelta, dtype: pa.DataType, now: dt.datetime, config: LakebedConfig
) -> tuple[int, str] | None:
    """The ``unread_for`` watermark: below the lowest value reads touched within the window and (for a
    time column) below the window itself; None when a read touched every row (or, for a column that is
    not a time, when nothing read the table)."""
    since = now - unread_for
    age = to_units(since, dtype) if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) else None
    lowest = access.lowest_read(table, since, config)
    days = f"{unread_for.days}d" if unread_for.days else str(unread_for)
    if lowest == access.EVERYTHING:
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
    for action, whole in files_below(hot, column, dtype, target):
        total = int(action["num_records"] or 0)
        if whole:
            count = total
        else:
            values = pq.read_table(
                local_path(hot.table_uri) / file_path(action["path"]), columns=[column]
            ).column(column)
            count = int(pc.sum(pc.less(values, bound)).as_py() or 0)
        rows += count
        size += int(action["size_bytes"]) * count // total if total else 0
    return rows, size


def quota_target(hot: DeltaTable, column: str, quota: int, dtype: pa.DataType) -> int | None:
    """The lowest watermark that leaves at most ``quota`` bytes hot, from the files' column statistics
    (or partition values)."""
    files = sorted(
        ((high, int(action["size_bytes"])) for action, _, high in file_bounds(hot, column, dtype)),
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
