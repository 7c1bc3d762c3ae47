"""Point-in-time feature retrieval over the offline store.

Semantics (docs/streaming.md, "Feature store semantics"):

* A feature reference is ``view:vN:feature``. Each view version has an offline Delta table
  ``fv_<view>_v<N>`` with the entity key columns, ``feature_ts`` (timestamp(us, UTC)) and one column per
  aggregation.
* Point-in-time retrieval: for each entity row ``(keys, ts)`` take the feature row with the greatest
  ``feature_ts <= ts`` and ``feature_ts > ts - ttl``; otherwise nulls. Every entity row is returned,
  duplicates included, in input order.

Output columns: every column of the entity rows, unchanged and in their order, followed by one column per
requested feature, in request order, named ``<view>__<feature>`` (two underscores). The name carries the
view but not its version, so moving a model from ``orders:v1`` to ``orders:v2`` keeps its column names;
asking for the same feature of two versions of one view in one call is therefore an error, as is a
feature column whose name is already an entity-row column.

The join runs in DuckDB: an ``ASOF LEFT JOIN`` per view keyed on the view's entity columns (times as
epoch microseconds), a row number to restore input order, and the ttl applied after the as-of match (a
match older than the ttl yields nulls, never an older row, which is the same thing because the as-of match
is the greatest ``feature_ts <= ts``). Entity timestamps may be any timestamp unit or a date; naive ones
are read as UTC; finer-than-microsecond ones are floored to the microsecond, which is exact because
``feature_ts`` and ttl are whole microseconds. How the join reads the stored rows and keeps DuckDB's
ASOF sort narrow is in :mod:`lakebed.pipelines.features.pit_join`.

Reproducible training sets (:mod:`lakebed.pipelines.features.training`) and online reads
(:mod:`lakebed.pipelines.features.online_read`) build on the reference resolution and entity-row handling
here; their public names remain importable from this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import (
    EntityRowsError,
    FeatureRetrievalError,
    LakebedError,
    TableNotFoundError,
    TrainingSetError,
    TrainingSetIntegrityError,
    UnknownFeatureError,
)
from lakebed.schemas.features import FeatureRef, FeatureView

if TYPE_CHECKING:
    from lakebed.pipelines.tiering import Tiers

ENTITY_TIMESTAMP = "event_timestamp"
"""Default name of the entity rows' timestamp column (override with ``timestamp_column=``)."""
COLUMN_SEPARATOR = "__"


# Resolution of references ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSelection:
    """One requested feature: its reference, the view version it lives in and its output column."""

    ref: str
    view: str
    version: int
    feature: str

    @property
    def view_key(self) -> str:
        return f"{self.view}:v{self.version}"

    @property
    def column(self) -> str:
        return f"{self.view}{COLUMN_SEPARATOR}{self.feature}"


@dataclass(frozen=True)
class ViewPlan:
    """One view version to read and the features wanted from it (resolved from the registry)."""

    spec: FeatureView
    features: tuple[FeatureSelection, ...]

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def table(self) -> str:
        return self.spec.offline_table

    @property
    def entities(self) -> tuple[str, ...]:
        return self.spec.entities

    @property
    def ttl_us(self) -> int:
        return self.spec.ttl_us


def parse_reference(ref: str) -> tuple[str, int, str]:
    """``"view:vN:feature"`` → ``(view, N, feature)``; a clear error for anything else."""
    try:
        parsed = FeatureRef.parse(ref)
    except LakebedError as exc:
        raise UnknownFeatureError(str(exc)) from exc
    return parsed.view, parsed.version, parsed.feature


def _load_view(view: str, version: int, config: LakebedConfig) -> FeatureView:
    from lakebed.pipelines.features import registry

    try:
        return registry.get(view, version, config=config)
    except LakebedError as exc:
        raise UnknownFeatureError(f"cannot resolve feature view {view}:v{version}: {exc}") from exc


