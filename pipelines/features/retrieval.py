"""Feature retrieval: point-in-time joins over the offline store, online reads, training-set manifests.

Semantics (ARCHITECTURE.md, "Feature store semantics"):

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
``feature_ts`` and ttl are whole microseconds.

Online reads (:func:`get_online_features`, :func:`get_online_feature_dict`) take the latest stored row per
entity and null it when ``feature_ts <= now - ttl``. A single entity given as a plain dict
(``{"user_id": 42}``) is served by the SQLite store's primary-key lookup (``read_one``) without building
Arrow data for the request; :class:`OnlinePlan` holds everything resolved once per feature list.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import operator
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from lakebed.schemas.features import FEATURE_TS, FeatureRef, FeatureView, duration_us
from pydantic import BaseModel, ConfigDict, Field

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import LakebedError, TableNotFoundError

if TYPE_CHECKING:
    import duckdb
    from deltalake import DeltaTable

ENTITY_TIMESTAMP = "event_timestamp"
"""Default name of the entity rows' timestamp column (override with ``timestamp_column=``)."""
COLUMN_SEPARATOR = "__"
MANIFEST_FILE = "manifest.json"
ENTITIES_FILE = "entities.parquet"

_ROW = "__lakebed_row"
_TS = "__lakebed_ts"
_FTS = "__lakebed_fts"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


# Errors ----------------------------------------------------------------------------------------------
class FeatureRetrievalError(LakebedError):
    """Features cannot be retrieved as asked (names the reference, view or column at fault)."""


class UnknownFeatureError(FeatureRetrievalError):
    """A feature reference names a view, view version or feature that does not exist."""


class EntityRowsError(FeatureRetrievalError):
    """The entity rows lack a key or timestamp column, or a column has an unusable type."""


class TrainingSetError(LakebedError):
    """A training set cannot be created or rebuilt."""


class TrainingSetIntegrityError(TrainingSetError):
    """A training set's stored entity rows no longer match the hash recorded in its manifest."""


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


def _check_columns(entities: pa.Table, plans: Sequence[ViewPlan], timestamp_column: str | None) -> None:
    _check_names(entities.column_names, plans, timestamp_column)


def _check_names(columns: Sequence[str], plans: Sequence[ViewPlan], timestamp_column: str | None) -> None:
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


def _epoch_us(column: pa.ChunkedArray, name: str) -> pa.Array:
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
def _open_offline(plan: ViewPlan, version: int | None, config: LakebedConfig) -> DeltaTable:
    from lakebed.pipelines.read import open_table

    try:
        return open_table(plan.table, version=version, config=config)
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


def _plain(kind: pa.DataType) -> pa.DataType:
    if kind in (pa.string_view(), pa.large_string()):
        return pa.string()
    if kind in (pa.binary_view(), pa.large_binary()):
        return pa.binary()
    return kind


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _feature_frame(
    plan: ViewPlan, table: DeltaTable, lo_us: int | None, hi_us: int | None
) -> tuple[pa.Table, pa.Schema]:
    """The offline rows the join can use: key, time and requested feature columns, and only the rows
    inside ``(lo - ttl, hi]`` of the entity timestamps (row groups outside are skipped)."""
    # The table's own (plain-typed) schema: files that delta-rs merges rewrote with string_view columns
    # are cast to it while scanning, and the filter is on feature_ts only.
    data = table.to_pyarrow_dataset()
    schema = pa.schema(table.schema().to_arrow())
    wanted = [*plan.entities, FEATURE_TS, *(s.feature for s in plan.features)]
    missing = [c for c in wanted if schema.get_field_index(c) < 0]
    if missing:
        raise FeatureRetrievalError(
            f"the offline table {plan.table!r} of feature view {plan.key} lacks column(s) {missing}"
        )
    if hi_us is None or lo_us is None:  # no entity row has a timestamp: nothing can match
        return schema.empty_table().select(wanted), schema
    ts_type = schema.field(FEATURE_TS).type
    condition: ds.Expression | None = None
    if pa.types.is_timestamp(ts_type):
        upper = pa.scalar(hi_us, pa.timestamp("us", tz=ts_type.tz)).cast(ts_type)
        lower = pa.scalar(lo_us - plan.ttl_us, pa.timestamp("us", tz=ts_type.tz)).cast(ts_type)
        condition = (ds.field(FEATURE_TS) <= upper) & (ds.field(FEATURE_TS) > lower)
    return data.to_table(columns=wanted, filter=condition), schema


