"""Reads by table name: Arrow tables, Polars lazy scans and DuckDB SQL over every lakebed table.

All reads resolve a name through the catalog and open the Delta table here, at one place, so time travel
(``version=`` or ``as_of=``) means the same thing for every reader, and a run being recorded for lineage
learns each table it read at the exact version read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import record_input
from lakebed.pipelines.catalog import Catalog

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TableNotFoundError

if TYPE_CHECKING:
    import duckdb
    import polars as pl

AsOf = dt.datetime | str


def open_table(
    name: str,
    *,
    version: int | None = None,
    as_of: AsOf | None = None,
    config: LakebedConfig | None = None,
) -> DeltaTable:
    """The Delta table behind ``name``, loaded at ``version`` or as of a time (ISO string or datetime)."""
    if version is not None and as_of is not None:
        raise ValueError("pass either version= or as_of=, not both")
    entry = Catalog(config or get_config()).get(name)
    try:
        table = DeltaTable(entry.uri)
        if version is not None:
            table.load_as_version(version)
        elif as_of is not None:
            table.load_as_version(_as_datetime(as_of))
    except DeltaError as exc:
        at = (
            f" version {version}" if version is not None else (f" as of {as_of}" if as_of is not None else "")
        )
        raise TableNotFoundError(f"table {name!r}{at} cannot be read: {exc}") from exc
    record_input(table_dataset(name, entry.uri, table.version()))  # an input of the run reading it
    return table


def dataset(
    name: str, *, version: int | None = None, as_of: AsOf | None = None, config: LakebedConfig | None = None
) -> ds.Dataset:
    """A lazily scanned pyarrow dataset of ``name`` (filters and projections push down)."""
    return open_table(name, version=version, as_of=as_of, config=config).to_pyarrow_dataset()


def read_table(
    name: str,
    version: int | None = None,
    as_of: AsOf | None = None,
    *,
    columns: Sequence[str] | None = None,
    filter: ds.Expression | None = None,  # noqa: A002 - the pyarrow name
    config: LakebedConfig | None = None,
) -> pa.Table:
    """Read a lakebed table (optionally at a version or as of a time) into an Arrow table."""
    data = dataset(name, version=version, as_of=as_of, config=config)
    wanted = list(columns) if columns is not None else None
    try:
        return data.to_table(columns=wanted, filter=filter)
    except pa.ArrowNotImplementedError:
        if filter is None:
            raise
        # Files rewritten by delta-rs merges hold string_view columns, which pyarrow cannot compare
        # against a plain string literal while scanning; filter after the scan instead.
        table = data.to_table().filter(filter)
        return table.select(wanted) if wanted is not None else table


def scan_table(
    name: str, version: int | None = None, as_of: AsOf | None = None, *, config: LakebedConfig | None = None
) -> pl.LazyFrame:
    """A Polars LazyFrame over a lakebed table (predicates and projections push down)."""
    import polars as pl

    table = open_table(name, version=version, as_of=as_of, config=config)
    return pl.scan_delta(table.table_uri, version=table.version())


def connect(*, config: LakebedConfig | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every lakebed table registered as a view under its name."""
    import duckdb

    config = config or get_config()
    connection = duckdb.connect()
    for entry in Catalog(config).list():
        try:
            table = DeltaTable(entry.uri)
            # View-typed dataset schema: DuckDB then reads files written as string or string_view alike.
            connection.register(entry.name, table.to_pyarrow_dataset(schema=_view_schema(table)))
        except DeltaError:
            continue  # registered but never written: nothing to query yet
    return connection


def sql(query: str, *, config: LakebedConfig | None = None) -> pa.Table:
    """Run DuckDB SQL over all lakebed tables by name; returns Arrow."""
    connection = connect(config=config)
    try:
        return fetch_arrow(connection.sql(query))
    finally:
        connection.close()


def _view_schema(table: DeltaTable) -> pa.Schema:
    fields = []
    for f in pa.schema(table.schema().to_arrow()):
        if pa.types.is_string(f.type):
            f = f.with_type(pa.string_view())
        elif pa.types.is_binary(f.type):
            f = f.with_type(pa.binary_view())
        fields.append(f)
    return pa.schema(fields)


def fetch_arrow(relation: duckdb.DuckDBPyRelation | None) -> pa.Table:
    """A DuckDB relation's rows as Arrow (empty for statements without a result)."""
    if relation is None:
        return pa.table({})
    # DuckDB 2 names it to_arrow_table; DuckDB 1 calls it arrow.
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def _as_datetime(value: AsOf) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"as_of must be an ISO-8601 time, got {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


__all__ = ["connect", "dataset", "fetch_arrow", "open_table", "read_table", "scan_table", "sql"]
