"""Feature materialization: the incremental path (per raw commit), the backfill, late events, and keeping the
offline (Delta) and online stores up to date.

Semantics (docs/streaming.md, "Feature store semantics"):

* A micro-batch, for features, is one commit (Delta version) of the raw table. Lateness is decided per raw
  version ``v``: ``watermark_v = max(event_time of raw versions < v) - allowed_lateness``; an event of
  ``v`` with ``event_time < watermark_v`` is late. Late events go to ``fv_<view>_v<N>__late`` (with
  ``_raw_version``, ``_watermark`` and ``_reason``), never into features. Events with a null event time
  or a null entity key can be in no window: they go to the late table too (``_reason`` says which).
* The offline table ``fv_<view>_v<N>`` always holds the segments (:mod:`.changes`) of every on-time raw
  event processed so far: one row per change of an entity's values, valid until ``feature_valid_to``. The
  incremental path recomputes, per entity the new events touch, its segments from the first hop end they
  reach on, from *all* on-time raw events from one window before it (the raw table at the processed
  version, minus the recorded late events), and splices them in (:mod:`.increment`). The backfill replays
  every raw version in order with the same decisions and overwrites the table: both give identical rows.
  A table of the earlier dense layout (one row per hop end) is rewritten by a backfill on the next run.
* Online store: after each offline commit, per entity, what a point-in-time lookup at the watermark (the
  max event time seen) returns: the values of its segment with the greatest ``feature_ts <= watermark``,
  with ``feature_ts`` the hop end that lookup matches. Segments starting later describe a future without
  further events (short windows read 0), so they are not served until the watermark reaches them.
* State lives in the offline table's commits: ``Transaction(f"features:{view}:v{N}", version=<last raw
  version processed>)`` and the commit metadata ``lakebed.watermark_us`` (max event time seen, µs).
  The late table's commits carry the same transaction id, so a run that stops between the two commits
  never records a late event twice.

The rows each raw version added, and their split by the lateness rule, come from
:mod:`lakebed.pipelines.features.raw_changes` (which also says why the raw table must be append-only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import Transaction

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import FeatureSourceError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import LineageRun, lineage_run
from lakebed.metrics import MATERIALIZE_DURATION
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, commit
from lakebed.pipelines.features.changes import compute_segments, iter_segments, segment_schema
from lakebed.pipelines.features.increment import (
    first_ends,
    keys_in,
    on_time_history,
    open_table_or_none,
    splice,
)
from lakebed.pipelines.features.online import OnlineStore, default_online_store
from lakebed.pipelines.features.raw_changes import (
    LATE_COLUMNS,
    RawChanges,
    VersionSplit,
    mark_late,
    split_version,
)
from lakebed.pipelines.features.registry import FeatureRegistry
from lakebed.pipelines.features.windows import affected_window_ends
from lakebed.pipelines.read import read_table
from lakebed.schemas.durations import format_duration
from lakebed.schemas.features import FEATURE_TS, FEATURE_VALID_TO, FeatureView

WATERMARK_KEY = "lakebed.watermark_us"
RAW_VERSION_KEY = "lakebed.features.raw_version"
VIEW_KEY = "lakebed.features.view"
HASH_KEY = "lakebed.features.definition_hash"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# State ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureState:
    """Where a view version's processing stands, read from its offline table's commits."""

    raw_version: int | None
    """The last raw Delta version processed (None: nothing yet)."""
    watermark_us: int | None
    """Max event time seen through ``raw_version``, µs since the epoch (None: no event yet)."""
    offline_version: int | None = None
    """The offline table's Delta version that recorded this state."""

    @property
    def watermark(self) -> dt.datetime | None:
        return None if self.watermark_us is None else _EPOCH + dt.timedelta(microseconds=self.watermark_us)


