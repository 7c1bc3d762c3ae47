"""The SQLite side of the online store: a view version's stored metadata (:class:`StoredView`, its entity
keys and Arrow schema as recorded in the ``_lakebed_online_views`` table) with the lookup SQL built from it
and cached per column list and batch size, the creation of a view's table, the checks on rows written,
and the conversions between Arrow values and the values SQLite stores (timestamps as microseconds since
the epoch, dates as days, decimals as text) in both directions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lakebed.errors import OnlineStoreError
from lakebed.schemas.features import FEATURE_TS
from lakebed.schemas.types import delta_schema

META_TABLE = "_lakebed_online_views"
"""The table holding each view's keys, schema and source version."""


# Stored views --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Point:
    """A single-entity lookup of some of a view's columns."""

    sql: str
    decoders: tuple[Callable[[Any], Any] | None, ...] | None
    """Per value column (after ``feature_ts``): storage value → Python value; None when all are as is."""


@dataclass(eq=False)
class StoredView:
    """One view's stored metadata, parsed once, with the SQL and conversions derived from it."""

    view_key: str
    stored: tuple[str, bytes]
    """The metadata row as stored (keys JSON, schema IPC): compared with the database on every read."""
    keys: tuple[str, ...]
    schema: pa.Schema
    values: tuple[pa.Field, ...]
    """The non-key columns (``feature_ts`` and the features) in stored order."""
    value_names: tuple[str, ...]
    key_types: tuple[pa.DataType, ...]
    fast_keys: tuple[_FastKey | None, ...]
    join_sql: str
    points: dict[tuple[str, ...] | None, _Point] = field(default_factory=dict)
    lookups: dict[int, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, view_key: str, keys_json: str, schema_ipc: bytes) -> StoredView:
        keys = tuple(json.loads(keys_json))
        schema = pa.ipc.read_schema(pa.py_buffer(schema_ipc))
        values = tuple(f for f in schema if f.name not in keys)
        key_types = tuple(schema.field(k).type for k in keys)
        table = quote(view_key)
        join = " AND ".join(f"t.{quote(k)} = q.k{i}" for i, k in enumerate(keys))
        selected = ", ".join(f"t.{quote(f.name)}" for f in values)
        join_sql = (
            f"SELECT {selected} FROM temp._lakebed_query_{len(keys)} AS q LEFT JOIN {table} AS t ON {join} "
            "ORDER BY q.i"
        )
        return cls(
            view_key=view_key,
            stored=(keys_json, schema_ipc),
            keys=keys,
            schema=schema,
            values=values,
            value_names=tuple(f.name for f in values),
            key_types=key_types,
            fast_keys=tuple(_fast_key(kind) for kind in key_types),
            join_sql=join_sql,
        )

    def point(self, columns: Sequence[str] | None) -> _Point:
        """The single-entity lookup of ``columns`` (None: every non-key column after ``feature_ts``)."""
        names = [f.name for f in self.values if f.name != FEATURE_TS] if columns is None else list(columns)
        unknown = [c for c in names if self.schema.get_field_index(c) < 0]
        if unknown:
            raise OnlineStoreError(
                f"online table {self.view_key!r} has no column(s) {unknown} (its columns: "
                f"{', '.join(self.schema.names)})"
            )
        on = " AND ".join(f"t.{quote(k)} = ?" for k in self.keys)
        selected = ", ".join(f"t.{quote(c)}" for c in [self.keys[0], FEATURE_TS, *names])
        sql = (
            f"SELECT m.keys, m.schema, {selected} FROM {META_TABLE} AS m LEFT JOIN {quote(self.view_key)} AS t "
            f"ON {on} WHERE m.view_key = ?"
        )
        decoders = tuple(_decoder(self.schema.field(c).type) for c in names)
        point = _Point(sql=sql, decoders=None if all(d is None for d in decoders) else decoders)
        self.points[None if columns is None else tuple(columns)] = point
        return point

    def lookup_sql(self, size: int) -> str:
        """Rows (keys, then the non-key columns) of up to ``size`` entities: an ``IN`` list for one key
        column, a ``VALUES`` join for several (SQLite's row-value ``IN`` would scan the table)."""
        sql = self.lookups.get(size)
        if sql is None:
            table = quote(self.view_key)
            values = ", ".join(f"t.{quote(f.name)}" for f in self.values)
            if len(self.keys) == 1:
                key = quote(self.keys[0])
                marks = ", ".join("?" for _ in range(size))
                sql = f"SELECT t.{key}, {values} FROM {table} AS t WHERE t.{key} IN ({marks})"
            else:
                row = "(" + ", ".join("?" for _ in self.keys) + ")"
                on = " AND ".join(f"t.{quote(k)} = q.column{i + 1}" for i, k in enumerate(self.keys))
                probe = ", ".join(f"q.column{i + 1}" for i in range(len(self.keys)))
                sql = (
                    f"SELECT {probe}, {values} FROM (VALUES {', '.join(row for _ in range(size))}) AS q "
                    f"JOIN {table} AS t ON {on}"
                )
            self.lookups[size] = sql
        return sql

    def probe(self, key: Sequence[Any]) -> list[Any]:
        """``key`` (one value per key column) as the values SQLite compares with the stored keys."""
        if len(key) != len(self.keys):
            raise OnlineStoreError(
                f"online table {self.view_key!r} is keyed by {list(self.keys)}: got {len(key)} key value(s)"
            )
        out = []
        for value, fast, kind in zip(key, self.fast_keys, self.key_types, strict=True):
            if (
                fast is not None
                and type(value) is fast.kind
                and (not fast.bounded or fast.low <= value <= fast.high)
            ):
                out.append(value)
            else:
                out.append(to_sqlite(pa.array([value]).cast(kind))[0])
        return out