def resolve_features(
    features: Sequence[str], *, config: LakebedConfig | None = None, reserved: Sequence[str] = ()
) -> list[ViewPlan]:
    """Parse and check ``features`` against the registry: one plan per view version, in first-use order.

    ``reserved`` are column names the output already has (the entity rows' columns): a feature column of
    the same name is an error rather than a silent overwrite.
    """
    config = config or get_config()
    if isinstance(features, str):
        features = [features]
    if not features:
        raise UnknownFeatureError("no features requested: pass references like 'view:v1:feature'")
    selections: list[FeatureSelection] = []
    by_column: dict[str, str] = {}  # output column -> the reference that fills it
    for ref in features:
        view, version, feature = parse_reference(ref)
        selection = FeatureSelection(ref=ref, view=view, version=version, feature=feature)
        canonical = f"{selection.view_key}:{feature}"
        other = by_column.get(selection.column)
        if other == canonical:
            raise UnknownFeatureError(f"feature {canonical!r} is requested twice")
        if other is not None:
            raise UnknownFeatureError(
                f"features {other!r} and {canonical!r} would both be output as column {selection.column!r}; "
                "request one version of a view's feature per call"
            )
        if selection.column in reserved:
            raise UnknownFeatureError(
                f"feature {canonical!r} is output as column {selection.column!r}, which the entity rows "
                "already have; rename that entity column"
            )
        by_column[selection.column] = canonical
        selections.append(selection)

    plans: list[ViewPlan] = []
    for key in dict.fromkeys(s.view_key for s in selections):
        chosen = tuple(s for s in selections if s.view_key == key)
        view, version = chosen[0].view, chosen[0].version
        spec = _load_view(view, version, config)
        unknown = [s.feature for s in chosen if s.feature not in spec.feature_names]
        if unknown:
            raise UnknownFeatureError(
                f"feature view {key} has no feature(s) {unknown} "
                f"(its features: {', '.join(spec.feature_names)})"
            )
        plans.append(ViewPlan(spec=spec, features=chosen))
    return plans


# Entity rows ----------------------------------------------------------------------------------------
def as_arrow(rows: Any) -> pa.Table:
    """Entity rows as an Arrow table: from Arrow, Polars, pandas, a mapping of columns or of one row."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, pa.RecordBatchReader):
        return rows.read_all()
    if isinstance(rows, Mapping):
        columns = {
            str(k): (list(v) if isinstance(v, list | tuple | np.ndarray | pa.Array) else [v])
            for k, v in rows.items()
        }
        return pa.table(columns)
    module = type(rows).__module__.split(".")[0]
    if module == "polars":
        return rows.to_arrow()
    if module == "pandas":
        return pa.Table.from_pandas(rows, preserve_index=False)
    if hasattr(rows, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(rows).read_all()
    raise EntityRowsError(
        f"entity rows must be a pyarrow Table, a polars or pandas DataFrame, or a mapping of columns; "
        f"got {type(rows).__name__}"
    )


def check_columns(entities: pa.Table, plans: Sequence[ViewPlan], timestamp_column: str | None) -> None:
    """Raise :class:`EntityRowsError` unless ``entities`` hold the key columns of every plan (and the
    timestamp column, if given)."""
    check_names(entities.column_names, plans, timestamp_column)


def check_names(columns: Sequence[str], plans: Sequence[ViewPlan], timestamp_column: str | None) -> None:
    """:func:`check_columns` for entity rows with the column names ``columns``."""
    names = set(columns)
    problems = []
    if timestamp_column is not None and timestamp_column not in names:
        problems.append(f"the timestamp column {timestamp_column!r}")
    for plan in plans:
        missing = [k for k in plan.entities if k not in names]
        if missing:
            problems.append(f"entity key column(s) {missing} of feature view {plan.key}")
    if problems:
        raise EntityRowsError(
            "entity rows lack " + "; ".join(problems) + f" (their columns: {', '.join(columns)})"
        )


def epoch_us(column: pa.ChunkedArray, name: str) -> pa.Array:
    """Entity timestamps as int64 microseconds since the epoch (UTC), floored; nulls stay null."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = array.type
    if pa.types.is_date(kind):
        array = array.cast(pa.date32()).cast(pa.int32()).cast(pa.int64())
        return pc.multiply(array, 86_400_000_000)
    if not pa.types.is_timestamp(kind):
        raise EntityRowsError(f"entity timestamp column {name!r} must be a timestamp or a date, not {kind}")
    raw = array.view(pa.int64())
    if kind.unit == "us":
        return raw
    if kind.unit in ("s", "ms"):
        return pc.multiply_checked(raw, 1_000_000 if kind.unit == "s" else 1_000)
    # nanoseconds: floor division by 1000 (exact for the comparisons, see the module docstring)
    floored = np.floor_divide(pc.fill_null(raw, 0).to_numpy(), 1000)
    mask = np.asarray(raw.is_null()) if raw.null_count else None
    return pa.array(floored, type=pa.int64(), mask=mask)