def read_state(view: FeatureView, *, config: LakebedConfig | None = None) -> FeatureState:
    """The processing state of ``view`` (its offline table's transaction and watermark metadata)."""
    config = config or get_config()
    table = open_table_or_none(view.offline_table, config)
    if table is None:
        return FeatureState(None, None)
    version = table.transaction_version(view.app_id)
    if version is None:
        return FeatureState(None, None)
    for limit in (20, None):
        for entry in table.history(limit):
            if entry.get(RAW_VERSION_KEY) == str(version):
                mark = entry.get(WATERMARK_KEY)
                return FeatureState(int(version), int(mark) if mark else None, int(entry["version"]))
    raise FeatureSourceError(
        f"offline table {view.offline_table!r} records raw version {version} for {view.app_id!r} but no "
        f"commit carries its watermark ({WATERMARK_KEY}); rebuild it with backfill"
    )


def _dense_layout(view: FeatureView, config: LakebedConfig) -> bool:
    """Whether ``view``'s offline table holds one row per hop end (the layout before segments)."""
    table = open_table_or_none(view.offline_table, config)
    return table is not None and FEATURE_VALID_TO not in pa.schema(table.schema().to_arrow()).names


# Result --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaterializeResult:
    """What a materialize or backfill run did."""

    view: str
    offline_table: str
    late_table: str
    raw_versions: tuple[int, ...] = ()
    """Raw Delta versions processed by this run, in order."""
    raw_version: int | None = None
    """The last raw version processed (the state after the run)."""
    events: int = 0
    """Raw rows read (added by the processed versions)."""
    late_events: int = 0
    """Rows written to the late table by this run."""
    feature_rows: int = 0
    """Feature rows merged (or, for a backfill, written) into the offline table."""
    offline_versions: tuple[int, ...] = ()
    online_rows: int = 0
    watermark: dt.datetime | None = None
    backfill: bool = False
    notes: tuple[str, ...] = ()
    """Things worth telling the operator (an online rebuild, versions left undecided offline, ...)."""


# Incremental ---------------------------------------------------------------------------------------
def materialize(
    view: FeatureView,
    *,
    config: LakebedConfig | None = None,
    run: RunContext | None = None,
    online: OnlineStore | None = None,
    update_online: bool = True,
    versions_per_commit: int = 1,
) -> MaterializeResult:
    """Process the raw versions committed since the last run: late events to the late table, affected
    feature rows recomputed and merged into the offline table (one commit per ``versions_per_commit`` raw
    versions, carrying the state), then the online store updated.

    Registers ``view`` first (a changed definition under an old version is refused). ``online`` defaults
    to the SQLite store under the lakebed home; ``update_online=False`` skips it. Its seconds go to
    ``lakebed_feature_materialization_duration_seconds``."""
    with MATERIALIZE_DURATION.labels(view.name, str(view.version)).time():
        return _materialize(
            view,
            config=config,
            run=run,
            online=online,
            update_online=update_online,
            versions_per_commit=versions_per_commit,
        )


