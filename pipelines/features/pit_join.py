"""The point-in-time join of one feature view (the semantics are in
:mod:`lakebed.pipelines.features.retrieval`).

The time goes into DuckDB's ASOF sort of the stored rows, so the join sorts as little as it can. When
DuckDB's own ``read_parquet`` reads the offline table's files exactly as Delta does (:func:`parquet_files`),
the ASOF carries only the key columns, ``feature_ts`` and the stored row's place (file index and row number
in its file); the valid-to and feature columns of the matched rows are then read from the row groups that
hold them and taken by position (no second join over every stored row), and the ttl is applied to them.
Otherwise (a cold tier on an object store, a recall in flight, deletion vectors, partition or mapped
columns) the rows are streamed from the tables' Arrow dataset through one ASOF that carries them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lakebed.errors import EntityRowsError, FeatureRetrievalError
from lakebed.pipelines.features.retrieval import ViewPlan, plain_type
from lakebed.pipelines.read import local_files, parquet_scan
from lakebed.schemas.features import FEATURE_TS, FEATURE_VALID_TO

if TYPE_CHECKING:
    import duckdb

    from lakebed.pipelines.tiering import Tiers

_ROW = "__lakebed_row"
_TS = "__lakebed_ts"
_AT = "__lakebed_at"
_FILE = "__lakebed_file"
_ROW_IN_FILE = "__lakebed_row_in_file"
_TIME_TYPE = pa.timestamp("us", tz="UTC")


def pit_join(
    connection: duckdb.DuckDBPyConnection,
    entities: pa.Table,
    ts_us: pa.Array,
    plan: ViewPlan,
    table: Tiers,
) -> list[pa.ChunkedArray]:
    """The feature columns of ``plan`` for every entity row, in input order."""
    from lakebed.pipelines.read import fetch_arrow

    n = entities.num_rows
    valid = pc.drop_null(ts_us)
    lo = pc.min(valid).as_py() if len(valid) else None
    hi = pc.max(valid).as_py() if len(valid) else None
    schema = _checked_schema(plan, table)
    segments = schema.get_field_index(FEATURE_VALID_TO) >= 0
    keys = {}
    for key in plan.entities:
        keys[key] = _align_key(entities.column(key), schema.field(key).type, key, plan)
    # The entity times also in the offline table's own timestamp type, so the ASOF compares the stored
    # column as it is (no conversion of every stored row).
    at = ts_us.cast(_TIME_TYPE).cast(schema.field(FEATURE_TS).type)
    left = pa.table({**keys, _TS: ts_us, _AT: at, _ROW: pa.array(np.arange(n, dtype=np.int64))})
    left_name, right_name = "__lakebed_entities", "__lakebed_features"
    files = parquet_files(table, schema) if lo is not None and hi is not None else None
    connection.register(left_name, left)
    try:
        if files is not None:
            assert lo is not None and hi is not None
            places = fetch_arrow(connection.sql(_places_query(plan, files, segments, left_name, lo, hi)))
        else:
            connection.register(right_name, _feature_frame(plan, table, schema, segments, lo, hi))
            result = fetch_arrow(connection.sql(_one_scan_query(plan, segments, left_name, right_name)))
    finally:
        connection.unregister(left_name)
        if files is None:
            connection.unregister(right_name)
    if files is not None:
        return _matched_features(plan, files, places, schema, segments, ts_us)
    columns = []
    for selection in plan.features:
        column = result.column(selection.column)
        target = plain_type(schema.field(selection.feature).type)
        if column.type != target:
            column = column.cast(target)
        columns.append(column)
    return columns


def _checked_schema(plan: ViewPlan, table: Tiers) -> pa.Schema:
    """The offline table's own (plain-typed) schema, or a clear error when it lacks a column the join
    needs."""
    schema = pa.schema(table.schema().to_arrow())
    wanted = [*plan.entities, FEATURE_TS, *(s.feature for s in plan.features)]
    missing = [c for c in wanted if schema.get_field_index(c) < 0]
    if missing:
        raise FeatureRetrievalError(
            f"the offline table {plan.table!r} of feature view {plan.key} lacks column(s) {missing}"
        )
    return schema


def parquet_files(table: Tiers, schema: pa.Schema) -> list[str] | None:
    """The local paths of the Parquet files holding every row of ``table`` (both tiers, at the versions
    read), when DuckDB's ``read_parquet`` reads them as Delta does; None when it would not: a tier on an
    object store, a recall in flight (cold is then read below the watermark only), deletion vectors,
    stored columns named like read_parquet's virtual ``file_index`` or ``file_row_number``, partition columns (their values live in the paths), column mapping (physical names differ), or times
    other than microseconds in UTC (the time bounds are written as such)."""
    if any(schema.get_field_index(c) >= 0 for c in ("file_index", "file_row_number")):
        return None  # (a stored column of those names would hide read_parquet's virtual ones)
    times = [schema.field(FEATURE_TS)]
    if schema.get_field_index(FEATURE_VALID_TO) >= 0:
        times.append(schema.field(FEATURE_VALID_TO))
    if any(f.type != _TIME_TYPE for f in times):
        return None
    return local_files(table)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fresh(plan: ViewPlan, segments: bool) -> str:
    """SQL (:func:`_matched_features` tests the same in numpy): whether the matched row ``f`` is fresh at the entity row ``e``'s time. The matched segment's
    hop end at ts is the last hop end at or before ts, or the segment's last one when its windows emptied
    before ts; fresh while that end is younger than the ttl. A dense table's row holds for its own hop end
    only."""
    hop = plan.spec.hop_us
    at_ts = f"(e.{_TS} - (((e.{_TS} % {hop}) + {hop}) % {hop}))"
    valid_to = f"epoch_us(f.{_quote(FEATURE_VALID_TO if segments else FEATURE_TS)})"
    last_end = f"{valid_to} - {hop}" if segments else valid_to
    return f"least({at_ts}, {last_end}) > e.{_TS} - {plan.ttl_us}"


def _select(plan: ViewPlan, segments: bool) -> str:
    fresh = _fresh(plan, segments)
    return ", ".join(
        f"CASE WHEN {fresh} THEN f.{_quote(s.feature)} END AS {_quote(s.column)}" for s in plan.features
    )


def _on(plan: ViewPlan) -> str:
    keys = " AND ".join(f"e.{_quote(k)} = f.{_quote(k)}" for k in plan.entities)
    return f"{keys} AND e.{_AT} >= f.{_quote(FEATURE_TS)}"


def _one_scan_query(plan: ViewPlan, segments: bool, left: str, right: str) -> str:
    return (
        f"SELECT {_select(plan, segments)} FROM {left} e ASOF LEFT JOIN {right} f "
        f"ON {_on(plan)} ORDER BY e.{_ROW}"
    )


def _time(us: int) -> str:
    """SQL: the instant ``us`` microseconds after the epoch (folded to a constant, so Parquet row groups
    outside a bound are skipped by their statistics)."""
    return f"('epoch'::TIMESTAMPTZ + to_microseconds({int(us)}::BIGINT))"


def _places_query(plan: ViewPlan, files: list[str], segments: bool, left: str, lo: int, hi: int) -> str:
    """The ASOF over the narrow stored rows that can be the fresh match of an entity time in ``[lo, hi]``
    (see :func:`_feature_frame`): per entity row with a match, the matched row's file and row number."""
    scan = parquet_scan(files)
    ts = _quote(FEATURE_TS)
    last = _quote(FEATURE_VALID_TO) if segments else ts
    bound = lo - plan.ttl_us + (plan.spec.hop_us if segments else 0)
    narrow = (
        f"SELECT {', '.join(_quote(k) for k in plan.entities)}, {ts}, file_index, file_row_number "
        f"FROM {scan} WHERE {ts} <= {_time(hi)} AND {last} > {_time(bound)}"
    )
    return (
        f"SELECT e.{_ROW} AS {_ROW}, f.file_index AS {_FILE}, f.file_row_number AS {_ROW_IN_FILE} "
        f"FROM {left} e ASOF JOIN ({narrow}) f ON {_on(plan)}"
    )