# Offline data ---------------------------------------------------------------------------------------
def open_offline(plan: ViewPlan, version: int | None, config: LakebedConfig) -> Tiers:
    """The offline table of ``plan`` at ``version`` (None: the latest) across its tiers, or a clear error."""
    from lakebed.pipelines.read import tiers

    try:
        found = tiers(plan.table, version=version, config=config)
        found.record_read(None, config)  # point-in-time joins read the whole table
        return found
    except TableNotFoundError as exc:
        if version is not None:
            raise FeatureRetrievalError(
                f"the offline table {plan.table!r} of feature view {plan.key} has no readable Delta "
                f"version {version}: {exc}"
            ) from exc
        raise FeatureRetrievalError(
            f"the offline table {plan.table!r} of feature view {plan.key} cannot be read: {exc}. "
            f"Run `lakebed features backfill {plan.key}` to build it."
        ) from exc


def plain_type(kind: pa.DataType) -> pa.DataType:
    """``kind`` with large and view string/binary types made plain ``string``/``binary``."""
    if kind in (pa.string_view(), pa.large_string()):
        return pa.string()
    if kind in (pa.binary_view(), pa.large_binary()):
        return pa.binary()
    return kind


def _pinned(versions: Mapping[str, int] | None, plans: Sequence[ViewPlan]) -> dict[str, int]:
    if not versions:
        return {}
    by_key = {p.key: p for p in plans}
    by_table = {p.table: p for p in plans}
    pinned: dict[str, int] = {}
    for name, version in versions.items():
        plan = by_key.get(name) or by_table.get(name)
        if plan is None:
            raise FeatureRetrievalError(
                f"versions= pins {name!r}, which is not a requested feature view "
                f"(requested: {', '.join(by_key) or 'none'})"
            )
        pinned[plan.key] = int(version)
    return pinned


def get_historical_features(
    entity_rows: Any,
    features: Sequence[str],
    *,
    timestamp_column: str = ENTITY_TIMESTAMP,
    versions: Mapping[str, int] | None = None,
    config: LakebedConfig | None = None,
) -> pa.Table:
    """Point-in-time correct feature values for every entity row.

    Parameters
    ----------
    entity_rows:
        A pyarrow Table, polars or pandas DataFrame (or a mapping of columns) holding the entity key
        columns of every requested view and ``timestamp_column``; other columns (labels, ids) pass through.
    features:
        References ``view:vN:feature``; several views may be mixed.
    versions:
        Pin an offline table's Delta version: ``{"view:vN": delta_version}`` (or keyed by table name).
        Unpinned tables are read at their latest version.

    Returns the entity rows (every row, duplicates included, in input order) with one column
    ``<view>__<feature>`` per requested feature, null where no feature row is at most ``ts`` and younger
    than the view's ttl.
    """
    config = config or get_config()
    entities = as_arrow(entity_rows)
    plans = resolve_features(features, config=config, reserved=entities.column_names)
    check_columns(entities, plans, timestamp_column)
    pinned = _pinned(versions, plans)
    tables = {plan.key: open_offline(plan, pinned.get(plan.key), config) for plan in plans}
    return join_features(entities, plans, tables, timestamp_column)


def join_features(
    entities: pa.Table, plans: Sequence[ViewPlan], tables: Mapping[str, Tiers], timestamp_column: str
) -> pa.Table:
    """``entities`` followed by the point-in-time joined feature columns of every plan, each view read
    from ``tables[plan.key]``."""
    import duckdb

    from lakebed.pipelines.features.pit_join import pit_join

    ts_us = epoch_us(entities.column(timestamp_column), timestamp_column)
    result = entities
    connection = duckdb.connect()
    try:
        for plan in plans:
            for selection, column in zip(
                plan.features, pit_join(connection, entities, ts_us, plan, tables[plan.key]), strict=True
            ):
                result = result.append_column(pa.field(selection.column, column.type), column)
    finally:
        connection.close()
    return result


# Training sets and online reads have their own modules, which import this one; their public names stay
# importable from here, loaded on first use.
__all__ = [
    "ENTITY_TIMESTAMP",
    "EntityRowsError",
    "FeatureRetrievalError",
    "FeatureSelection",
    "TrainingSetError",
    "TrainingSetIntegrityError",
    "UnknownFeatureError",
    "ViewPlan",
    "as_arrow",
    "get_historical_features",
    "parse_reference",
    "resolve_features",
]
