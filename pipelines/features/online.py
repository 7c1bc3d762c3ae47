"""Online feature store: the current feature row of every entity, per view version, for low-latency reads.

:class:`OnlineStore` is the interface (a server store such as Redis can implement it);
:class:`SQLiteOnlineStore` is the embedded default, one SQLite file (WAL) at ``HOME/online/features.sqlite``
with one table per view version (``fv_<view>_v<N>``) whose primary key is the entity keys. The SQL of
each view and the conversions between Arrow and SQLite values are in
:mod:`lakebed.pipelines.features.online_sql`.

Writes are upserts that never go backwards: a row replaces the stored one only when its ``feature_ts`` is
at least the stored one's, so replaying a write is harmless and the store always holds, per entity, the
row with the greatest ``feature_ts`` ever written. Each write may record the source position it reflects
(``source_version``: the last raw Delta version processed) in the same SQLite transaction.

Reads answer what the database holds at that moment. One-key point lookups may come from the store
object's cache of rows already read, which is emptied by any commit to the database, from any process
(:mod:`lakebed.pipelines.features.online_cache`); a view's metadata (keys, schema, the SQL built from
them) is cached per store object. That metadata is dropped when this store writes or drops the
view, and every read also fetches the stored metadata in the same SQLite snapshot as the values and
compares it with the cached bytes, so a view dropped or rebuilt by another process is noticed on the next
read. Lookups go by primary key: one ``SELECT ... WHERE k = ?`` per entity for a single entity
(:meth:`SQLiteOnlineStore.read_one` is that lookup without any Arrow data), an ``IN`` list (a ``VALUES``
join for composite keys) for up to a few thousand distinct entities, and a join through a temporary key
table for larger batches.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import OnlineStoreError
from lakebed.pipelines.features.online_cache import RowCache
from lakebed.pipelines.features.online_sql import (
    META_TABLE,
    StoredView,
    check_rows,
    create_table,
    decode_row,
    from_sqlite,
    quote,
    same_columns,
    to_sqlite,
)
from lakebed.schemas.features import FEATURE_TS
from lakebed.schemas.naming import validate_table_name

_META_RAW = f"SELECT keys, schema FROM {META_TABLE} WHERE view_key = ?"
_BATCH = 10_000
_IN_LIMIT = 4_096
"""Distinct entities up to which a read of a one-key view uses an ``IN`` list (else the temp-table join)."""
_VALUES_LIMIT = 512
"""The same for views keyed by several columns (a ``VALUES`` join)."""
_ATTEMPTS = 3
"""Reads retried after finding the view's metadata changed underneath (then the error is raised)."""
DEFAULT_CACHE_ROWS: int = LakebedConfig.model_fields["online_cache_rows"].default
"""Stored rows a store object keeps in memory for its one-key point lookups (:mod:`.online_cache`)."""
_CACHED_STATEMENTS = 512
"""Prepared statements kept per connection (sqlite3's default, 128, is too few for many views)."""


@runtime_checkable
class OnlineStore(Protocol):
    """What materialization and online retrieval need from an online store."""

    def write(
        self, view_key: str, rows: pa.Table, keys: Sequence[str], *, source_version: int | None = None
    ) -> int:
        """Upsert ``rows`` (entity ``keys``, ``feature_ts``, features) by ``keys``; a row replaces the stored
        one only if its ``feature_ts`` is not older. Records ``source_version`` with the rows when given.
        Returns the number of rows submitted."""
        ...

    def read(self, view_key: str, entity_rows: pa.Table, keys: Sequence[str]) -> pa.Table:
        """One row per entity row, in input order (duplicates included): the ``keys`` as given, then
        ``feature_ts`` and the features, null where the store has no row for the entity."""
        ...

    def latest_feature_ts(self, view_key: str) -> dt.datetime | None:
        """The greatest ``feature_ts`` stored for the view (None if it has no rows)."""
        ...

    def source_version(self, view_key: str) -> int | None:
        """The source position recorded by the last write that gave one (None if never)."""
        ...


def default_online_store(config: LakebedConfig | None = None) -> SQLiteOnlineStore:
    """The embedded store at ``HOME/online/features.sqlite``."""
    config = config or get_config()
    return SQLiteOnlineStore(config.home / "online" / "features.sqlite", cache_rows=config.online_cache_rows)


