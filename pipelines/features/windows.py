"""Hopping-window aggregation: events in, feature rows out. Pure (no I/O), vectorised with Polars.

Semantics (docs/streaming.md, "Feature store semantics"):

* Windows hop by the view's ``hop`` and are aligned to the Unix epoch: a window of size ``S`` ending at
  ``e`` (a multiple of ``hop``) covers the events with ``e - S <= event_time < e``.
* A feature row ``(entity..., feature_ts=e, aggregates...)`` exists when at least one of the view's
  windows ending at ``e`` holds an event of that entity. Aggregates over an empty window are null, except
  ``count``, which is 0.
* ``last`` is the value of the event with the greatest event time in the window; ties are broken by
  ``_partition`` then ``_offset`` (the stream ingest columns) when the events have them, then by the value
  itself (greatest wins, a value over null), so the result never depends on row order.
* Events whose event time or any entity key is null belong to no window and are ignored.

How: events are first reduced to one partial row per ``(entity, hop bucket)`` (``bucket = floor(t / hop)``);
floats in a bucket are summed pairwise in sorted order, so a bucket's sum never depends on row order or
threading. A window of ``S`` is ``n = S / hop`` whole buckets ``[e - n, e)``. Buckets are cut into blocks of
``n`` aligned to the epoch, so every window is one whole block, or the suffix of one block plus the prefix
of the next (the van Herk / Gil-Werman sliding-window scheme): two lookups into running folds computed
inside each block in bucket order. A fold depends only on its block's buckets, so a float ``sum``/``mean``
is bit-for-bit the same whether computed from all events (a backfill) or only from the events around a few
windows (the incremental path). Cost: ``O(events + buckets + rows)`` plus sorts; never ``O(events * n)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import polars as pl
import pyarrow as pa

from lakebed.errors import ContractError
from lakebed.schemas.features import FEATURE_TS, FeatureView, duration_us
from lakebed.schemas.types import delta_type

TIEBREAK_COLUMNS = ("_partition", "_offset")
"""Stream ingest columns that break ties of ``last`` between events with the same event time."""

_T = "__lakebed_t"  # event time, microseconds since the epoch
_B = "__lakebed_b"  # hop bucket of the event (floor(t / hop))
_I = "__lakebed_i"  # bucket index of a partial-aggregate row
_E = "__lakebed_e"  # window end, in buckets (feature_ts / hop)
_LB = "__lakebed_lb"  # row of a bucket in the sorted partials (orders buckets, for `last`)
_R = "__lakebed_r"  # rank of an event in its bucket, for pairwise float sums
_K = "__lakebed_k"  # dense entity id, in key order
_SUF = "__suffix"
_PRE = "__prefix"

WindowEnds: TypeAlias = pa.Table | pl.DataFrame | Sequence[dt.datetime] | None
Combine = Literal["add", "min", "max", "last"]


@dataclass(frozen=True)
class _Partial:
    """One partial-aggregate column and how two of its values combine."""

    name: str
    combine: Combine
    aggregation: int  # index of the aggregation it belongs to


# Public API -----------------------------------------------------------------------------------------
def feature_schema(view: FeatureView, source_schema: pa.Schema) -> pa.Schema:
    """The schema of ``view``'s feature rows over events of ``source_schema``: entity keys (source types),
    ``feature_ts`` timestamp(us, UTC), then one column per aggregation.

    ``count`` is int64; ``sum`` is int64 over integers, float64 over floats, decimal(38, s) over decimals;
    ``mean`` is float64; ``min``, ``max`` and ``last`` keep the column's type."""
    _check_source(view, source_schema)
    fields = [pa.field(k, delta_type(source_schema.field(k).type)) for k in view.entities]
    fields.append(pa.field(FEATURE_TS, pa.timestamp("us", tz="UTC"), nullable=False))
    for aggregation in view.aggregations:
        if aggregation.function == "count":
            fields.append(pa.field(aggregation.name, pa.int64(), nullable=False))
            continue
        assert aggregation.column is not None
        source = delta_type(source_schema.field(aggregation.column).type)
        if aggregation.function == "mean":
            kind = pa.float64()
        elif aggregation.function == "sum":
            if pa.types.is_integer(source):
                kind = pa.int64()
            elif pa.types.is_decimal(source):
                kind = pa.decimal128(38, source.scale)
            else:
                kind = pa.float64()
        else:
            kind = source
        fields.append(pa.field(aggregation.name, kind))
    return pa.schema(fields)