def _pit_join(
    connection: duckdb.DuckDBPyConnection,
    entities: pa.Table,
    ts_us: pa.Array,
    plan: ViewPlan,
    table: DeltaTable,
) -> list[pa.ChunkedArray]:
    """The feature columns of ``plan`` for every entity row, in input order."""
    from lakebed.pipelines.read import fetch_arrow

    n = entities.num_rows
    valid = pc.drop_null(ts_us)
    lo = pc.min(valid).as_py() if len(valid) else None
    hi = pc.max(valid).as_py() if len(valid) else None
    features, schema = _feature_frame(plan, table, lo, hi)
    keys = {}
    for key in plan.entities:
        keys[key] = _align_key(entities.column(key), schema.field(key).type, key, plan)
    left = pa.table({**keys, _TS: ts_us, _ROW: pa.array(np.arange(n, dtype=np.int64))})
    left_name, right_name = "__lakebed_entities", "__lakebed_features"
    connection.register(left_name, left)
    connection.register(right_name, features)
    try:
        on = " AND ".join(f"e.{_quote(k)} = f.{_quote(k)}" for k in plan.entities)
        fresh = f"f.{_FTS} > e.{_TS} - {plan.ttl_us}"
        select = ", ".join(
            f"CASE WHEN {fresh} THEN f.{_quote(s.feature)} END AS {_quote(s.column)}" for s in plan.features
        )
        right_columns = ", ".join(_quote(c) for c in [*plan.entities, *(s.feature for s in plan.features)])
        query = (
            f"SELECT {select} FROM {left_name} e ASOF LEFT JOIN "
            f"(SELECT {right_columns}, epoch_us({_quote(FEATURE_TS)}) AS {_FTS} FROM {right_name}) f "
            f"ON {on} AND e.{_TS} >= f.{_FTS} ORDER BY e.{_ROW}"
        )
        result = fetch_arrow(connection.sql(query))
    finally:
        connection.unregister(left_name)
        connection.unregister(right_name)
    columns = []
    for selection in plan.features:
        column = result.column(selection.column)
        target = _plain(schema.field(selection.feature).type)
        if column.type != target:
            column = column.cast(target)
        columns.append(column)
    return columns