def _matched_features(
    plan: ViewPlan, files: list[str], places: pa.Table, schema: pa.Schema, segments: bool, ts_us: pa.Array
) -> list[pa.ChunkedArray]:
    """The feature columns for every entity row from the matched stored rows at ``places``: the values
    of a fresh match (:func:`_fresh`, the same test in numpy), nulls elsewhere."""
    end = FEATURE_VALID_TO if segments else FEATURE_TS
    wanted = list(dict.fromkeys([end, *(s.feature for s in plan.features)]))
    entity_row, stored = _stored_rows(files, places, wanted, schema)
    ts = pc.fill_null(ts_us, 0).to_numpy()[entity_row]  # a matched row's time is never null
    ends = stored.column(end).cast(pa.int64())
    last = pc.fill_null(ends, 0).to_numpy() - (plan.spec.hop_us if segments else 0)
    hop_end = ts - np.mod(ts, plan.spec.hop_us)
    fresh = (np.minimum(hop_end, last) > ts - plan.ttl_us) & np.asarray(ends.is_valid())
    source = np.full(len(ts_us), -1, dtype=np.int64)
    source[entity_row[fresh]] = np.flatnonzero(fresh)
    index = pa.array(source, mask=source < 0)
    return [stored.column(s.feature).take(index) for s in plan.features]


