"""Online feature reads: :func:`get_online_features` and :func:`get_online_feature_dict` take the latest
stored row of each entity from the online store and null it when ``feature_ts <= now - ttl``, with the
output columns of :func:`lakebed.pipelines.features.retrieval.get_historical_features`. A single entity
given as a plain dict (``{"user_id": 42}``) is served by the SQLite store's primary-key lookup
(``read_one``) without building Arrow data for the request; :class:`OnlinePlan` holds everything resolved
once per feature list.
"""

from __future__ import annotations

import datetime as dt
import operator
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import EntityRowsError, UnknownFeatureError
from lakebed.pipelines.features.retrieval import ViewPlan, as_arrow, check_names, epoch_us, resolve_features
from lakebed.schemas.features import FEATURE_TS, duration_us


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
        self.features = tuple(f for view in self.views for f in view.features)
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
        check_names(key, self.plans, None)
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
        return OnlinePlan(resolve_features(features, config=config or get_config(), reserved=reserved))
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
        stale = pc.less_equal(epoch_us(rows.column(FEATURE_TS), FEATURE_TS), now_us - view.ttl_us)
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


@dataclass(slots=True)  # not frozen: one is built per request, and a frozen one costs twice as much
class OnlineVectors:
    """The online values of several entities, one column per feature (the shape Feast's feature server
    answers in): ``values[i][j]`` is feature ``i`` of entity ``j``; ``statuses`` say why a value is
    missing (``PRESENT``, ``NULL_VALUE``: stored null, ``NOT_FOUND``: no stored row, ``OUTSIDE_MAX_AGE``:
    the row is older than the view's ttl, its value withheld as offline retrieval would); ``feature_ts``
    is the stored row's ``feature_ts`` in microseconds since the epoch (None without a row)."""

    columns: tuple[str, ...]
    """Output column names (``<view>__<feature>``), in request order."""
    features: tuple[str, ...]
    """Stored feature names, in the same order."""
    values: list[list[Any]]
    statuses: list[list[str]]
    feature_ts: list[list[int | None]]


def read_online_vectors(
    online: OnlinePlan, entities: Mapping[str, Sequence[Any]], *, store: Any, now: dt.datetime | None = None
) -> OnlineVectors:
    """The stored feature values of the entities ``{"key": [v1, v2, ...], ...}`` (columns of equal length),
    with a status and the stored ``feature_ts`` of each value; values withheld exactly where
    :func:`get_online_features` gives nulls."""
    lengths = {len(values) for values in entities.values()}
    if len(lengths) > 1:
        sizes = {name: len(values) for name, values in entities.items()}
        raise EntityRowsError(f"entity key columns have different lengths: {sizes}")
    online.check(entities)
    count = lengths.pop() if lengths else 0
    oldest = _now_us(now)
    values: list[list[Any]] = []
    statuses: list[list[str]] = []
    stamps: list[list[int | None]] = []
    for view in online.views:
        limit = oldest - view.ttl_us
        width = len(view.features)
        rows = _stored_rows(view, entities, count, store)
        if count == 1:  # what a server is asked most: one entity, without the per-entity loops below
            row = rows[0]
            if row is not None and row[0] > limit:
                features = row[1:]
                values.extend([[value] for value in features])
                statuses.extend([["NULL_VALUE" if value is None else "PRESENT"] for value in features])
            else:
                why = "NOT_FOUND" if row is None else "OUTSIDE_MAX_AGE"
                values.extend([[None] for _ in range(width)])
                statuses.extend([[why] for _ in range(width)])
            stamps.extend([[None if row is None else row[0]]] * width)
            continue
        columns: list[list[Any]] = [[] for _ in range(width)]
        codes: list[list[str]] = [[] for _ in range(width)]
        view_stamps: list[int | None] = []
        for row in rows:
            if row is not None and row[0] > limit:
                view_stamps.append(row[0])
                for index in range(width):
                    value = row[index + 1]
                    columns[index].append(value)
                    codes[index].append("PRESENT" if value is not None else "NULL_VALUE")
                continue
            view_stamps.append(None if row is None else row[0])
            why = "NOT_FOUND" if row is None else "OUTSIDE_MAX_AGE"
            for index in range(width):
                columns[index].append(None)
                codes[index].append(why)
        values.extend(columns)
        statuses.extend(codes)
        stamps.extend([view_stamps] * width)
    return OnlineVectors(online.columns, online.features, values, statuses, stamps)


def _stored_rows(
    view: _OnlineView, entities: Mapping[str, Sequence[Any]], count: int, store: Any
) -> list[tuple[Any, ...] | None]:
    """Per entity, its stored row ``(feature_ts_us, *features)`` or None: primary-key lookups through the
    store's ``read_one`` when it has one, else one ``read`` of the key columns."""
    columns = [entities[k] for k in view.keys]
    read_one = getattr(store, "read_one", None)
    if read_one is not None:
        table, keys, features = view.table, view.keys, view.features
        if len(keys) == 1:
            return [read_one(table, (value,), keys, features) for value in columns[0]]
        return [read_one(table, key, keys, features) for key in zip(*columns, strict=True)]
    rows = store.read(
        view.table, as_arrow({k: list(c) for k, c in zip(view.keys, columns, strict=True)}), list(view.keys)
    )
    stamps = epoch_us(rows.column(FEATURE_TS), FEATURE_TS).to_pylist()
    stored = [rows.column(f).to_pylist() for f in view.features]
    return [None if stamps[i] is None else (stamps[i], *(c[i] for c in stored)) for i in range(count)]


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


__all__ = [
    "OnlinePlan",
    "OnlineVectors",
    "get_online_feature_dict",
    "get_online_features",
    "online_plan",
    "read_online_vectors",
]