def _materialize(
    view: FeatureView,
    *,
    config: LakebedConfig | None,
    run: RunContext | None,
    online: OnlineStore | None,
    update_online: bool,
    versions_per_commit: int,
) -> MaterializeResult:
    if versions_per_commit < 1:
        raise ValueError("versions_per_commit must be at least 1")
    config = config or get_config()
    run = run or RunContext(job=f"features.materialize.{view.name}.v{view.version}")
    if _dense_layout(view, config):
        result = backfill(view, config=config, run=run, online=online, update_online=update_online)
        note = f"{view.offline_table} held one row per hop end (the layout of earlier lakebed versions): rewritten as segments by a backfill"
        return replace(result, notes=(*result.notes, note))
    with lineage_run(run, config=config) as lineage:
        FeatureRegistry(config).register(view, run=run)
        raw = RawChanges(view.source.table, config)
        state = read_state(view, config=config)
        if state.raw_version is not None and state.raw_version > raw.latest:
            raise FeatureSourceError(
                f"offline table {view.offline_table!r} has processed raw version {state.raw_version} but raw table "
                f"{raw.name!r} is at version {raw.latest} (was it recreated?); rebuild with backfill"
            )
        store = (online if online is not None else default_online_store(config)) if update_online else None
        online_rows = 0
        notes: list[str] = []
        online_at = store.source_version(view.offline_table) if store is not None else None
        if store is not None and state.raw_version is not None and online_at != state.raw_version:
            online_rows += sync_online(view, store=store, config=config)
            notes.append(
                f"online rows rebuilt from {view.offline_table} (online store at raw version {online_at}, "
                f"offline at {state.raw_version})"
            )

        processed: list[int] = []
        offline_versions: list[int] = []
        events = late_events = feature_rows = 0
        seen = state.watermark_us  # max event time seen through the last version decided
        committed = state.watermark_us  # ... through the last version committed to the offline table
        pending: list[VersionSplit] = []
        first = 0 if state.raw_version is None else state.raw_version + 1
        for version in range(first, raw.latest + 1):
            split = split_version(view, raw.added(version), version, seen)
            seen = split.max_us
            pending.append(split)
            processed.append(version)
            events += split.rows
            if len(pending) < versions_per_commit and version < raw.latest:
                continue
            outcome = _apply(view, pending, raw, committed, store, run, config)
            late_events += outcome.late_events
            if outcome.offline_version is not None:
                offline_versions.append(outcome.offline_version)
                feature_rows += outcome.feature_rows
                online_rows += outcome.online_rows
                committed = seen
            elif pending[-1].version == raw.latest:
                span = (
                    f"{pending[0].version}"
                    if len(pending) == 1
                    else f"{pending[0].version}-{pending[-1].version}"
                )
                notes.append(
                    f"raw version(s) {span} added no on-time events: the offline state stays at the last "
                    "version with some (they are decided again, identically, on the next run)"
                )
            pending = []
        _describe_lineage(lineage, view, raw, config)
    final = read_state(view, config=config)
    return MaterializeResult(
        view=view.key,
        offline_table=view.offline_table,
        late_table=view.late_table,
        raw_versions=tuple(processed),
        raw_version=final.raw_version,
        events=events,
        late_events=late_events,
        feature_rows=feature_rows,
        offline_versions=tuple(offline_versions),
        online_rows=online_rows,
        watermark=final.watermark,
        notes=tuple(notes),
    )


def _describe_lineage(lineage: LineageRun, view: FeatureView, raw: RawChanges, config: LakebedConfig) -> None:
    """The raw table at the version processed up to is an input; every feature column derives from its
    source column (an aggregation over a window), the keys and ``feature_ts`` from the entity and time."""
    entry = Catalog(config).get(view.source.table)
    source = table_dataset(view.source.table, entry.uri, raw.latest)
    lineage.add_input(source)
    for aggregation in view.aggregations:
        column = aggregation.column or view.event_time
        how = f"DIRECT:AGGREGATION:{aggregation.function} over {format_duration(aggregation.window)}"
        lineage.add_column_lineage(view.offline_table, aggregation.name, [(source, column, how)])
    for entity in view.entities:
        lineage.add_column_lineage(view.offline_table, entity, [(source, entity, "DIRECT:IDENTITY")])
    for column, how in ((FEATURE_TS, "window end"), (FEATURE_VALID_TO, "end of the values' validity")):
        lineage.add_column_lineage(
            view.offline_table, column, [(source, view.event_time, f"DIRECT:TRANSFORMATION:{how}")]
        )


@dataclass(frozen=True)
class _Outcome:
    late_events: int = 0
    offline_version: int | None = None
    feature_rows: int = 0
    online_rows: int = 0