def compute_features(
    events: pa.Table | pl.DataFrame, view: FeatureView, *, window_ends: WindowEnds = None
) -> pa.Table:
    """The feature rows of ``view`` over ``events``, sorted by entity keys then ``feature_ts``.

    ``window_ends`` restricts the output: a table (Arrow or Polars) of ``(entity keys..., feature_ts)``
    keeps just those rows, a sequence of datetimes keeps those window ends for every entity. A restricted
    row is still computed from all of ``events``.
    """
    table = _as_arrow(events)
    schema = feature_schema(view, table.schema)
    frame = _events_frame(table, view)
    if frame.height == 0:
        return schema.empty_table()
    keys = list(view.entities)
    hop = view.hop_us
    # Entities as dense ids in key order: joins, sorts and groups then run on one int64 column.
    ids = frame.select(keys).unique().sort(keys)
    frame = frame.join(ids.with_row_index(_K).with_columns(pl.col(_K).cast(pl.Int64)), on=keys, how="left")
    partials, nodes = _bucket_nodes(frame, view)
    spans = sorted({a.window_us // hop for a in view.aggregations})
    grid = _grid(nodes, spans[-1])
    columns: list[pl.Series] = []
    for span in spans:
        columns += _windows(grid, nodes, [p for p in partials if _uses_span(p, view, span)], span)
    # A grid row x is the window ending at bucket x + 1; it is a feature row when the largest window
    # [x + 1 - n, x] holds a bucket of the same entity.
    latest = pl.when(pl.col(_LB).is_not_null()).then(pl.col(_I))
    owner = pl.when(pl.col(_LB).is_not_null()).then(pl.col(_K))
    out = grid.select(_K, _I, latest.forward_fill().alias("__last_b"), owner.forward_fill().alias("__last_k"))
    out = out.with_columns(columns)
    out = out.filter((pl.col("__last_k") == pl.col(_K)) & (pl.col(_I) - pl.col("__last_b") < spans[-1]))
    out = out.with_columns(((pl.col(_I) + 1) * hop).cast(pl.Datetime("us", "UTC")).alias(FEATURE_TS))
    restored = ids.select([pl.col(k).gather(out[_K]) for k in keys])
    out = pl.concat([restored, out], how="horizontal")
    out = _restrict(out, window_ends, view)
    result = out.select(*keys, FEATURE_TS, *[_finish(i, a) for i, a in enumerate(view.aggregations)])
    return result.to_arrow().cast(schema)


def affected_window_ends(events: pa.Table | pl.DataFrame, view: FeatureView) -> pa.Table:
    """Every ``(entity keys..., feature_ts)`` whose windows hold at least one of ``events``: the feature
    rows that adding these events can change. Sorted by keys then ``feature_ts``."""
    table = _as_arrow(events)
    _check_source(view, table.schema)
    frame = _events_frame(table, view)
    keys = list(view.entities)
    buckets = frame.select(*keys, _B).unique()
    span = max(a.window_us for a in view.aggregations) // view.hop_us
    ends = _window_ends(buckets.rename({_B: _I}), keys, span)
    key_fields = [pa.field(k, delta_type(table.schema.field(k).type)) for k in keys]
    schema = pa.schema([*key_fields, pa.field(FEATURE_TS, pa.timestamp("us", tz="UTC"), nullable=False)])
    out = ends.sort([*keys, _E]).select(
        *keys, (pl.col(_E) * view.hop_us).cast(pl.Datetime("us", "UTC")).alias(FEATURE_TS)
    )
    return out.to_arrow().cast(schema)


def int_bounds(values: pl.Series) -> tuple[int, int] | None:
    """The lowest and highest value of an integer series (e.g. microseconds); None when it holds none."""
    low, high = values.min(), values.max()
    if not isinstance(low, int) or not isinstance(high, int):
        return None
    return low, high


def event_time_us(column: pa.ChunkedArray | pa.Array, name: str = "event_time") -> pl.Series:
    """An event-time column as int64 microseconds since the epoch (UTC), floored; nulls stay null.
    Timestamps of any unit (naive ones are UTC) and dates are accepted."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = array.type
    if pa.types.is_date(kind):
        days = pl.Series(name, array.cast(pa.date32()).cast(pa.int32()), dtype=pl.Int32)
        return days.cast(pl.Int64) * 86_400_000_000
    if not pa.types.is_timestamp(kind):
        raise ContractError(f"event-time column {name!r} must be a timestamp or a date, not {kind}")
    raw = pl.Series(name, array.view(pa.int64()))
    if kind.unit == "us":
        return raw
    if kind.unit == "ns":
        return raw // 1_000
    return raw * (1_000 if kind.unit == "ms" else 1_000_000)


# Preparation ----------------------------------------------------------------------------------------
def _as_arrow(events: Any) -> pa.Table:
    if isinstance(events, pa.Table):
        return events
    if isinstance(events, pl.DataFrame):
        return events.to_arrow()
    if isinstance(events, pa.RecordBatch):
        return pa.Table.from_batches([events])
    raise TypeError(f"events must be a pyarrow Table or a polars DataFrame, not {type(events).__name__}")


def _check_source(view: FeatureView, schema: pa.Schema) -> None:
    missing = [c for c in view.source_columns if schema.get_field_index(c) < 0]
    if missing:
        raise ContractError(
            f"feature view {view.key}: the events lack column(s) {missing} (their columns: "
            f"{', '.join(schema.names)})"
        )
    kind = schema.field(view.event_time).type
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        raise ContractError(
            f"feature view {view.key}: event_time column {view.event_time!r} must be a timestamp or a date, "
            f"not {kind}"
        )
    for index, aggregation in enumerate(view.aggregations):
        if aggregation.function in ("sum", "mean") and aggregation.column is not None:
            source = schema.field(aggregation.column).type
            if not (
                pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_decimal(source)
            ):
                raise ContractError(
                    f"feature view {view.key}: aggregations.{index} ({aggregation.name}) is a "
                    f"{aggregation.function} over {aggregation.column!r}, which is {source}, not a number"
                )


def _events_frame(table: pa.Table, view: FeatureView) -> pl.DataFrame:
    """The columns the view needs, with ``_T`` (event time, µs) and ``_B`` (bucket); events with a null
    event time or entity key dropped."""
    keys = list(view.entities)
    values = [c for c in dict.fromkeys(a.column for a in view.aggregations if a.column) if c not in keys]
    tiebreak = [c for c in TIEBREAK_COLUMNS if c in table.column_names and c not in keys and c not in values]
    selected = table.select([*keys, *values, *tiebreak])
    frame = pl.from_arrow(selected)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(event_time_us(table.column(view.event_time), view.event_time).alias(_T))
    frame = frame.drop_nulls([*keys, _T])
    return frame.with_columns((pl.col(_T) // view.hop_us).alias(_B))


def _is_float(dtype: pl.DataType) -> bool:
    return dtype.is_float()


def _sum_dtype(dtype: pl.DataType) -> pl.DataType:
    if dtype.is_integer():
        return pl.Int64()
    if isinstance(dtype, pl.Decimal):
        return pl.Decimal(38, dtype.scale)
    return pl.Float64()


def _bucket_nodes(frame: pl.DataFrame, view: FeatureView) -> tuple[list[_Partial], pl.DataFrame]:
    """One row per (entity, bucket) with every partial aggregate."""
    tiebreak = [c for c in TIEBREAK_COLUMNS if c in frame.columns]
    partials: list[_Partial] = []
    exprs: list[pl.Expr] = []
    pairwise: dict[str, str] = {}  # float sum partial -> source column
    for i, aggregation in enumerate(view.aggregations):
        column = aggregation.column
        function = aggregation.function
        if function == "count":
            count = pl.len() if column is None else pl.col(column).count()
            exprs.append(count.cast(pl.Int64).alias(f"__n{i}"))
            partials.append(_Partial(f"__n{i}", "add", i))
            continue
        assert column is not None
        dtype = frame.schema[column]
        if function in ("sum", "mean"):
            exprs.append(pl.col(column).count().cast(pl.Int64).alias(f"__n{i}"))
            partials.append(_Partial(f"__n{i}", "add", i))
            total = _sum_dtype(dtype)
            if _is_float(dtype):
                pairwise[f"__s{i}"] = column
            else:
                exprs.append(pl.col(column).cast(total).sum().alias(f"__s{i}"))
            partials.append(_Partial(f"__s{i}", "add", i))
        elif function in ("min", "max"):
            reduce = pl.col(column).min() if function == "min" else pl.col(column).max()
            exprs.append(reduce.alias(f"__m{i}"))
            partials.append(_Partial(f"__m{i}", function, i))
        else:  # last
            ordered = pl.col(column).sort_by([_T, *tiebreak, column], nulls_last=False)
            exprs.append(ordered.last().alias(f"__v{i}"))
            partials.append(_Partial(f"__v{i}", "last", i))
    nodes = frame.group_by([_K, _B]).agg(exprs)
    if pairwise:
        nodes = nodes.join(_pairwise_sums(frame, [_K], pairwise), on=[_K, _B], how="left")
    # Sorted by (entity, bucket), so the row number orders buckets: `_LB` finds the latest one.
    nodes = nodes.rename({_B: _I}).sort([_K, _I]).with_row_index(_LB).with_columns(pl.col(_LB).cast(pl.Int64))
    return partials, nodes


def _alone(first: str) -> pl.Expr:
    """``__alone``: the row is the only one of its run of sorted rows (``first`` marks each run's first)."""
    return (pl.col(first) & pl.col(first).shift(-1).fill_null(True)).alias("__alone")


def _pairwise_sums(frame: pl.DataFrame, keys: list[str], columns: dict[str, str]) -> pl.DataFrame:
    """Float sums per (entity, bucket), each the same bits whatever the row order or engine threading:
    values are sorted, then added two at a time (a + b == b + a exactly) up a binary tree."""
    names = list(columns)
    values = frame.select(
        *keys, _B, *[pl.col(c).cast(pl.Float64).fill_null(0.0).alias(n) for n, c in columns.items()]
    )
    values = values.sort([*keys, _B, *names])
    first = pl.any_horizontal([pl.col(c) != pl.col(c).shift(1) for c in [*keys, _B]]).fill_null(True)
    values = values.with_columns(first.alias("__first")).with_columns(_alone("__first"))
    # A bucket's lone event is its own sum (a one-value group sums to that value, bit for bit): only the
    # buckets with several events go up the tree, ranked by their position from the bucket's first row.
    alone = values.filter(pl.col("__alone")).select(*keys, _B, *names)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    rest = values.filter(~pl.col("__alone")).with_columns(
        (row - pl.when(pl.col("__first")).then(row).forward_fill()).alias(_R)
    )
    rest = rest.select(*keys, _B, *names, _R)
    while (ranks := int_bounds(rest[_R])) is not None and ranks[1] > 0:
        rest = rest.group_by([*keys, _B, pl.col(_R) // 2]).agg(pl.col(names).sum())
    return pl.concat([alone, rest.select(*keys, _B, *names)])


def _window_ends(nodes: pl.DataFrame, keys: list[str], span: int) -> pl.DataFrame:
    """Every (entity, end) whose largest window (``span`` buckets) holds a bucket of ``nodes``: the
    union of ``[b + 1, b + span]`` over the entity's buckets ``b``, built from runs of nearby buckets."""
    buckets = nodes.select(*keys, _I).sort([*keys, _I])
    gap = (pl.col(_I) - pl.col(_I).shift(1).over(keys)).fill_null(span + 1)
    runs = (
        buckets.with_columns((gap > span).cum_sum().over(keys).alias("__run"))
        .group_by([*keys, "__run"])
        .agg((pl.col(_I).min() + 1).alias("__from"), (pl.col(_I).max() + span + 1).alias("__to"))
    )
    return runs.select(*keys, pl.int_ranges("__from", "__to").alias(_E)).explode(_E)


def _restrict(rows: pl.DataFrame, window_ends: WindowEnds, view: FeatureView) -> pl.DataFrame:
    """Keep the rows named by ``window_ends`` (see :func:`compute_features`)."""
    if window_ends is None:
        return rows
    keys = list(view.entities)
    if isinstance(window_ends, pa.Table | pl.DataFrame):
        wanted = _as_arrow(window_ends)
        missing = [c for c in [*keys, FEATURE_TS] if c not in wanted.column_names]
        if missing:
            raise ValueError(
                f"window_ends lacks column(s) {missing}; it needs the entity keys and {FEATURE_TS!r}"
            )
        frame = pl.from_arrow(wanted.select(keys))
        assert isinstance(frame, pl.DataFrame)
        micros = event_time_us(wanted.column(FEATURE_TS), FEATURE_TS)
        frame = frame.with_columns(
            [pl.col(k).cast(rows.schema[k]) for k in keys]
            + [micros.cast(pl.Datetime("us", "UTC")).alias(FEATURE_TS)]
        )
        return rows.join(frame.unique(), on=[*keys, FEATURE_TS], how="semi")
    micros_list = [duration_us(_utc(e) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) for e in window_ends]
    moments = pl.Series(micros_list, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    return rows.filter(pl.col(FEATURE_TS).is_in(moments.implode()))


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# Window queries -------------------------------------------------------------------------------------
def _uses_span(partial: _Partial, view: FeatureView, span: int) -> bool:
    return view.aggregations[partial.aggregation].window_us // view.hop_us == span


def _fold(partial: str, combine: Combine, *, reverse: bool) -> pl.Expr:
    """The running combination of ``partial`` along a block (null: no bucket at that position), carried
    over to the positions without a bucket."""
    column = pl.col(partial)
    if combine == "add":
        running = column.cum_sum(reverse=reverse)
    elif combine == "min":
        running = column.cum_min(reverse=reverse)
    else:  # max, and the latest bucket of `last`
        running = column.cum_max(reverse=reverse)
    return running.backward_fill() if reverse else running.forward_fill()


def _grid(nodes: pl.DataFrame, span: int) -> pl.DataFrame:
    """Every bucket position a window query touches, densely, per entity: ``[b - span + 1, b + span - 1]``
    around each bucket ``b`` (runs closer than ``2 * span`` merged), sorted by (entity, position).

    ``_LB`` is the row in ``nodes`` of the bucket at that position (null: no bucket); ``__prev`` and
    ``__next`` are the rows of the nearest bucket at or before / at or after it (any entity)."""
    gap = pl.col(_I) - pl.col(_I).shift(1)
    starts = ((pl.col(_K) != pl.col(_K).shift(1)) | (gap >= 2 * span)).fill_null(True)
    runs = nodes.select(_K, _I, (starts.cum_sum() - 1).alias("__run"))
    ranges = (
        runs.group_by("__run")
        .agg(
            pl.col(_K).first(),
            (pl.col(_I).min() - span + 1).alias("__from"),
            (pl.col(_I).max() + span).alias("__to"),
        )
        .sort("__run")
        .with_columns((pl.col("__to") - pl.col("__from")).alias("__len"))
        .with_columns((pl.col("__len").cum_sum() - pl.col("__len")).alias("__offset"))
    )
    grid = ranges.select(_K, pl.int_ranges("__from", "__to").alias(_I)).explode(_I)
    # Where each bucket lands in the grid: its run's offset plus its distance from the run's start.
    run = runs["__run"]
    slot = ranges["__offset"].gather(run) + (nodes[_I] - ranges["__from"].gather(run))
    rows = pl.repeat(None, grid.height, dtype=pl.Int64, eager=True).scatter(slot, nodes[_LB])
    return grid.with_columns(
        rows.alias(_LB), rows.forward_fill().alias("__prev"), rows.backward_fill().alias("__next")
    )


def block_folds(
    nodes: pl.DataFrame, partials: list[_Partial], span: int
) -> tuple[dict[str, Combine], pl.DataFrame]:
    """How each folded partial combines (``last`` folds the latest bucket row, ``_LB``, with max) and, per
    bucket node, its running folds inside its epoch-aligned block of ``span`` buckets: ``<name>__suffix``
    (from the node to the block's end) and ``<name>__prefix`` (from the block's start to the node)."""
    combines: dict[str, Combine] = {p.name: p.combine for p in partials if p.combine != "last"}
    if any(p.combine == "last" for p in partials):
        combines[_LB] = "max"
    number = pl.col(_I) // span
    boundary = ((pl.col(_K) != pl.col(_K).shift(1)) | (number != number.shift(1))).fill_null(True)
    blocks = nodes.select(*combines, boundary.alias("__first")).with_columns(
        _alone("__first"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("__row"),
    )
    # A node alone in its block is its own prefix and suffix (an `add` fold starts from zero, so it is
    # ``0 + value``: -0.0 folds to 0.0 as in a longer block); only the other blocks need windowed folds.
    several = blocks.filter(~pl.col("__alone")).with_columns(pl.col("__first").cum_sum().alias("__block"))
    folded = several.select(
        "__row",
        *[_fold(c, m, reverse=True).over("__block").alias(c + _SUF) for c, m in combines.items()],
        *[_fold(c, m, reverse=False).over("__block").alias(c + _PRE) for c, m in combines.items()],
    )
    own = [pl.col(c) + 0 if m == "add" else pl.col(c) for c, m in combines.items()]
    single = blocks.filter(pl.col("__alone")).select(
        "__row",
        *[e.alias(c + _SUF) for e, c in zip(own, combines, strict=True)],
        *[e.alias(c + _PRE) for e, c in zip(own, combines, strict=True)],
    )
    folds = pl.concat([folded, single.cast(folded.schema)]).sort("__row").drop("__row")
    return combines, folds


def _windows(grid: pl.DataFrame, nodes: pl.DataFrame, partials: list[_Partial], span: int) -> list[pl.Series]:
    """The partials of windows of ``span`` buckets at every grid row ``x`` (the window ``[x - span + 1, x]``,
    ending at bucket ``x + 1``).

    Buckets are cut into blocks of ``span`` aligned to the epoch, so a window is one whole block or the
    suffix of one block plus the prefix of the next (van Herk / Gil-Werman). Prefixes and suffixes are
    running folds over a block's buckets in bucket order: a fold depends only on its own block's buckets,
    so every window comes out bit-identical however many other events were passed in. A grid row takes
    the prefix of the nearest bucket at or before it, the suffix of the nearest at or after it, when that
    bucket is in its block; the grid is dense, so the window's first bucket is ``span - 1`` rows up."""
    folded = [p for p in partials if p.combine != "last"]
    values = [p for p in partials if p.combine == "last"]
    combines, folds = block_folds(nodes, partials, span)
    prev, after = grid["__prev"], grid["__next"]
    here = grid.select(_K, _I)
    same_prev = (nodes[_K].gather(prev) == here[_K]) & (nodes[_I].gather(prev) // span == here[_I] // span)
    same_next = (nodes[_K].gather(after) == here[_K]) & (nodes[_I].gather(after) // span == here[_I] // span)
    lookups = pl.DataFrame(
        [folds[c + _PRE].gather(prev).alias(c + _PRE) for c in combines]
        + [folds[c + _SUF].gather(after).alias(c + _SUF) for c in combines]
        + [
            same_prev.fill_null(False).alias("__same_prev"),
            same_next.fill_null(False).alias("__same_next"),
            here[_I],
        ]
    )
    frame = lookups.select(
        *[pl.when("__same_next").then(pl.col(c + _SUF)).shift(span - 1).alias(c + _SUF) for c in combines],
        *[pl.when("__same_prev").then(pl.col(c + _PRE)).alias(c + _PRE) for c in combines],
        ((pl.col(_I) - span + 1) % span == 0).alias("__whole"),
    )
    whole = pl.col("__whole")  # the window is exactly one block: the suffix from its first bucket
    merged: list[pl.Expr] = []
    for name, combine in combines.items():
        low, high = pl.col(name + _SUF), pl.col(name + _PRE)
        if combine == "add":
            low, high = low.fill_null(0), high.fill_null(0)
            both = low + high
        elif combine == "min":
            both = pl.min_horizontal(low, high)
        else:
            both = pl.max_horizontal(low, high)
        merged.append(pl.when(whole).then(low).otherwise(both).alias(name))
    frame = frame.select(merged)
    out = [frame[p.name] for p in folded]
    if values:  # `last` is the value of the window's latest bucket
        latest = frame[_LB]
        out += [nodes[p.name].gather(latest).alias(p.name) for p in values]
    return out


def _finish(index: int, aggregation: Any) -> pl.Expr:
    function = aggregation.function
    name = aggregation.name
    if function == "count":
        return pl.col(f"__n{index}").fill_null(0).alias(name)
    if function == "sum":
        return pl.when(pl.col(f"__n{index}") > 0).then(pl.col(f"__s{index}")).alias(name)
    if function == "mean":
        count = pl.col(f"__n{index}")
        return pl.when(count > 0).then(pl.col(f"__s{index}").cast(pl.Float64) / count).alias(name)
    if function in ("min", "max"):
        return pl.col(f"__m{index}").alias(name)
    return pl.col(f"__v{index}").alias(name)


__all__ = [
    "TIEBREAK_COLUMNS",
    "affected_window_ends",
    "compute_features",
    "event_time_us",
    "feature_schema",
]