class SQLiteOnlineStore:
    """The embedded online store: SQLite in WAL mode (readers never block the writer), one connection
    per thread, batched ``executemany`` upserts and primary-key reads (see the module docstring)."""

    def __init__(self, path: str | Path, *, cache_rows: int = DEFAULT_CACHE_ROWS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._cache = RowCache(self.path, cache_rows)
        # view key -> parsed metadata; shared by the threads (each has its own connection)
        self._views: dict[str, StoredView] = {}
        with self._transaction() as connection:
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} (view_key TEXT PRIMARY KEY, keys TEXT NOT NULL, "
                "schema BLOB NOT NULL, source_version INTEGER)"
            )

    # Connections ---------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, cached_statements=_CACHED_STATEMENTS
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=30000")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        self._cache.close()

    # Metadata ------------------------------------------------------------------------------------
    def _meta(
        self, connection: sqlite3.Connection, view_key: str
    ) -> tuple[list[str], pa.Schema, int | None] | None:
        row = connection.execute(
            f"SELECT keys, schema, source_version FROM {META_TABLE} WHERE view_key = ?", (view_key,)
        ).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), pa.ipc.read_schema(pa.py_buffer(row[1])), row[2]

    def _view(self, view_key: str) -> StoredView:
        """The view's metadata: the cached one while the stored bytes are unchanged, else parsed afresh
        (and cached). Raises if the store has no table for the view."""
        validate_table_name(view_key)
        row = self._connection().execute(_META_RAW, (view_key,)).fetchone()
        if row is None:
            self._views.pop(view_key, None)
            raise OnlineStoreError(
                f"the online store has no table {view_key!r}: materialize the feature view first "
                f"(known: {', '.join(self.views()) or 'none'})"
            )
        cached = self._views.get(view_key)
        if cached is not None and cached.stored == (row[0], row[1]):
            return cached
        view = StoredView.parse(view_key, row[0], row[1])
        self._views[view_key] = view
        return view

    def _forget(self, view_key: str) -> None:
        self._views.pop(view_key, None)

    def views(self) -> list[str]:
        """Every view key the store holds a table for."""
        rows = self._connection().execute(f"SELECT view_key FROM {META_TABLE} ORDER BY view_key").fetchall()
        return [r[0] for r in rows]

    def schema(self, view_key: str) -> pa.Schema:
        """The Arrow schema of a view's stored rows (entity keys, ``feature_ts``, features)."""
        view = self._views.get(view_key)
        return (view if view is not None else self._view(view_key)).schema

    # Writes --------------------------------------------------------------------------------------
    def write(
        self, view_key: str, rows: pa.Table, keys: Sequence[str], *, source_version: int | None = None
    ) -> int:
        validate_table_name(view_key)
        keys = list(keys)
        schema = check_rows(view_key, rows, keys)
        rows = rows.cast(schema)
        columns = schema.names
        table = quote(view_key)
        assignments = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in keys)
        statement = (
            f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)}) "
            f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET {assignments} "
            f"WHERE excluded.{quote(FEATURE_TS)} >= {table}.{quote(FEATURE_TS)}"
        )
        # Ascending feature_ts: within one batch, the newest row of an entity is applied last.
        ordered = rows.take(pc.sort_indices(rows, [(FEATURE_TS, "ascending")])) if rows.num_rows else rows
        try:
            with self._transaction() as connection:
                stored = self._meta(connection, view_key)
                if stored is None:
                    create_table(connection, view_key, schema, keys)
                elif stored[0] != keys or not same_columns(stored[1], schema):
                    raise OnlineStoreError(
                        f"online table {view_key!r} holds keys {stored[0]} and columns {stored[1].names}; "
                        f"cannot write keys {keys} and columns {schema.names} (a view version's schema is "
                        "fixed)"
                    )
                for batch in ordered.to_batches(max_chunksize=_BATCH):
                    values = [to_sqlite(batch.column(i)) for i in range(batch.num_columns)]
                    connection.executemany(statement, zip(*values, strict=True))
                if source_version is not None:
                    connection.execute(
                        f"UPDATE {META_TABLE} SET source_version = ? WHERE view_key = ?",
                        (int(source_version), view_key),
                    )
        finally:
            self._forget(view_key)
        return rows.num_rows

    def drop(self, view_key: str) -> None:
        """Forget a view's online table."""
        validate_table_name(view_key)
        try:
            with self._transaction() as connection:
                connection.execute(f"DROP TABLE IF EXISTS {quote(view_key)}")
                connection.execute(f"DELETE FROM {META_TABLE} WHERE view_key = ?", (view_key,))
        finally:
            self._forget(view_key)

    # Reads ---------------------------------------------------------------------------------------
    def read(self, view_key: str, entity_rows: pa.Table, keys: Sequence[str]) -> pa.Table:
        keys = list(keys)
        view = self._views.get(view_key)
        if view is None:
            validate_table_name(view_key)
        missing = [k for k in keys if k not in entity_rows.column_names]
        if missing:
            raise OnlineStoreError(
                f"entity rows lack key column(s) {missing} of online table {view_key!r} "
                f"(their columns: {', '.join(entity_rows.column_names)})"
            )
        changed: _Changed | None = None
        for attempt in range(_ATTEMPTS):
            fresh = view is None or attempt > 0
            if view is None or attempt:
                view = self._view(view_key)
            if list(view.keys) != keys:
                if not fresh:
                    continue  # the cached metadata may be outdated: decide on the stored one
                raise OnlineStoreError(f"online table {view_key!r} is keyed by {list(view.keys)}, not {keys}")
            probe = [to_sqlite(entity_rows.column(k).cast(view.key_types[i])) for i, k in enumerate(keys)]
            try:
                fetched = self._fetch(view, probe, entity_rows.num_rows)
            except _Changed as exc:
                changed = exc
                continue
            columns = list(zip(*fetched, strict=True)) if fetched else [() for _ in view.values]
            result = entity_rows.select(keys)
            for stored_field, values in zip(view.values, columns, strict=True):
                result = result.append_column(stored_field, from_sqlite(values, stored_field.type))
            return result
        if changed is not None and isinstance(changed.__cause__, sqlite3.Error):
            raise changed.__cause__  # not a concurrent change after all: the database's own error
        raise _changed_error(view_key)

    def read_one(
        self,
        view_key: str,
        key: Sequence[Any],
        keys: Sequence[str],
        columns: Sequence[str] | None = None,
    ) -> tuple[Any, ...] | None:
        """The stored row of one entity, or None if the store has none: ``(feature_ts, *values)`` with
        ``feature_ts`` in microseconds since the epoch and the values of ``columns`` (default: every
        feature, in stored order) as plain Python values, those ``read(...).to_pylist()`` would hold.

        ``key`` holds the entity's values of ``keys``, converted to the stored key types as :meth:`read`
        converts a one-row table of them (``pa.array([value]).cast(key_type)``; plain ``int``/``str``/
        ``float`` values of integer/string/float64 keys go without Arrow). Such plain one-key lookups
        are answered from the process's cache of rows while the database is unchanged since they were
        read (:mod:`.online_cache`); others, and any lookup after a commit, read the database.
        """
        # Fast path: cached metadata and statement, one key value bound as it is, an open connection.
        view = self._views.get(view_key)
        connection = getattr(self._local, "connection", None)
        if view is not None and connection is not None and len(key) == 1:
            fast = view.fast_keys[0]
            value = key[0]
            point = view.points.get(columns) if columns is None or isinstance(columns, tuple) else None
            if (
                point is not None
                and fast is not None
                and type(value) is fast.kind
                and (not fast.bounded or fast.low <= value <= fast.high)
                and (keys is view.keys or tuple(keys) == view.keys)
            ):
                rows = self._cache.rows()
                cached = rows.get((view_key, value, columns)) if rows is not None else None
                if cached is not None:
                    row = cached
                else:
                    try:
                        row = connection.execute(point.sql, (value, view_key)).fetchone()
                    except sqlite3.OperationalError:
                        row = None
                    if row is None or row[0] != view.stored[0] or row[1] != view.stored[1]:
                        return self._read_one(view_key, key, keys, columns)
                    if rows is not None:
                        self._cache.keep(rows, (view_key, value, columns), row)
                if row[2] is None:
                    return None
                if point.decoders is None:
                    return row[3:]
                return decode_row(row, point.decoders)
        return self._read_one(view_key, key, keys, columns)

    def _read_one(
        self, view_key: str, key: Sequence[Any], keys: Sequence[str], columns: Sequence[str] | None
    ) -> tuple[Any, ...] | None:
        view = self._views.get(view_key)
        for attempt in range(_ATTEMPTS):
            fresh = view is None or attempt > 0
            if view is None or attempt:
                view = self._view(view_key)
            if keys != view.keys and tuple(keys) != view.keys:
                if not fresh:
                    continue  # the cached metadata may be outdated: decide on the stored one
                raise OnlineStoreError(
                    f"online table {view_key!r} is keyed by {list(view.keys)}, not {list(keys)}"
                )
            wanted = columns if columns is None or type(columns) is tuple else tuple(columns)
            point = view.points.get(wanted)
            if point is None:
                point = view.point(wanted)
            probe = view.probe(key)
            try:
                row = self._connection().execute(point.sql, (*probe, view_key)).fetchone()
            except sqlite3.OperationalError:  # the table went away (dropped or rebuilt elsewhere)
                if attempt + 1 == _ATTEMPTS:
                    raise
                continue
            if row is None or row[0] != view.stored[0] or row[1] != view.stored[1]:
                continue  # the view's metadata changed since it was cached: reload it
            if row[2] is None:
                return None
            return row[3:] if point.decoders is None else decode_row(row, point.decoders)
        raise _changed_error(view_key)

    def _fetch(self, view: StoredView, probe: list[list[Any]], n: int) -> list[tuple[Any, ...]]:
        """The stored non-key values of every probe row (a row of Nones where none), in probe order."""
        connection = self._connection()
        width = len(view.keys)
        wanted: list[Any] = probe[0] if width == 1 else list(zip(*probe, strict=True))
        distinct = list(dict.fromkeys(wanted)) if n > 1 else wanted
        empty = (None,) * len(view.values)
        if n == 0:
            self._check(connection, view)  # the table must still exist
            return []
        if len(distinct) == 1:  # the single-entity query, selecting every non-key column in stored order
            point = view.points.get(view.value_names) or view.point(view.value_names)
            key = (*distinct[0], view.view_key) if width > 1 else (distinct[0], view.view_key)
            try:
                row = connection.execute(point.sql, key).fetchone()
            except sqlite3.OperationalError as exc:
                raise _Changed from exc
            if row is None or row[0] != view.stored[0] or row[1] != view.stored[1]:
                raise _Changed
            values = empty if row[2] is None else row[4:]
            return [values] * n
        limit = _IN_LIMIT if width == 1 else _VALUES_LIMIT
        if len(distinct) <= limit:
            size = _bucket(len(distinct))
            padded = distinct + [distinct[0]] * (size - len(distinct))
            params = padded if width == 1 else [v for entity in padded for v in entity]
            connection.execute("BEGIN")
            try:
                self._check(connection, view)
                try:
                    rows = connection.execute(view.lookup_sql(size), params).fetchall()
                except sqlite3.OperationalError as exc:
                    raise _Changed from exc
            finally:
                connection.execute("COMMIT")
            if width == 1:
                found = {row[0]: row[1:] for row in rows}
            else:
                found = {row[:width]: row[width:] for row in rows}
            return [found.get(k, empty) for k in wanted]
        # Large batches: a temporary table of the probe keys joined to the view's table.
        connection.execute("BEGIN")
        try:
            self._check(connection, view)
            query_table = f"_lakebed_query_{width}"
            key_columns = ", ".join(f"k{i}" for i in range(width))
            connection.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {query_table} (i INTEGER PRIMARY KEY, {key_columns})"
            )
            connection.execute(f"DELETE FROM temp.{query_table}")
            connection.executemany(
                f"INSERT INTO temp.{query_table} VALUES (?, {', '.join('?' for _ in range(width))})",
                zip(range(n), *probe, strict=True),
            )
            try:
                fetched = connection.execute(view.join_sql).fetchall()
            except sqlite3.OperationalError as exc:
                raise _Changed from exc
            connection.execute(f"DELETE FROM temp.{query_table}")
        finally:
            connection.execute("COMMIT")
        return fetched

    def _check(self, connection: sqlite3.Connection, view: StoredView) -> None:
        """Raise :class:`_Changed` unless the stored metadata of ``view`` is still the cached one."""
        row = connection.execute(_META_RAW, (view.view_key,)).fetchone()
        if row is None or (row[0], row[1]) != view.stored:
            raise _Changed

    def latest_feature_ts(self, view_key: str) -> dt.datetime | None:
        validate_table_name(view_key)
        connection = self._connection()
        if self._meta(connection, view_key) is None:
            return None
        value = connection.execute(f"SELECT MAX({quote(FEATURE_TS)}) FROM {quote(view_key)}").fetchone()[0]
        return (
            None
            if value is None
            else dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value)
        )

    def source_version(self, view_key: str) -> int | None:
        stored = self._meta(self._connection(), view_key)
        return None if stored is None else stored[2]

    def count(self, view_key: str) -> int:
        """Rows (entities) stored for the view."""
        validate_table_name(view_key)
        connection = self._connection()
        if self._meta(connection, view_key) is None:
            return 0
        return int(connection.execute(f"SELECT COUNT(*) FROM {quote(view_key)}").fetchone()[0])


# Read helpers --------------------------------------------------------------------------------------
class _Changed(Exception):
    """A view's stored metadata differs from the cached one (another process dropped or rebuilt it)."""


def _changed_error(view_key: str) -> OnlineStoreError:
    return OnlineStoreError(f"online table {view_key!r} kept changing while being read; try again")


def _bucket(n: int) -> int:
    """``n`` rounded up to one of four sizes per power of two, so few distinct statements are cached."""
    if n <= 4:
        return n
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


__all__ = ["OnlineStore", "OnlineStoreError", "SQLiteOnlineStore", "default_online_store"]
