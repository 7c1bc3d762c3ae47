"""Reads across tiers: which version of each tier a reader takes, and which of its rows.

Readers (:func:`open_tiers`) load hot first and take all of it, and cold as of ``tier-cold`` (the cold
version of the last finished operation): a move removes its rows from hot in the commit that finishes it,
so until then hot holds every row being copied and cold is read as it was before the copy. One state
differs: a recall past its hot append (``tier-recalled`` = ``tier-op``) has its rows in hot and, until its
cold delete, in cold too; then cold is read below the recall's target only. Every state between two
commits reads every row exactly once, rows written to hot meanwhile included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable

from lakebed.config import LakebedConfig
from lakebed.errors import TierError
from lakebed.pipelines.catalog import TableEntry
from lakebed.pipelines.tiering import access
from lakebed.pipelines.tiering.actions import file_path
from lakebed.pipelines.tiering.files import file_bounds
from lakebed.pipelines.tiering.storage import cold_uri, open_table, policy_of, txn
from lakebed.pipelines.tiering.watermark import literal
from lakebed.schemas.tiering import TierPolicy
from lakebed.storage import arrow_dataset

log = logging.getLogger(__name__)


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
                touched = {Path(f.path).name for f in arrow_dataset(self.hot).get_fragments(filter=condition)}
                if not touched:
                    return  # no hot file: the read was answered by the cold tier alone
                lowest = self._lowest_of(touched, self.policy.column)
            except Exception as exc:  # noqa: BLE001 - recording must never fail a read
                log.debug(
                    "%s: cannot tell which hot files a read touched (%s); counting every row", self.name, exc
                )
        access.record(self.name, lowest, config)

    def _lowest_of(self, touched: set[str], column: str) -> int | None:
        """The lowest value of ``column`` in the hot files named ``touched`` (None when a file has no
        statistics: then every row counts)."""
        lows = [
            low
            for action, low, _ in file_bounds(self.hot, column, self.hot_column_type(column))
            if Path(file_path(action["path"])).name in touched
        ]
        known = [low for low in lows if low is not None]
        return min(known) if known and len(known) == len(lows) else None

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
    op = txn(hot, "tier-op", table) or 0
    if op == 0:
        return Tiers(table, hot, policy=policy)  # never moved
    done = txn(hot, "tier-done", table) or 0
    version = txn(hot, "tier-cold", table)
    if version is None:
        return Tiers(table, hot, policy=policy)  # the first move is not finished: every row is still hot
    uri = cold_uri(table, config)
    target = txn(hot, "tier-target", table)
    recalling = op != done and target is not None and (txn(hot, "tier-recalled", table) or 0) == op
    return Tiers(
        table,
        hot,
        column=policy.column,
        watermark=target if recalling else txn(hot, "tier-wm", table),
        in_flight=recalling,
        open_cold=lambda: open_table(uri, config, version),
        policy=policy,
    )