def _apply(
    view: FeatureView,
    splits: Sequence[VersionSplit],
    raw: RawChanges,
    previous_watermark: int | None,
    store: OnlineStore | None,
    run: RunContext,
    config: LakebedConfig,
) -> _Outcome:
    """Commit the decisions of ``splits`` (consecutive raw versions): late events, then feature rows."""
    last = splits[-1].version
    late_events = 0
    late = _concat([s.late for s in splits])
    if late.num_rows:
        table = open_table_or_none(view.late_table, config)
        recorded = table.transaction_version(view.app_id) if table is not None else None
        if recorded is not None:  # a rerun after a stop between the late and the offline commit
            late = late.filter(pc.greater(late.column(LATE_COLUMNS[0]), recorded))
        if late.num_rows:
            commit(
                view.late_table,
                late,
                kind="rejects",
                run=run,
                app_transactions=[Transaction(view.app_id, last)],
                metadata={RAW_VERSION_KEY: str(last), VIEW_KEY: view.key},
                config=config,
            )
            late_events = late.num_rows

    on_time = _concat([s.on_time for s in splits])
    if on_time.num_rows == 0:
        # Nothing for the offline table, so its state stays at the last committed version. A later run
        # decides these versions again from that same state, hence identically, and the late table's
        # transaction keeps their late events from being recorded twice.
        return _Outcome(late_events=late_events)
    since = first_ends(affected_window_ends(on_time, view), view)
    history = on_time_history(view, raw, last, since, config)
    rows, gone = splice(view, compute_segments(history, view, since=since), since, config)
    watermark = splits[-1].max_us
    assert watermark is not None
    result = commit(
        view.offline_table,
        rows,
        mode="merge",
        keys=[*view.entities, FEATURE_TS],
        delete=gone,
        run=run,
        app_transactions=[Transaction(view.app_id, last)],
        metadata=_state_metadata(view, last, watermark),
        config=config,
    )
    online_rows = 0
    if store is not None:
        online_rows = _refresh_online(
            view, store, since, rows.schema, previous_watermark, watermark, last, config
        )
    return _Outcome(late_events, result.version, rows.num_rows, online_rows)


def _state_metadata(view: FeatureView, raw_version: int, watermark: int | None) -> dict[str, str]:
    metadata = {
        RAW_VERSION_KEY: str(raw_version),
        VIEW_KEY: view.key,
        HASH_KEY: view.definition_hash(),
        "lakebed.features.source": view.source.table,
    }
    if watermark is not None:
        metadata[WATERMARK_KEY] = str(watermark)
    return metadata


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows] or list(tables[-1:])
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


# Online --------------------------------------------------------------------------------------------
def online_rows(segments: pa.Table, view: FeatureView, watermark_us: int) -> pa.Table:
    """What a point-in-time lookup at the watermark returns, per entity of ``segments``: its segment with
    the greatest ``feature_ts <= watermark``, as the row of the hop end that lookup matches (the last hop
    end at or before the watermark, or the segment's last one when its windows emptied before)."""
    frame = pl.from_arrow(segments)
    assert isinstance(frame, pl.DataFrame)
    hop = view.hop_us
    limit = pl.lit(watermark_us).cast(pl.Datetime("us", "UTC"))
    latest = (
        frame.filter(pl.col(FEATURE_TS) <= limit)
        .sort(FEATURE_TS)
        .unique(subset=list(view.entities), keep="last", maintain_order=True)
        .sort(list(view.entities))
    )
    at = pl.lit(watermark_us - watermark_us % hop).cast(pl.Datetime("us", "UTC"))
    last = pl.col(FEATURE_VALID_TO) - pl.duration(microseconds=hop)
    latest = latest.with_columns(pl.min_horizontal(at, last).alias(FEATURE_TS)).drop(FEATURE_VALID_TO)
    schema = pa.schema([f for f in segments.schema if f.name != FEATURE_VALID_TO])
    return latest.to_arrow().cast(schema)


def _refresh_online(
    view: FeatureView,
    store: OnlineStore,
    touched: pa.Table,
    schema: pa.Schema,
    previous_watermark: int | None,
    watermark: int,
    raw_version: int,
    config: LakebedConfig,
) -> int:
    """Bring the online rows to the watermark (:func:`online_rows`) for the entities whose row can have
    changed: those of ``touched`` (their segments were rewritten) and those whose matched hop end moved
    with the watermark (a segment still running after the previous watermark's hop end). ``schema`` is
    the offline table's (that of the rows just merged)."""
    kind = schema.field(FEATURE_TS).type
    condition = ds.field(FEATURE_TS) <= pa.scalar(watermark, pa.int64()).cast(kind)
    entities = keys_in(view, schema, touched)
    if previous_watermark is not None and entities is not None:
        passed = previous_watermark - previous_watermark % view.hop_us + view.hop_us
        running = ds.field(FEATURE_VALID_TO) > pa.scalar(passed, pa.int64()).cast(kind)
        condition = condition & (running | entities)
    rows = online_rows(read_table(view.offline_table, filter=condition, config=config), view, watermark)
    return store.write(view.offline_table, rows, list(view.entities), source_version=raw_version)