def _stored_rows(
    files: list[str], places: pa.Table, columns: list[str], schema: pa.Schema
) -> tuple[np.ndarray, pa.Table]:
    """The ``columns`` (typed as the table's schema) of the stored rows at ``places``, read file by file
    from the row groups that hold one, and the entity row each belongs to, in the same order."""
    import pyarrow.parquet as pq

    file_index = places.column(_FILE).to_numpy().astype(np.int64)
    row = places.column(_ROW_IN_FILE).to_numpy()
    entity_row = places.column(_ROW).to_numpy()
    order = np.lexsort((row, file_index))
    file_index, row, entity_row = file_index[order], row[order], entity_row[order]
    bounds = np.searchsorted(file_index, np.arange(len(files) + 1))
    target = pa.schema([pa.field(c, plain_type(schema.field(c).type)) for c in columns])
    pieces = [target.empty_table()]
    for i, path in enumerate(files):
        rows = row[bounds[i] : bounds[i + 1]]
        if not len(rows):
            continue
        with pq.ParquetFile(path) as parquet:
            present = [c for c in columns if c in parquet.schema_arrow.names]
            start = 0
            for group in range(parquet.metadata.num_row_groups):
                count = parquet.metadata.row_group(group).num_rows
                first, stop = np.searchsorted(rows, [start, start + count])
                if stop > first:
                    # typed first: files rewritten by delta-rs merges hold string_view, which take lacks
                    read = _typed(parquet.read_row_group(group, columns=present), target)
                    pieces.append(read.take(pa.array(rows[first:stop] - start)))
                start += count
    return entity_row, pa.concat_tables(pieces)


def _typed(rows: pa.Table, target: pa.Schema) -> pa.Table:
    """``rows`` with ``target``'s columns and types (columns a file predates are nulls)."""
    columns = [
        rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
        for f in target
    ]
    return pa.Table.from_arrays(columns, schema=target)


def _feature_frame(
    plan: ViewPlan, table: Tiers, schema: pa.Schema, segments: bool, lo_us: int | None, hi_us: int | None
) -> pa.Table | pa.RecordBatchReader:
    """The offline rows the join can use, streamed from the table's Arrow dataset: key, time and requested
    feature columns, and only the rows that can be the fresh match of an entity timestamp in ``[lo, hi]``
    (row groups outside are skipped).

    Offline tables hold segments (``feature_valid_to``, docs/streaming.md "Offline layout"); a table of the
    earlier dense layout (one row per hop end, no ``feature_valid_to``) reads as segments of one hop."""
    # Files that delta-rs merges rewrote with string_view columns are cast to the table's schema while
    # scanning.
    wanted = [*plan.entities, FEATURE_TS, *(s.feature for s in plan.features)]
    if segments:
        wanted.insert(len(plan.entities) + 1, FEATURE_VALID_TO)
    ts_type = schema.field(FEATURE_TS).type
    if hi_us is None or lo_us is None:  # no entity row has a timestamp: nothing can match
        return schema.empty_table().select(wanted)
    condition: ds.Expression | None = None
    if pa.types.is_timestamp(ts_type):
        upper = pa.scalar(hi_us, pa.timestamp("us", tz=ts_type.tz)).cast(ts_type)
        lower = pa.scalar(lo_us - plan.ttl_us, pa.timestamp("us", tz=ts_type.tz)).cast(ts_type)
        # A segment is still fresh at ts while its last hop end (feature_valid_to - hop) > ts - ttl.
        last = ds.field(FEATURE_VALID_TO) if segments else ds.field(FEATURE_TS)
        bound = lower if not segments else pa.scalar(lo_us - plan.ttl_us + plan.spec.hop_us, lower.type)
        condition = (ds.field(FEATURE_TS) <= upper) & (last > bound)
    return table.dataset().scanner(columns=wanted, filter=condition).to_reader()


def _align_key(column: pa.ChunkedArray, target: pa.DataType, name: str, plan: ViewPlan) -> pa.ChunkedArray:
    """An entity key column in a type DuckDB can compare with the offline table's key column."""
    source = column.type
    if pa.types.is_dictionary(source):
        column = column.cast(source.value_type)
        source = column.type
    if _family(source) == _family(target) and _family(source) != "other":
        return column
    try:
        return column.cast(plain_type(target), safe=True)
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