def _align_key(column: pa.ChunkedArray, target: pa.DataType, name: str, plan: ViewPlan) -> pa.ChunkedArray:
    """An entity key column in a type DuckDB can compare with the offline table's key column."""
    source = column.type
    if pa.types.is_dictionary(source):
        column = column.cast(source.value_type)
        source = column.type
    if _family(source) == _family(target) and _family(source) != "other":
        return column
    try:
        return column.cast(_plain(target), safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EntityRowsError(
            f"entity key column {name!r} is {source} but feature view {plan.key} keys it as {target}: {exc}"
        ) from exc


def _family(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "string"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return "binary"
    return "other"


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
    _check_columns(entities, plans, timestamp_column)
    pinned = _pinned(versions, plans)
    tables = {plan.key: _open_offline(plan, pinned.get(plan.key), config) for plan in plans}
    return _historical(entities, plans, tables, timestamp_column)


def _historical(
    entities: pa.Table, plans: Sequence[ViewPlan], tables: Mapping[str, DeltaTable], timestamp_column: str
) -> pa.Table:
    import duckdb

    ts_us = _epoch_us(entities.column(timestamp_column), timestamp_column)
    result = entities
    connection = duckdb.connect()
    try:
        for plan in plans:
            for selection, column in zip(
                plan.features, _pit_join(connection, entities, ts_us, plan, tables[plan.key]), strict=True
            ):
                result = result.append_column(pa.field(selection.column, column.type), column)
    finally:
        connection.close()
    return result


# Online reads ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _OnlineView:
    table: str
    keys: tuple[str, ...]
    ttl_us: int
    features: tuple[str, ...]
    """Stored column names of the requested features, in request order within the view."""
    columns: tuple[str, ...]
    """Their output column names."""
    missing: tuple[None, ...]
    """One None per feature: the values of a missing or stale row."""


class OnlinePlan:
    """Resolved view plans prepared for online reads: per view its table, keys, ttl and the features to
    read, plus caches of the entity-row layouts already checked. Build one per feature list and reuse it
    (``FeatureStore`` does); view versions are immutable, so it never goes stale."""

    def __init__(self, plans: Sequence[ViewPlan]) -> None:
        self.plans = tuple(plans)
        self.views = tuple(
            _OnlineView(
                table=plan.table,
                keys=tuple(plan.entities),
                ttl_us=plan.ttl_us,
                features=tuple(s.feature for s in plan.features),
                columns=tuple(s.column for s in plan.features),
                missing=(None,) * len(plan.features),
            )
            for plan in self.plans
        )
        self.columns = tuple(c for view in self.views for c in view.columns)
        self._checked: set[tuple[str, ...]] = set()
        self._layouts: dict[tuple[Any, ...], tuple[tuple[pa.Schema, ...], pa.StructType]] = {}

    def check(self, names: Iterable[str]) -> None:
        """Raise unless entity rows with columns ``names`` can be read with this plan (no feature column
        among them, every view's key columns present)."""
        key = tuple(names)
        if key in self._checked:
            return
        clash = [c for c in self.columns if c in key]
        if clash:
            raise UnknownFeatureError(
                f"feature column(s) {clash} are already entity-row columns; rename those"
            )
        _check_names(key, self.plans, None)
        if len(self._checked) < 64:
            self._checked.add(key)

    def struct_type(self, entity: Mapping[str, Any], store: Any) -> pa.StructType:
        """The type of one output row: the entity values' types (as ``as_arrow`` infers them), then the
        stored types of the features."""
        types = tuple(map(type, entity.values()))
        key = (*entity, *types)
        schemas = tuple([store.schema(view.table) for view in self.views])
        cached = self._layouts.get(key)
        if cached is not None and all(map(operator.is_, cached[0], schemas)):
            return cached[1]  # the stored schemas are the very objects the layout was built from
        fields = [pa.field(name, _PLAIN_TYPES[kind]) for name, kind in zip(entity, types, strict=True)]
        for view, schema in zip(self.views, schemas, strict=True):
            for feature, column in zip(view.features, view.columns, strict=True):
                fields.append(pa.field(column, schema.field(feature).type))
        struct = pa.struct(fields)
        if len(self._layouts) > 64:
            self._layouts.clear()
        self._layouts[key] = (schemas, struct)
        return struct


# Python types of single-entity values whose Arrow type needs no inference, and that type.
_PLAIN_TYPES: dict[type, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _single_entity(rows: Any) -> dict[str, Any] | None:
    """``rows`` if it is one entity given as a plain dict of scalars (``{"key": 42}``) whose Arrow types
    are obvious (``int`` within int64, ``float``, ``str``, ``bool``), else None."""
    if type(rows) is not dict or not rows:
        return None
    for name, value in rows.items():
        kind = type(value)
        if type(name) is not str or kind not in _PLAIN_TYPES:
            return None
        if kind is int and not _INT64_MIN <= value <= _INT64_MAX:
            return None
    return rows


def online_plan(
    features: Sequence[str],
    *,
    plans: Sequence[ViewPlan] | OnlinePlan | None = None,
    config: LakebedConfig | None = None,
    reserved: Sequence[str] = (),
) -> OnlinePlan:
    """The :class:`OnlinePlan` of ``features`` (from ``plans`` when given, else resolved in the registry)."""
    if isinstance(plans, OnlinePlan):
        return plans
    if plans is None:
        plans = resolve_features(features, config=config or get_config(), reserved=reserved)
    return OnlinePlan(plans)


def _online_store(store: Any, config: LakebedConfig | None) -> Any:
    if store is not None:
        return store
    from lakebed.pipelines.features.online import default_online_store

    return default_online_store(config or get_config())


def get_online_features(
    features: Sequence[str],
    entity_rows: Any,
    *,
    store: Any = None,
    config: LakebedConfig | None = None,
    now: dt.datetime | None = None,
    plans: Sequence[ViewPlan] | OnlinePlan | None = None,
) -> pa.Table:
    """The latest feature values of each entity row from the online store, in input order.

    ``entity_rows`` holds the views' entity key columns (a table, a DataFrame, ``{"key": [..]}`` or one
    row ``{"key": value}``). Output columns as in :func:`get_historical_features`. A value older than the
    view's ttl at ``now`` (default: the current time) is returned as null, as the offline join would.
    ``plans`` may be the resolved view plans or an :class:`OnlinePlan` (fastest: nothing is resolved).
    """
    single = _single_entity(entity_rows)
    if single is not None:
        names: list[str] = list(single)
    else:
        entities = as_arrow(entity_rows)
        names = entities.column_names
    online = (
        plans
        if isinstance(plans, OnlinePlan)
        else online_plan(features, plans=plans, config=config, reserved=names)
    )
    online.check(names)
    store = _online_store(store, config)
    if single is not None:
        if hasattr(store, "read_one") and hasattr(store, "schema"):
            values = _read_single(online, single, store, _now_us(now))
            row = pa.array([(*single.values(), *values)], online.struct_type(single, store))
            return pa.Table.from_batches([pa.RecordBatch.from_struct_array(row)])
        entities = as_arrow(single)
    now_us = _now_us(now)
    result = entities
    for view in online.views:
        keys = entities.select(list(view.keys))
        rows = store.read(view.table, keys, list(view.keys))
        # A stored row at most now - ttl is as stale as it would be offline: nulls. (A null feature_ts
        # means no stored row: its features are null already, so a null ``stale`` is harmless.)
        stale = pc.less_equal(_epoch_us(rows.column(FEATURE_TS), FEATURE_TS), now_us - view.ttl_us)
        any_stale = bool(pc.any(stale).as_py())
        for feature, name in zip(view.features, view.columns, strict=True):
            column = rows.column(feature)
            if any_stale:
                column = pc.if_else(stale, pa.nulls(len(column), column.type), column)
            result = result.append_column(name, column)
    return result


def get_online_feature_dict(
    features: Sequence[str],
    entity: Mapping[str, Any],
    *,
    store: Any = None,
    config: LakebedConfig | None = None,
    now: dt.datetime | None = None,
    plans: Sequence[ViewPlan] | OnlinePlan | None = None,
) -> dict[str, Any]:
    """The latest feature values of one entity as a plain dict: exactly the one row of
    ``get_online_features(features, entity, ...).to_pylist()``, i.e. the entity's values then one
    ``<view>__<feature>`` value per feature (None where missing or older than the view's ttl at ``now``).

    ``entity`` is one row, ``{"key": value, ...}``. With the embedded SQLite store and plain ``int``/
    ``float``/``str``/``bool`` values this skips Arrow entirely (the low-latency path for serving).
    """
    single = _single_entity(entity)
    if single is not None:
        online = (
            plans
            if isinstance(plans, OnlinePlan)
            else online_plan(features, plans=plans, config=config, reserved=list(single))
        )
        online.check(single)
        store = _online_store(store, config)
        if hasattr(store, "read_one"):
            result = single.copy()
            result.update(
                zip(online.columns, _read_single(online, single, store, _now_us(now)), strict=False)
            )
            return result
        plans = online
    table = get_online_features(features, entity, store=store, config=config, now=now, plans=plans)
    if table.num_rows != 1:
        raise EntityRowsError(
            f"get_online_feature_dict reads one entity; got {table.num_rows} entity rows "
            "(use get_online_features for several)"
        )
    return table.to_pylist()[0]


def _read_single(online: OnlinePlan, entity: Mapping[str, Any], store: Any, now_us: int) -> list[Any]:
    """The feature values (request order) of one entity through the store's ``read_one``."""
    values: list[Any] = []
    for view in online.views:
        keys = view.keys
        key = (entity[keys[0]],) if len(keys) == 1 else tuple(entity[k] for k in keys)
        row = store.read_one(view.table, key, keys, view.features)
        # Stale (feature_ts at most now - ttl) or missing: nulls, as in the Arrow path.
        if row is None or row[0] <= now_us - view.ttl_us:
            values.extend(view.missing)
        else:
            values.extend(row[1:])
    return values


def _now_us(now: dt.datetime | None) -> int:
    if now is None:
        return time.time_ns() // 1_000
    moment = now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return duration_us(moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC))


# Training sets --------------------------------------------------------------------------------------
class ViewPin(BaseModel):
    """One view version of a training set, read at one Delta version of its offline table."""

    model_config = ConfigDict(extra="allow", frozen=True)

    table: str
    delta_version: int
    definition_hash: str | None = None
    """The view version's definition hash when the set was created (checked on rebuild)."""


class TrainingSetManifest(BaseModel):
    """What rebuilds a training set exactly: features, pinned table versions and the entity rows' hash."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    features: list[str]
    views: dict[str, ViewPin]
    entity_hash: str = Field(description="sha256 (hex) of the canonical Arrow IPC stream of the entity rows")
    entity_rows: str = Field(description="Path of the Parquet copy of the entity rows")
    entity_row_count: int
    timestamp_column: str = ENTITY_TIMESTAMP
    created_at: dt.datetime
    lakebed_version: str | None = None
    manifest_version: int = 1

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def training_set_dir(name: str, config: LakebedConfig | None = None) -> Path:
    if not _NAME.fullmatch(name):
        raise TrainingSetError(
            f"invalid training set name {name!r}: use letters, digits, '_', '-' or '.' (at most 128)"
        )
    return (config or get_config()).home / "training_sets" / name


def create_training_set(
    entity_rows: Any,
    features: Sequence[str],
    *,
    name: str,
    timestamp_column: str = ENTITY_TIMESTAMP,
    overwrite: bool = False,
    config: LakebedConfig | None = None,
) -> TrainingSetManifest:
    """Record a reproducible training set: the entity rows (a Parquet copy and their hash), the feature
    references, and the Delta version of every offline table read. Writes
    ``HOME/training_sets/<name>/entities.parquet`` and ``manifest.json`` beside it.
    Rebuild the rows with :func:`training_set`."""
    import pyarrow.parquet as pq

    from lakebed import __version__

    config = config or get_config()
    folder = training_set_dir(name, config)
    manifest_path = folder / MANIFEST_FILE
    if manifest_path.exists() and not overwrite:
        raise TrainingSetError(
            f"training set {name!r} already exists ({manifest_path}); choose another name or overwrite=True"
        )
    entities = as_arrow(entity_rows)
    plans = resolve_features(features, config=config, reserved=entities.column_names)
    _check_columns(entities, plans, timestamp_column)
    _epoch_us(entities.column(timestamp_column), timestamp_column)  # type check before writing anything
    pins = {}
    for plan in plans:
        table = _open_offline(plan, None, config)
        pins[plan.key] = ViewPin(
            table=plan.table, delta_version=table.version(), definition_hash=plan.spec.definition_hash()
        )
    digest = entity_hash(entities)

    folder.mkdir(parents=True, exist_ok=True)
    entities_path = folder / ENTITIES_FILE
    partial = folder / f".{ENTITIES_FILE}.{os.getpid()}.tmp"
    pq.write_table(entities, partial, compression="zstd")
    stored = pq.read_table(partial)
    if entity_hash(stored) != digest:
        partial.unlink(missing_ok=True)
        raise TrainingSetError(
            f"the entity rows of training set {name!r} do not survive a Parquet round trip unchanged "
            f"(schema {entities.schema}); convert unusual column types first"
        )
    partial.replace(entities_path)
    manifest = TrainingSetManifest(
        name=name,
        features=list(features),
        views=pins,
        entity_hash=digest,
        entity_rows=str(entities_path),
        entity_row_count=entities.num_rows,
        timestamp_column=timestamp_column,
        created_at=dt.datetime.now(dt.UTC),
        lakebed_version=__version__,
    )
    partial_manifest = folder / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    partial_manifest.write_text(manifest.to_json())
    partial_manifest.replace(manifest_path)
    return manifest


def load_manifest(
    source: TrainingSetManifest | str | os.PathLike[str], *, config: LakebedConfig | None = None
) -> tuple[TrainingSetManifest, Path]:
    """A manifest and the folder it lives in, from a manifest, its JSON file, its folder or its name."""
    config = config or get_config()
    if isinstance(source, TrainingSetManifest):
        path = Path(source.entity_rows)
        folder = path.parent if path.exists() else training_set_dir(source.name, config)
        return source, folder
    path = Path(source)
    if not path.exists() and isinstance(source, str) and _NAME.fullmatch(source):
        path = training_set_dir(source, config)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise TrainingSetError(f"no training set manifest at {str(source)!r}")
    try:
        manifest = TrainingSetManifest.model_validate_json(path.read_text())
    except ValueError as exc:
        raise TrainingSetError(f"invalid training set manifest {path}: {exc}") from exc
    return manifest, path.parent


def training_set(
    manifest: TrainingSetManifest | str | os.PathLike[str], *, config: LakebedConfig | None = None
) -> pa.Table:
    """Rebuild a training set: the stored entity rows (hash verified) joined point-in-time with each
    offline table read at the Delta version recorded in the manifest. Identical rows every time."""
    import pyarrow.parquet as pq

    config = config or get_config()
    manifest, folder = load_manifest(manifest, config=config)
    path = Path(manifest.entity_rows)
    if not path.exists():
        path = folder / ENTITIES_FILE
    if not path.exists():
        raise TrainingSetError(f"the entity rows of training set {manifest.name!r} are missing ({path})")
    entities = pq.read_table(path)
    digest = entity_hash(entities)
    if digest != manifest.entity_hash:
        raise TrainingSetIntegrityError(
            f"the entity rows of training set {manifest.name!r} ({path}) have changed: sha256 {digest} "
            f"but the manifest records {manifest.entity_hash}"
        )
    plans = resolve_features(manifest.features, config=config, reserved=entities.column_names)
    missing = [p.key for p in plans if p.key not in manifest.views]
    if missing:
        raise TrainingSetError(f"training set {manifest.name!r}: manifest pins no Delta version of {missing}")
    tables = {}
    for plan in plans:
        pin = manifest.views[plan.key]
        if pin.table != plan.table:
            raise TrainingSetError(
                f"training set {manifest.name!r}: view {plan.key} was read from table {pin.table!r} "
                f"but now lives in {plan.table!r}"
            )
        if pin.definition_hash and pin.definition_hash != plan.spec.definition_hash():
            raise TrainingSetError(
                f"training set {manifest.name!r}: feature view {plan.key} is registered with a different "
                f"definition than when the set was created (hash {plan.spec.definition_hash()[:12]}, "
                f"recorded {pin.definition_hash[:12]})"
            )
        tables[plan.key] = _open_offline(plan, pin.delta_version, config)
    _check_columns(entities, plans, manifest.timestamp_column)
    return _historical(entities, plans, tables, manifest.timestamp_column)


# Canonical hash of entity rows ----------------------------------------------------------------------
class _HashSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


_HASH_CHUNK_ROWS = 65_536


def canonical_entities(table: pa.Table) -> pa.Table:
    """The canonical form hashed for training sets.

    Same column names and order, metadata dropped, types made plain where a Parquet round trip may change
    them (dictionaries decoded; large/view strings and binaries plain; second and millisecond timestamps
    as microseconds; time32 as time64[us]; date64 as date32), and every column null-free: a column with
    nulls becomes its values with nulls filled by the type's zero plus a ``<name>\\x00valid`` uint8
    column, so bytes under null slots and bitmap padding, which Arrow leaves unspecified, never reach
    the hash.
    """
    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        kind = array.type
        if pa.types.is_dictionary(kind):
            array = array.dictionary_decode()
            kind = array.type
        plain = _canonical_type(kind)
        if plain != kind:
            array = array.cast(plain)
        if pa.types.is_boolean(plain):
            array = array.cast(pa.uint8())
        if array.null_count:
            valid = array.is_valid().cast(pa.uint8())
            array = _zero_filled(array)
            fields.append(pa.field(name, array.type))
            arrays.append(array)
            fields.append(pa.field(name + "\x00valid", pa.uint8()))
            arrays.append(valid)
        else:
            fields.append(pa.field(name, array.type))
            arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _canonical_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind) and kind.unit in ("s", "ms"):
        return pa.timestamp("us", tz=kind.tz)
    if pa.types.is_time32(kind):
        return pa.time64("us")
    if pa.types.is_date64(kind):
        return pa.date32()
    return _plain(kind)


_INT_OF_WIDTH = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}


def _zero_filled(array: pa.Array) -> pa.Array:
    """``array`` with its null slots holding the type's zero (and no validity bitmap)."""
    kind = array.type
    if pa.types.is_string(kind):
        return pc.fill_null(array, pa.scalar("", kind))
    if pa.types.is_binary(kind):
        return pc.fill_null(array, pa.scalar(b"", kind))
    if pa.types.is_fixed_size_binary(kind):
        return pc.fill_null(array, pa.scalar(b"\x00" * kind.byte_width, kind))
    if pa.types.is_decimal(kind):
        return pc.fill_null(array, pa.scalar(decimal.Decimal(0)).cast(kind))
    width = kind.bit_width if pa.types.is_primitive(kind) else None
    if width in _INT_OF_WIDTH:
        storage = _INT_OF_WIDTH[width]
        return pc.fill_null(array.view(storage), pa.scalar(0, storage)).view(kind)
    return array  # nested types: Arrow's own representation


def entity_hash(table: pa.Table) -> str:
    """sha256 (hex) of the Arrow IPC stream of :func:`canonical_entities` in 65,536-row batches."""
    canonical = canonical_entities(table)
    sink = _HashSink()
    stream = pa.PythonFile(sink, mode="w")
    options = pa.ipc.IpcWriteOptions(compression=None)
    with pa.ipc.new_stream(stream, canonical.schema, options=options) as writer:
        for batch in canonical.to_batches(max_chunksize=_HASH_CHUNK_ROWS):
            writer.write_batch(batch)
    return sink.digest.hexdigest()


__all__ = [
    "ENTITY_TIMESTAMP",
    "EntityRowsError",
    "FeatureRetrievalError",
    "FeatureSelection",
    "TrainingSetError",
    "TrainingSetIntegrityError",
    "TrainingSetManifest",
    "UnknownFeatureError",
    "ViewPin",
    "OnlinePlan",
    "ViewPlan",
    "as_arrow",
    "create_training_set",
    "entity_hash",
    "get_historical_features",
    "get_online_feature_dict",
    "get_online_features",
    "load_manifest",
    "online_plan",
    "parse_reference",
    "resolve_features",
    "training_set",
]
