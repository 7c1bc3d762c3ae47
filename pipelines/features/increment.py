"""One increment of a feature view's offline table: which entities and hop ends new events touch, the
on-time events around them, and the splice of their recomputed segments into the stored ones
(docs/streaming.md, "Offline layout")."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakebed.config import LakebedConfig
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.features.changes import coalesce
from lakebed.pipelines.features.raw_changes import LATE_COLUMNS, RawChanges, project
from lakebed.pipelines.features.windows import event_time_us, int_bounds
from lakebed.pipelines.read import read_table
from lakebed.schemas.features import FEATURE_TS, FEATURE_VALID_TO, FeatureView


def open_table_or_none(name: str, config: LakebedConfig) -> DeltaTable | None:
    entry = Catalog(config).find(name)
    if entry is None:
        return None
    try:
        return DeltaTable(entry.uri)
    except DeltaError:
        return None


def first_ends(ends: pa.Table, view: FeatureView) -> pa.Table:
    """Per entity, the first of ``ends``: the hop end from which its feature rows are recomputed."""
    frame = pl.from_arrow(ends)
    assert isinstance(frame, pl.DataFrame)
    keys = list(view.entities)
    first = frame.group_by(keys).agg(pl.col(FEATURE_TS).min()).sort(keys)
    return first.to_arrow().cast(ends.schema)


def on_time_history(
    view: FeatureView, raw: RawChanges, version: int, since: pa.Table, config: LakebedConfig
) -> pl.DataFrame:
    """Every on-time raw event (through ``version``) in a window ending at or after an entity's ``since``
    end: the raw table at ``version`` for those entities and times, minus the recorded late events (as a
    multiset)."""
    schema = raw.schema(version)
    columns = project(schema.empty_table(), view).column_names
    span = max(a.window_us for a in view.aggregations)
    bounds = int_bounds(event_time_us(since.column(FEATURE_TS), FEATURE_TS))
    assert bounds is not None, "on-time events always fall in a window end"
    low = bounds[0] - span
    condition = around(view, schema, since, low)
    events = read_table(view.source.table, version=version, columns=columns, filter=condition, config=config)
    late_table = open_table_or_none(view.late_table, config)
    if late_table is None:
        late = None
    else:
        late_schema = pa.schema(late_table.schema().to_arrow())
        late_filter = around(view, late_schema, since, low)
        recorded = ds.field(LATE_COLUMNS[0]) <= version
        late_filter = recorded if late_filter is None else late_filter & recorded
        late = read_table(view.late_table, filter=late_filter, config=config)
    frame = pl.from_arrow(events)
    assert isinstance(frame, pl.DataFrame)
    if late is None or late.num_rows == 0:
        return frame
    gone = pl.from_arrow(conform(late, events.schema))
    assert isinstance(gone, pl.DataFrame)
    return subtract(frame, gone, columns)


def keys_in(view: FeatureView, schema: pa.Schema, rows: pa.Table) -> ds.Expression | None:
    """A pushdown filter for the entities of ``rows`` (a superset for composite keys)."""
    condition: ds.Expression | None = None
    for key in view.entities:
        values = pc.unique(rows.column(key).combine_chunks())
        part = ds.field(key).isin(values.cast(schema.field(key).type))
        condition = part if condition is None else condition & part
    return condition


def around(view: FeatureView, schema: pa.Schema, since: pa.Table, low: int) -> ds.Expression | None:
    """A pushdown filter for the events of the entities of ``since`` with event time at least ``low``
    (a superset for composite keys; the window computation restricts exactly)."""
    condition = keys_in(view, schema, since)
    kind = schema.field(view.event_time).type
    if pa.types.is_timestamp(kind) and kind.unit in ("us", "ns"):
        moment = pa.scalar(low, pa.int64()).cast(pa.timestamp("us", tz="UTC")).cast(kind)
        times = ds.field(view.event_time) >= moment
        condition = times if condition is None else condition & times
    return condition


def splice(
    view: FeatureView, fresh: pa.Table, since: pa.Table, config: LakebedConfig
) -> tuple[pa.Table, pa.Table]:
    """The rows to upsert and the keys to delete so that the offline table holds, per entity of
    ``since``, its segments before ``since`` (the one crossing it cut there) followed by ``fresh`` (its
    segments from ``since`` on), merged where they touch with equal values."""
    keys = list(view.entities)
    key_columns = [*keys, FEATURE_TS]
    table = open_table_or_none(view.offline_table, config)
    if table is None:
        return fresh, fresh.select(key_columns).slice(0, 0)
    schema = pa.schema(table.schema().to_arrow())
    lowest = pc.min(since.column(FEATURE_TS)).cast(schema.field(FEATURE_VALID_TO).type)
    condition = ds.field(FEATURE_VALID_TO) >= lowest
    entities = keys_in(view, schema, since)
    condition = condition if entities is None else condition & entities
    old = pl.from_arrow(read_table(view.offline_table, filter=condition, config=config).cast(fresh.schema))
    cut = pl.from_arrow(since)
    assert isinstance(old, pl.DataFrame) and isinstance(cut, pl.DataFrame)
    cut = cut.rename({FEATURE_TS: "__since"})
    old = old.join(cut, on=keys, how="inner").filter(pl.col(FEATURE_VALID_TO) >= pl.col("__since"))
    before = old.filter(pl.col(FEATURE_TS) < pl.col("__since")).with_columns(
        pl.col("__since").alias(FEATURE_VALID_TO)
    )
    replaced = old.filter(pl.col(FEATURE_TS) >= pl.col("__since")).select(key_columns)
    spliced = pa.concat_tables([before.drop("__since").to_arrow().cast(fresh.schema), fresh])
    rows = coalesce(spliced, view)
    kept = pl.from_arrow(rows.select(key_columns))
    assert isinstance(kept, pl.DataFrame)
    gone = replaced.join(kept, on=key_columns, how="anti")
    return rows, gone.to_arrow().cast(rows.select(key_columns).schema)


def subtract(rows: pl.DataFrame, remove: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """``rows`` minus ``remove`` as multisets over ``columns`` (the k-th copy of a row removes the k-th)."""
    copy = "__lakebed_copy"
    numbered = rows.with_columns(pl.int_range(pl.len()).over(columns).alias(copy))
    gone = remove.select(columns).with_columns(pl.int_range(pl.len()).over(columns).alias(copy))
    return numbered.join(gone, on=[*columns, copy], how="anti", nulls_equal=True).drop(copy)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (absent ones null), cast to its types."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


__all__ = ["first_ends", "keys_in", "on_time_history", "open_table_or_none", "splice"]