@dataclass(frozen=True)
class _FastKey:
    """Key values of Python type ``kind`` (integers: within ``[low, high]``) that ``pa.array([value])
    .cast(key_type)`` would store unchanged, so they are bound as they are."""

    kind: type[Any]
    bounded: bool = False
    low: int = 0
    high: int = 0


def decode_row(row: tuple[Any, ...], decoders: tuple[Callable[[Any], Any] | None, ...]) -> tuple[Any, ...]:
    """``(feature_ts, *values)`` of a single-entity row, the values made Python values."""
    return (row[3], *(v if d is None else d(v) for d, v in zip(decoders, row[4:], strict=True)))


def _fast_key(kind: pa.DataType) -> _FastKey | None:
    if pa.types.is_signed_integer(kind):
        bound = 1 << (kind.bit_width - 1)
        return _FastKey(int, True, -bound, bound - 1)
    if pa.types.is_string(kind):
        return _FastKey(str)
    if kind == pa.float64():
        return _FastKey(float)
    return None


def _decoder(kind: pa.DataType) -> Callable[[Any], Any] | None:
    """Stored value → the Python value ``to_pylist()`` gives for it (None: the stored value as is)."""
    if pa.types.is_boolean(kind):
        return _as_bool
    if is_vector(kind):
        dtype = np.dtype(kind.value_type.to_pandas_dtype())

        def unpack(value: Any) -> Any:
            return None if value is None else np.frombuffer(value, dtype).tolist()

        return unpack
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_decimal(kind):

        def decode(value: Any) -> Any:
            return None if value is None else from_sqlite([value], kind)[0].as_py()

        return decode
    return None


def _as_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


# Tables and values ---------------------------------------------------------------------------------
def quote(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def check_rows(view_key: str, rows: pa.Table, keys: list[str]) -> pa.Schema:
    """The schema ``rows`` are stored with (Delta types, all nullable); raises unless they have the keys
    and ``feature_ts``, without nulls, and only storable types."""
    if not keys:
        raise OnlineStoreError(f"online table {view_key!r}: no entity key columns given")
    missing = [c for c in [*keys, FEATURE_TS] if c not in rows.column_names]
    if missing:
        raise OnlineStoreError(f"rows for online table {view_key!r} lack column(s) {missing}")
    for key in [*keys, FEATURE_TS]:
        if rows.column(key).null_count:
            raise OnlineStoreError(f"rows for online table {view_key!r} have nulls in {key!r}")
    schema = delta_schema(rows.schema)
    for column in schema:
        _sqlite_type(column.type, view_key, column.name)
    return pa.schema([f.with_nullable(True) for f in schema])


def same_columns(stored: pa.Schema, new: pa.Schema) -> bool:
    """Whether two schemas have the same column names and types, in the same order."""
    return [(f.name, f.type) for f in stored] == [(f.name, f.type) for f in new]


def is_vector(kind: pa.DataType) -> bool:
    """Whether ``kind`` is a list of numbers (an embedding): stored as one BLOB of the raw values."""
    lists = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    return lists and (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type))


