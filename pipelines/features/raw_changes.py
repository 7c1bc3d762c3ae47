"""Reading the raw source of a feature view one Delta version at a time, and splitting each version's
rows by the lateness rule (:func:`split_version`; the rule is in
:mod:`lakebed.pipelines.features.materialize`). The raw table is append-only (stream ingest appends;
compaction rewrites files without changing data). Delta data files are immutable and uniquely named, so
the rows added by version ``v`` are exactly the rows of the files in ``v``'s snapshot that are not in
``v - 1``'s. That needs no ``_partition``/``_offset`` columns (any lakebed table can be a source) and is
exact however the ingest batched its offsets. A version that removes files is accepted only if it is a
data-neutral ``OPTIMIZE`` (compaction: same row count in and out, nothing new); any other rewrite
(delete, update, merge, overwrite) raises :class:`FeatureSourceError`, since features never retract
events.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakebed.config import LakebedConfig
from lakebed.errors import FeatureSourceError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.features.windows import TIEBREAK_COLUMNS, event_time_us, int_bounds
from lakebed.schemas.features import FeatureView
from lakebed.storage import arrow_dataset

LATE_COLUMNS = ("_raw_version", "_watermark", "_reason")
"""Columns the late table adds to the raw rows: the raw version, the watermark it was judged by, why."""
_DATA_NEUTRAL = ("OPTIMIZE",)


# Raw changes ---------------------------------------------------------------------------------------
class RawChanges:
    """The rows each version of an append-only raw Delta table added."""

    def __init__(self, name: str, config: LakebedConfig) -> None:
        self.name = name
        self.uri = Catalog(config).get(name).uri  # TableNotFoundError names the table
        self.latest = DeltaTable(self.uri).version()
        self._snapshot: DeltaTable | None = None
        self._files: dict[str, int | None] = {}
        self._at: int | None = None
        self._operations: dict[int, str] = {}

    def _load(self, version: int) -> DeltaTable:
        try:
            if self._snapshot is None:
                self._snapshot = DeltaTable(self.uri, version=version)
            else:
                self._snapshot.load_as_version(version)
        except DeltaError as exc:
            raise FeatureSourceError(
                f"cannot read version {version} of raw table {self.name!r} (was its log cleaned up?): {exc}"
            ) from exc
        return self._snapshot

    def _files_of(self, snapshot: DeltaTable) -> dict[str, int | None]:
        actions = pa.table(snapshot.get_add_actions(flatten=True))
        records = actions.column("num_records").to_pylist() if "num_records" in actions.column_names else None
        paths = actions.column("path").to_pylist()
        return dict(zip(paths, records or [None] * len(paths), strict=True))

    def _operation(self, version: int) -> str:
        if version not in self._operations:
            for entry in DeltaTable(self.uri).history(self.latest - version + 1):
                self._operations[int(entry["version"])] = str(entry.get("operation", ""))
        return self._operations.get(version, "")

    def schema(self, version: int) -> pa.Schema:
        return pa.schema(self._load(version).schema().to_arrow())

    def added(self, version: int) -> pa.Table:
        """The rows raw version ``version`` added (none for a compaction); raises on a rewrite."""
        if self._at != version - 1:
            self._files = self._files_of(self._load(version - 1)) if version > 0 else {}
        snapshot = self._load(version)
        files = self._files_of(snapshot)
        added = {p: n for p, n in files.items() if p not in self._files}
        removed = {p: n for p, n in self._files.items() if p not in files}
        self._files, self._at = files, version
        schema = pa.schema(snapshot.schema().to_arrow())
        if removed:
            operation = self._operation(version)
            added_rows = [n for n in added.values() if n is not None]
            removed_rows = [n for n in removed.values() if n is not None]
            known = len(added_rows) == len(added) and len(removed_rows) == len(removed)
            balanced = not known or sum(added_rows) == sum(removed_rows)
            if operation.upper() in _DATA_NEUTRAL and balanced:
                return schema.empty_table()
            raise FeatureSourceError(
                f"raw table {self.name!r} version {version} ({operation or 'unknown operation'}) removed "
                f"{len(removed)} data file(s): feature views need an append-only source (appends and "
                "compaction only); rows cannot be retracted from features"
            )
        if not added:
            return schema.empty_table()
        dataset = arrow_dataset(snapshot)
        assert isinstance(dataset, ds.FileSystemDataset)
        fragments = [f for f in dataset.get_fragments() if f.path in added]
        if len(fragments) != len(added):
            raise FeatureSourceError(
                f"raw table {self.name!r} version {version}: found {len(fragments)} of the {len(added)} files "
                "it added"
            )
        subset = ds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
        return subset.to_table()


# Lateness ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionSplit:
    """One raw version, split by the lateness rule."""

    version: int
    rows: int
    on_time: pa.Table  # the columns the view reads
    late: pa.Table  # full raw rows + LATE_COLUMNS
    max_us: int | None  # max event time seen through this version


def split_version(view: FeatureView, rows: pa.Table, version: int, seen_us: int | None) -> VersionSplit:
    """Split the rows raw version ``version`` added into on-time and late ones, ``seen_us`` being the max
    event time seen through the previous version."""
    times = event_time_us(rows.column(view.event_time), view.event_time) if rows.num_rows else None
    watermark = None if seen_us is None else seen_us - view.allowed_lateness_us
    if times is None or rows.num_rows == 0:
        return VersionSplit(version, 0, project(rows, view), mark_late(rows, [], version, watermark), seen_us)
    null_key = pl.any_horizontal([pl.col(k).is_null() for k in view.entities])
    keys = pl.from_arrow(rows.select(list(view.entities)))
    assert isinstance(keys, pl.DataFrame)
    frame = keys.with_columns(times.alias("__t"))
    reason = (
        pl.when(pl.col("__t").is_null())
        .then(pl.lit("null_event_time"))
        .when(null_key)
        .then(pl.lit("null_entity"))
        .when(pl.col("__t") < watermark if watermark is not None else pl.lit(False))
        .then(pl.lit("late"))
    )
    reasons = frame.select(reason.alias("r")).to_series()
    late_mask = reasons.is_not_null().to_arrow()
    late = rows.filter(late_mask)
    on_time = rows.filter(pc.invert(late_mask))
    bounds = int_bounds(times)
    max_us = seen_us
    if bounds is not None:
        max_us = bounds[1] if seen_us is None else max(bounds[1], seen_us)
    return VersionSplit(
        version,
        rows.num_rows,
        project(on_time, view),
        mark_late(late, reasons.drop_nulls().to_list(), version, watermark),
        max_us,
    )


def project(rows: pa.Table, view: FeatureView) -> pa.Table:
    """``rows`` with only the columns ``view`` reads (its source columns and the tiebreak columns)."""
    wanted = [*view.source_columns, *(c for c in TIEBREAK_COLUMNS if c not in view.source_columns)]
    return rows.select([c for c in wanted if c in rows.column_names])


def mark_late(rows: pa.Table, reasons: list[str], version: int, watermark: int | None) -> pa.Table:
    """Late ``rows`` of raw version ``version`` with the :data:`LATE_COLUMNS` appended."""
    n = rows.num_rows
    stamp = pa.timestamp("us", tz="UTC")
    mark = (
        pa.nulls(n, stamp)
        if watermark is None
        else pa.repeat(pa.scalar(watermark, pa.int64()).cast(stamp), n)
    )
    return (
        rows.append_column(LATE_COLUMNS[0], pa.repeat(pa.scalar(version, pa.int64()), n))
        .append_column(LATE_COLUMNS[1], mark)
        .append_column(LATE_COLUMNS[2], pa.array(reasons, pa.string()))
    )


__all__ = ["LATE_COLUMNS", "RawChanges", "VersionSplit", "mark_late", "project", "split_version"]