def sync_online(
    view: FeatureView, *, store: OnlineStore | None = None, config: LakebedConfig | None = None
) -> int:
    """Rebuild ``view``'s online rows from its offline table (after a crash between the offline commit and
    the online write, or for a fresh online store): :func:`online_rows` at the watermark. Returns the
    rows written."""
    config = config or get_config()
    store = store if store is not None else default_online_store(config)
    state = read_state(view, config=config)
    if state.raw_version is None:
        return 0
    segments = read_table(view.offline_table, config=config)
    if state.watermark_us is None:
        segments = segments.slice(0, 0)
    rows = online_rows(segments, view, state.watermark_us or 0)
    return store.write(view.offline_table, rows, list(view.entities), source_version=state.raw_version)


# Backfill ------------------------------------------------------------------------------------------
def backfill(
    view: FeatureView,
    *,
    config: LakebedConfig | None = None,
    run: RunContext | None = None,
    online: OnlineStore | None = None,
    update_online: bool = True,
) -> MaterializeResult:
    """Recompute ``view`` from scratch: replay every raw version in order with the incremental path's
    lateness decisions, overwrite the late and offline tables (state: the latest raw version), and
    rebuild the online rows."""
    config = config or get_config()
    run = run or RunContext(job=f"features.backfill.{view.name}.v{view.version}")
    with lineage_run(run, config=config) as lineage:
        FeatureRegistry(config).register(view, run=run)
        raw = RawChanges(view.source.table, config)
        seen: int | None = None
        on_time: list[pa.Table] = []
        late: list[pa.Table] = []
        events = 0
        for version in range(raw.latest + 1):
            split = split_version(view, raw.added(version), version, seen)
            seen = split.max_us
            events += split.rows
            on_time.append(split.on_time)
            late.append(split.late)
        last = raw.latest
        schema = raw.schema(last)
        late_rows = _concat(late)
        if late_rows.num_rows or open_table_or_none(view.late_table, config) is not None:
            if not late_rows.num_rows:
                late_rows = mark_late(schema.empty_table(), [], last, None)
            commit(
                view.late_table,
                late_rows,
                mode="overwrite",
                kind="rejects",
                run=run,
                app_transactions=[Transaction(view.app_id, last)],
                metadata={RAW_VERSION_KEY: str(last), VIEW_KEY: view.key},
                config=config,
            )
        events_on_time = _concat(on_time)
        del on_time
        segments = segment_schema(view, events_on_time.schema)
        chunks = iter_segments(events_on_time, view) if events_on_time.num_rows else iter(())
        result = commit(
            view.offline_table,
            pa.RecordBatchReader.from_batches(segments, (b for chunk in chunks for b in chunk.to_batches())),
            mode="overwrite",
            run=run,
            app_transactions=[Transaction(view.app_id, last)],
            metadata=_state_metadata(view, last, seen),
            config=config,
        )
        online_rows = 0
        if update_online:
            store = online if online is not None else default_online_store(config)
            drop = getattr(store, "drop", None)
            if callable(drop):
                drop(view.offline_table)  # a backfill rebuilds the online rows too
            online_rows = sync_online(view, store=store, config=config)
        _describe_lineage(lineage, view, raw, config)
    state = read_state(view, config=config)
    return MaterializeResult(
        view=view.key,
        offline_table=view.offline_table,
        late_table=view.late_table,
        raw_versions=tuple(range(last + 1)),
        raw_version=state.raw_version,
        events=events,
        late_events=late_rows.num_rows,
        feature_rows=result.rows,
        offline_versions=(result.version,) if result.version is not None else (),
        online_rows=online_rows,
        watermark=state.watermark,
        backfill=True,
    )


__all__ = [
    "FeatureSourceError",
    "FeatureState",
    "MaterializeResult",
    "backfill",
    "materialize",
    "read_state",
    "sync_online",
]