def _sqlite_type(kind: pa.DataType, view_key: str = "", column: str = "") -> str:
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_timestamp(kind):
        return "INTEGER"
    if pa.types.is_date(kind):
        return "INTEGER"
    if pa.types.is_floating(kind):
        return "REAL"
    if pa.types.is_string(kind) or pa.types.is_decimal(kind):
        return "TEXT"
    if pa.types.is_binary(kind) or is_vector(kind):
        return "BLOB"
    raise OnlineStoreError(
        f"online table {view_key!r}: column {column!r} has type {kind}, which it cannot store"
    )


def create_table(connection: sqlite3.Connection, view_key: str, schema: pa.Schema, keys: list[str]) -> None:
    """Create a view's table (primary key: ``keys``) and record its metadata in :data:`META_TABLE`."""
    columns = ", ".join(f"{quote(f.name)} {_sqlite_type(f.type, view_key, f.name)}" for f in schema)
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {quote(view_key)} ({columns}, "
        f"PRIMARY KEY ({', '.join(quote(k) for k in keys)})) WITHOUT ROWID"
    )
    connection.execute(
        f"INSERT INTO {META_TABLE} (view_key, keys, schema) VALUES (?, ?, ?)",
        (view_key, json.dumps(keys), schema.serialize().to_pybytes()),
    )


def to_sqlite(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """Python values SQLite stores: timestamps as µs since the epoch, dates as days, decimals as text."""
    kind = column.type
    if is_vector(kind):
        return _pack_vectors(column)
    if pa.types.is_timestamp(kind):
        column = column.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64())
    elif pa.types.is_date(kind):
        column = column.cast(pa.date32()).cast(pa.int32())
    elif pa.types.is_decimal(kind):
        column = column.cast(pa.string())
    return column.to_pylist()


def _pack_vectors(column: pa.ChunkedArray | pa.Array) -> list[bytes | None]:
    """Each list as the bytes of its values (native order, the list's value type); a null list as None.
    A null inside a list cannot be stored that way: an error naming the column's type."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.values.null_count:
        raise OnlineStoreError(
            f"a {array.type} value holds null elements: the online store keeps whole vectors only"
        )
    dtype = np.dtype(array.type.value_type.to_pandas_dtype())
    packed: list[bytes | None] = []
    for item in array:
        packed.append(
            None
            if not item.is_valid
            else np.asarray(item.values.to_numpy(zero_copy_only=False), dtype).tobytes()
        )
    return packed


def from_sqlite(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """Stored values as an Arrow array of ``kind`` (the inverse of :func:`to_sqlite`)."""
    if is_vector(kind):
        dtype = np.dtype(kind.value_type.to_pandas_dtype())
        return pa.array([None if v is None else np.frombuffer(v, dtype) for v in values], kind)
    if pa.types.is_timestamp(kind):
        return pa.array(values, pa.int64()).cast(kind)
    if pa.types.is_date(kind):
        return pa.array(values, pa.int32()).cast(kind)
    if pa.types.is_decimal(kind):
        return pa.array(values, pa.string()).cast(kind)
    if pa.types.is_boolean(kind):
        return pa.array(values, pa.int64()).cast(kind)
    return pa.array(values, kind)


__all__ = [
    "META_TABLE",
    "StoredView",
    "check_rows",
    "create_table",
    "decode_row",
    "from_sqlite",
    "is_vector",
    "quote",
    "same_columns",
    "to_sqlite",
]
