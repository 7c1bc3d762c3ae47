"""The offline layout of a feature view: one row per change of an entity's feature values.

Semantics (docs/streaming.md, "Offline layout"): the window aggregates of :mod:`.windows` at every hop end
``e`` while a window holds an event (the "dense" rows) are stored as *segments*: a row
``(keys..., feature_ts, feature_valid_to, aggregates...)`` says that the aggregates hold at every hop end
``feature_ts <= e < feature_valid_to``, and the segments of an entity are maximal (two consecutive ones
either differ in a value or leave a gap of hop ends where every window is empty). ``feature_valid_to`` is
the end where the values change or the windows become empty.

Values change only at the end after an event's bucket enters a window (``b + 1``) and the end after it leaves
(``b + n + 1`` for a window of ``n`` buckets), so the aggregates are evaluated only at those candidate ends:
at most ``2 × buckets × distinct window sizes`` evaluations and rows, never ``window / hop`` per event. The
evaluation is the block scheme of :mod:`.windows` (a window is the suffix of one epoch-aligned block plus the
prefix of the next), looked up at the candidates instead of at every hop end, so every value is bit-for-bit
the dense row's value, whichever events around it were passed in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa

from lakebed.errors import FeatureSourceError
from lakebed.pipelines.features.windows import (
    _I,
    _K,
    _LB,
    _PRE,
    _SUF,
    _as_arrow,
    _bucket_nodes,
    _events_frame,
    _finish,
    _Partial,
    _uses_span,
    block_folds,
    event_time_us,
    feature_schema,
)
from lakebed.schemas.features import FEATURE_TS, FEATURE_VALID_TO, FeatureView

_E = "__lakebed_e"  # candidate end, in buckets
_ON = "__lakebed_active"
_PART = "__lakebed_part"
CHUNK_EVENTS = 2_000_000
"""About how many events :func:`iter_segments` evaluates at once (memory is a few hundred bytes per event)."""


def segment_schema(view: FeatureView, source_schema: pa.Schema) -> pa.Schema:
    """:func:`~.windows.feature_schema` with ``feature_valid_to`` after ``feature_ts``."""
    dense = feature_schema(view, source_schema)
    at = dense.get_field_index(FEATURE_TS) + 1
    return dense.insert(at, pa.field(FEATURE_VALID_TO, pa.timestamp("us", tz="UTC"), nullable=False))


def compute_segments(
    events: pa.Table | pl.DataFrame, view: FeatureView, *, since: pa.Table | None = None
) -> pa.Table:
    """The segments of ``view`` over ``events``, sorted by entity keys then ``feature_ts``.

    ``since`` (entity keys and ``feature_ts``) restricts the output to those entities and to hop ends at or
    after their ``feature_ts``: the first segment of an entity then starts there (cut, not maximal, on its
    left). ``events`` must hold every event that falls in a window ending at or after it."""
    table = _as_arrow(events)
    schema = segment_schema(view, table.schema)
    frame = _events_frame(table, view)
    keys = list(view.entities)
    hop = view.hop_us
    ids = frame.select(keys).unique().sort(keys)
    frame = frame.join(ids.with_row_index(_K).with_columns(pl.col(_K).cast(pl.Int64)), on=keys, how="left")
    if frame.height == 0:
        return schema.empty_table()
    partials, nodes = _bucket_nodes(frame, view)
    spans = sorted({a.window_us // hop for a in view.aggregations})
    # A float sum's rounding depends on how a window splits into blocks, which changes at the end where a
    # window is exactly one block and the end after it: those are candidates too.
    rounding = sorted(
        {
            a.window_us // hop
            for a in view.aggregations
            if a.function in ("sum", "mean") and a.column is not None and frame.schema[a.column].is_float()
        }
    )
    candidates = _candidates(nodes, spans, rounding, _starts(since, ids, keys, hop))
    if candidates.height == 0:
        return schema.empty_table()
    lookup = _Lookup(nodes, candidates, spans[-1])
    columns: list[pl.Series] = []
    for span in spans:
        columns += lookup.windows(nodes, [p for p in partials if _uses_span(p, view, span)], span)
    values = candidates.with_columns(columns).with_columns(lookup.active().alias(_ON))
    values = values.select(_K, _E, _ON, *[_finish(i, a) for i, a in enumerate(view.aggregations)])
    segments = _segments(values, [a.name for a in view.aggregations])
    restored = ids.select([pl.col(k).gather(segments[_K]) for k in keys])
    times = segments.select(
        (pl.col(_E) * hop).cast(pl.Datetime("us", "UTC")).alias(FEATURE_TS),
        (pl.col("__to") * hop).cast(pl.Datetime("us", "UTC")).alias(FEATURE_VALID_TO),
    )
    names = [a.name for a in view.aggregations]
    out = pl.concat([restored, times, segments.select(names)], how="horizontal")
    return out.to_arrow().cast(schema)


def iter_segments(
    events: pa.Table | pl.DataFrame, view: FeatureView, *, chunk_events: int = CHUNK_EVENTS
) -> Iterator[pa.Table]:
    """:func:`compute_segments` of ``events`` in groups of whole entities of about ``chunk_events``
    events each (by a hash of the keys), so memory follows the group, not the data. An entity's segments
    depend only on its own events, so the union is exactly ``compute_segments(events, view)``; each
    group's rows are sorted by keys then ``feature_ts``."""
    table = _as_arrow(events)
    parts = -(-table.num_rows // max(1, chunk_events))
    if parts <= 1:
        yield compute_segments(table, view)
        return
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    keys = list(view.entities)
    frame = frame.with_columns((pl.struct(keys).hash() % parts).alias(_PART))
    groups = frame.partition_by(_PART, include_key=False)
    del frame
    groups.reverse()
    while groups:  # each group is let go once evaluated
        yield compute_segments(groups.pop(), view)


def dense_rows(segments: pa.Table, view: FeatureView) -> pa.Table:
    """The dense rows (one per hop end while a window holds an event) that ``segments`` stand for."""
    frame = pl.from_arrow(segments)
    assert isinstance(frame, pl.DataFrame)
    hop = view.hop_us
    start = pl.col(FEATURE_TS).dt.epoch("us") // hop
    stop = pl.col(FEATURE_VALID_TO).dt.epoch("us") // hop
    frame = frame.with_columns(pl.int_ranges(start, stop).alias(_E)).explode(_E)
    ts = (pl.col(_E) * hop).cast(pl.Datetime("us", "UTC")).alias(FEATURE_TS)
    names = [c for c in frame.columns if c not in (FEATURE_TS, FEATURE_VALID_TO, _E)]
    out = frame.with_columns(ts).select(*view.entities, FEATURE_TS, *names[len(view.entities) :])
    dense = pa.schema([f for f in segments.schema if f.name != FEATURE_VALID_TO])
    return out.to_arrow().cast(dense)


# Candidates ------------------------------------------------------------------------------------------
def _starts(since: pa.Table | None, ids: pl.DataFrame, keys: list[str], hop: int) -> pl.DataFrame | None:
    """``since`` as ``(_K, _E)``: per entity id, the first end (in buckets) to compute."""
    if since is None:
        return None
    frame = pl.from_arrow(since.select(keys))
    assert isinstance(frame, pl.DataFrame)
    micros = event_time_us(since.column(FEATURE_TS), FEATURE_TS)
    if ((micros % hop) != 0).any():
        raise FeatureSourceError("since= holds a feature_ts that is not a hop end")
    frame = frame.with_columns([pl.col(k).cast(ids.schema[k]) for k in keys]).with_columns(
        (micros // hop).alias(_E)
    )
    indexed = ids.with_row_index(_K).with_columns(pl.col(_K).cast(pl.Int64))
    return frame.join(indexed, on=keys, how="inner").group_by(_K).agg(pl.col(_E).min())


def _candidates(
    nodes: pl.DataFrame, spans: list[int], rounding: list[int], starts: pl.DataFrame | None
) -> pl.DataFrame:
    """Every end (per entity id) where a value can change: a bucket entering (``b + 1``) or leaving
    (``b + n + 1``) a window, and for the ``rounding`` spans the end where the window is exactly the
    bucket's block and the one after; with ``starts``, those at or after each start, and the start."""
    buckets = nodes.select(_K, _I)
    parts = [buckets.select(_K, (pl.col(_I) + 1).alias(_E))]
    parts += [buckets.select(_K, (pl.col(_I) + n + 1).alias(_E)) for n in spans]
    for n in rounding:
        whole = (pl.col(_I) // n + 1) * n
        parts += [buckets.select(_K, whole.alias(_E)), buckets.select(_K, (whole + 1).alias(_E))]
    candidates = pl.concat(parts)
    if starts is not None:
        candidates = candidates.join(starts.rename({_E: "__from"}), on=_K, how="inner")
        candidates = pl.concat([candidates.filter(pl.col(_E) >= pl.col("__from")).select(_K, _E), starts])
    if candidates.height == 0:
        return candidates
    # Unique and sorted through one composite int64 key (entity * width + end): far cheaper than on two.
    k, e = candidates[_K].to_numpy(), candidates[_E].to_numpy()
    low = int(e.min())
    width = int(e.max()) - low + 1
    if (int(k.max()) + 1) * width >= 2**62:
        raise FeatureSourceError("too many entities times hop buckets for one feature computation")
    composite = pl.Series(k * width + (e - low)).unique().sort()
    return pl.DataFrame({_K: composite // width, _E: composite % width + low})


class _Lookup:
    """Nearest buckets of each candidate end, found by binary search on one composite (entity, bucket)
    key: nodes are sorted by (entity, bucket), so ``entity * width + bucket`` is sorted too."""

    def __init__(self, nodes: pl.DataFrame, candidates: pl.DataFrame, largest: int) -> None:
        self.node_k = nodes[_K].to_numpy()
        self.node_i = nodes[_I].to_numpy()
        low, high = int(self.node_i.min()), int(self.node_i.max())
        self.base = low - largest - 1
        self.width = high - self.base + largest + 2
        if (int(self.node_k.max()) + 1) * self.width >= 2**62:
            raise FeatureSourceError("too many entities times hop buckets for one feature computation")
        self.composite = self.node_k * self.width + (self.node_i - self.base)
        self.k = candidates[_K].to_numpy()
        self.x = candidates[_E].to_numpy()
        self.largest = largest

    def _at_or_before(self, position: np.ndarray) -> np.ndarray:
        """Row of the entity's nearest bucket at or before ``position`` (-1: none)."""
        found = np.searchsorted(self.composite, self.k * self.width + (position - self.base), "right") - 1
        ok = found >= 0
        ok[ok] = self.node_k[found[ok]] == self.k[ok]
        return np.where(ok, found, -1)

    def _at_or_after(self, position: np.ndarray) -> np.ndarray:
        """Row of the entity's nearest bucket at or after ``position`` (-1: none)."""
        found = np.searchsorted(self.composite, self.k * self.width + (position - self.base), "left")
        ok = found < len(self.composite)
        ok[ok] = self.node_k[found[ok]] == self.k[ok]
        return np.where(ok, found, -1)

    def active(self) -> pl.Series:
        """Whether the largest window ending at each candidate holds a bucket (a dense row exists)."""
        before = self._at_or_before(self.x - 1)
        safe = np.where(before >= 0, before, 0)
        return pl.Series((before >= 0) & (self.node_i[safe] >= self.x - self.largest))

    def windows(self, nodes: pl.DataFrame, partials: list[_Partial], span: int) -> list[pl.Series]:
        """The partials of the windows of ``span`` buckets ending at each candidate (see
        :func:`~.windows._windows`, of which this is the sparse form)."""
        values = [p for p in partials if p.combine == "last"]
        if not partials:
            return []
        combines, folds = block_folds(nodes, partials, span)
        first, last = self.x - span, self.x - 1  # the window's buckets
        after = self._at_or_after(first)
        before = self._at_or_before(last)
        safe_after, safe_before = np.where(after >= 0, after, 0), np.where(before >= 0, before, 0)
        use_after = (after >= 0) & (self.node_i[safe_after] // span == first // span)
        use_before = (before >= 0) & (self.node_i[safe_before] // span == last // span)
        whole = first % span == 0  # the window is exactly one block: the suffix from its first bucket
        use_before &= ~whole
        frame = pl.DataFrame(
            {
                "__a": pl.Series(np.where(use_after, after, -1)),
                "__b": pl.Series(np.where(use_before, before, -1)),
            }
        ).with_columns(pl.when(pl.col(c) >= 0).then(pl.col(c)) for c in ("__a", "__b"))
        merged: list[pl.Series] = []
        for name, combine in combines.items():
            low = folds[name + _SUF].gather(frame["__a"])
            high = folds[name + _PRE].gather(frame["__b"])
            pair = pl.DataFrame({"low": low, "high": high})
            if combine == "add":
                both = pl.col("low").fill_null(0) + pl.col("high").fill_null(0)
                expr = pl.when(pl.col("low").is_null() & pl.col("high").is_null()).then(None).otherwise(both)
            elif combine == "min":
                expr = pl.min_horizontal("low", "high")
            else:
                expr = pl.max_horizontal("low", "high")
            merged.append(pair.select(expr.alias(name)).to_series())
        out = [s for s in merged if s.name != _LB]
        if values:
            latest = next(s for s in merged if s.name == _LB)
            out += [nodes[p.name].gather(latest).alias(p.name) for p in values]
        return out


# Segments -------------------------------------------------------------------------------------------
def _signature(series: pl.Series) -> pl.Series:
    """``series`` in a form whose equality is bit equality (floats by their bits: 0.0 is not -0.0, and a
    NaN equals the same NaN), so segments split exactly where a stored value would differ."""
    if not series.dtype.is_float():
        return series
    width = np.int64 if series.dtype == pl.Float64 else np.int32
    bits = pl.Series(series.fill_null(0.0).to_numpy().view(width))
    return pl.select(pl.when(series.is_null()).then(None).otherwise(bits)).to_series()


def _segments(values: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Candidates (sorted by entity and end) → maximal segments with their end ``__to``."""
    same_entity = pl.col(_K) == pl.col(_K).shift(1)
    signatures = values.select(_K, _ON, *[_signature(values[n]).alias(n) for n in names])
    changed = pl.any_horizontal([pl.col(n).ne_missing(pl.col(n).shift(1)) for n in names] or [pl.lit(False)])
    starts = signatures.select(
        (pl.col(_ON) & (~same_entity.fill_null(False) | ~pl.col(_ON).shift(1).fill_null(False) | changed))
        .fill_null(True)
        .alias("__start")
    ).to_series()
    marked = values.with_columns(starts.alias("__start"))
    boundary = pl.col("__start") | ~pl.col(_ON)
    marked = marked.with_columns(
        pl.when(boundary).then(pl.col(_E)).shift(-1).backward_fill().over(_K).alias("__to")
    )
    return marked.filter(pl.col("__start")).drop("__start", _ON)


def coalesce(segments: pa.Table, view: FeatureView) -> pa.Table:
    """``segments`` (non-overlapping per entity) with every run of touching segments of equal values
    (bit for bit) merged into one, sorted by keys then ``feature_ts``."""
    frame = pl.from_arrow(segments)
    assert isinstance(frame, pl.DataFrame)
    keys = list(view.entities)
    names = [a.name for a in view.aggregations]
    frame = frame.sort([*keys, FEATURE_TS])
    same_entity = pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)) for k in keys])
    touching = pl.col(FEATURE_TS) == pl.col(FEATURE_VALID_TO).shift(1)
    signatures = frame.select(*[_signature(frame[n]).alias(n) for n in names])
    equal = pl.all_horizontal([pl.col(n).eq_missing(pl.col(n).shift(1)) for n in names] or [pl.lit(True)])
    start = signatures.select(equal.alias("__eq")).to_series()
    frame = frame.with_columns(start.alias("__eq"))
    group = (~(same_entity & touching & pl.col("__eq")).fill_null(False)).cum_sum().alias("__group")
    merged = (
        frame.with_columns(group)
        .group_by("__group", maintain_order=True)
        .agg(pl.all().exclude(FEATURE_VALID_TO, "__eq").first(), pl.col(FEATURE_VALID_TO).last())
        .drop("__group")
    )
    return merged.select(segments.schema.names).to_arrow().cast(segments.schema)


__all__ = ["CHUNK_EVENTS", "coalesce", "compute_segments", "dense_rows", "iter_segments", "segment_schema"]
