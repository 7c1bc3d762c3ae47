"""Reads by table name: Arrow tables, Polars lazy scans and DuckDB SQL over every lakebed table.

All reads resolve a name through the catalog and open the Delta table here, at one place, so time travel
(``version=`` or ``as_of=``) means the same thing for every reader, and a run being recorded for lineage
learns each table it read at the exact version read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TableNotFoundError, TierError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import record_input
from lakebed.pipelines.catalog import Catalog, TableEntry
from lakebed.pipelines.tiering import (
    Part,
    Tiers,
    literal,
    open_tiers,
    sql_units,
    storage_options,
    to_units,
    view_schema,
)
from lakebed.pipelines.tiering import access as tier_access
from lakebed.schemas.types import polars_dtype
from lakebed.storage import arrow_dataset, is_local, local_path

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
    return _open(Catalog(config or get_config()).get(name), version, as_of)


def _open(entry: TableEntry, version: int | None, as_of: AsOf | None) -> DeltaTable:
    name = entry.name
    if version is not None and as_of is not None:
        raise ValueError("pass either version= or as_of=, not both")
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


def tiers(
    name: str,
    *,
    version: int | None = None,
    as_of: AsOf | None = None,
    config: LakebedConfig | None = None,
) -> Tiers:
    """``name`` across its hot and cold tiers (just the hot table when it is not tiered). ``version`` is the
    hot table's version: the cold tier is taken as it was with that version."""
    config = config or get_config()
    entry = Catalog(config).get(name)  # one catalog lookup for both tiers
    return open_tiers(entry, _open(entry, version, as_of), config)


def dataset(
    name: str, *, version: int | None = None, as_of: AsOf | None = None, config: LakebedConfig | None = None
) -> ds.Dataset:
    """A lazily scanned pyarrow dataset of ``name`` over both tiers (filters and projections push down)."""
    config = config or get_config()
    found = tiers(name, version=version, as_of=as_of, config=config)
    found.record_read(None, config)  # what the caller filters is not seen here
    return found.dataset()


def read_table(
    name: str,
    version: int | None = None,
    as_of: AsOf | None = None,
    *,
    columns: Sequence[str] | None = None,
    filter: ds.Expression | None = None,  # noqa: A002 - the pyarrow name
    since: object = None,
    config: LakebedConfig | None = None,
) -> pa.Table:
    """Read a lakebed table (optionally at a version or as of a time) into an Arrow table.

    ``since`` keeps rows whose tiering column is at or after it; on a tiered table a ``since`` at or above
    the watermark reads the hot tier only, never touching the cold store."""
    config = config or get_config()
    found = tiers(name, version=version, as_of=as_of, config=config)
    wanted = list(columns) if columns is not None else None
    condition = filter
    lowest = None
    if since is not None:
        column = _tier_column(found, name, config)
        lowest = to_units(since, found.hot_column_type(column))
        bound = ds.field(column) >= literal(lowest, found.hot_column_type(column))
        condition = bound if condition is None else condition & bound
    found.record_read(condition, config)
    if found.skip_cold(lowest):
        found = found.hot_only()
    tables = [_scan(found, part, wanted, condition) for part in found.parts()]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _scan(found: Tiers, part: Part, columns: list[str] | None, condition: ds.Expression | None) -> pa.Table:
    keep = found.condition(part)
    combined = keep if condition is None else (condition if keep is None else condition & keep)
    # Both tiers are read in the hot table's schema (a column added later is null in older cold files).
    data = arrow_dataset(part.table, pa.schema(found.hot.schema().to_arrow()) if found.tiered else None)
    try:
        return data.to_table(columns=columns, filter=combined)
    except pa.ArrowNotImplementedError:
        if combined is None:
            raise
        # Files rewritten by delta-rs merges hold string_view columns, which pyarrow cannot compare
        # against a plain string literal while scanning; filter after the scan instead.
        table = data.to_table().filter(combined)
        return table.select(columns) if columns is not None else table


def _tier_column(found: Tiers, name: str, config: LakebedConfig | None) -> str:
    if found.column is not None:
        return found.column
    entry = Catalog(config or get_config()).get(name)
    policy = entry.contract.tiering if entry.contract is not None else None
    if policy is None:
        raise ValueError(f"since= needs a tiered table; {name!r} has no tiering column in its contract")
    return policy.column


def scan_table(
    name: str,
    version: int | None = None,
    as_of: AsOf | None = None,
    *,
    config: LakebedConfig | None = None,
) -> pl.LazyFrame:
    """A Polars LazyFrame over a lakebed table, both tiers (predicates and projections push down)."""
    import polars as pl

    config = config or get_config()
    found = tiers(name, version=version, as_of=as_of, config=config)
    found.record_read(None, config)  # the frame's filters are not seen here
    frames = []
    for part in found.parts():
        options = storage_options(part.table.table_uri, config)
        frame = polars_scan(part.table, options)
        if part.below and found.column is not None and found.watermark is not None:
            bound = pl.lit(found.watermark).cast(polars_dtype(found.dtype))
            frame = frame.filter(pl.col(found.column) < bound)
        frames.append(frame)
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def polars_scan(table: DeltaTable, storage_options: dict[str, str] | None = None) -> pl.LazyFrame:
    """A Polars scan of ``table`` at its loaded version: Polars' native Delta scan, except for a local table
    whose path needs escaping in a URL (a space, a ``%``), which that scan cannot open: then a scan of the
    table's pyarrow dataset."""
    import polars as pl

    uri = table.table_uri
    if is_local(uri) and quote(str(local_path(uri))) != str(local_path(uri)):
        return pl.scan_pyarrow_dataset(arrow_dataset(table))
    return pl.scan_delta(uri, version=table.version(), storage_options=storage_options)


def connect(*, config: LakebedConfig | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every lakebed table registered as a view under its name
    (a tiered table: the union of its tiers)."""
    import duckdb

    config = config or get_config()
    connection = duckdb.connect()
    for entry in Catalog(config).list():
        try:
            register(connection, entry.name, open_tiers(entry, DeltaTable(entry.uri), config))
        except (DeltaError, TierError):
            continue  # registered but never written, or its cold tier unreachable: nothing to query
    return connection


def local_files(found: Tiers) -> list[str] | None:
    """The local paths of the Parquet files holding every row of ``found`` (both tiers, at the versions
    read), when DuckDB's ``read_parquet`` reads them as Delta does; None when it would not: a tier on an
    object store, a recall in flight (cold is then read below the watermark only), deletion vectors,
    partition columns (their values live in the paths), column mapping (physical names differ), or no
    file at all."""
    if found.in_flight:
        return None
    files: list[str] = []
    for part in found.parts():
        delta = part.table
        metadata = delta.metadata()
        if (
            not is_local(delta.table_uri)
            or metadata.partition_columns
            or metadata.configuration.get("delta.columnMapping.mode", "none") != "none"
            or "deletionVectors" in (delta.protocol().reader_features or [])
        ):
            return None
        files.extend(file_path(uri) for uri in delta.file_uris())
    return files or None


def file_path(uri: str) -> str:
    """The local path of a data file as delta-rs lists it: a ``file://`` URL or a percent-encoded path
    (a space is %20)."""
    return str(local_path(uri)) if uri.startswith("file://") else unquote(uri)


def parquet_scan(files: Sequence[str]) -> str:
    """SQL: DuckDB's scan of the local Parquet ``files`` (non-empty), columns matched by name (a file
    written before a column was added reads it as nulls)."""
    paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{paths}], union_by_name=true)"


def register_files(connection: duckdb.DuckDBPyConnection, name: str, files: Sequence[str]) -> None:
    """Table ``name`` in ``connection``: the rows of the local Parquet ``files`` (see :func:`local_files`)."""
    connection.execute(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM {parquet_scan(files)}')


def register(connection: duckdb.DuckDBPyConnection, name: str, found: Tiers) -> None:
    """Table ``name`` in ``connection``: the rows of ``found`` (both tiers of a tiered table, at the versions
    loaded). Local files DuckDB reads as Delta does are scanned by its own Parquet reader (parallel, with
    row-group statistics and projection pushed down, no Arrow hand-over); other tables through Arrow
    datasets."""
    files = local_files(found)
    if files is not None:
        register_files(connection, name, files)
        return
    # View-typed dataset schema: DuckDB then reads files written as string or string_view alike.
    schema = view_schema(found.hot)
    parts = found.parts()
    if len(parts) == 1:
        connection.register(name, arrow_dataset(found.hot, schema))
        return
    selects = []
    for index, part in enumerate(parts):
        hidden = f"__{name}__tier{index}"
        connection.register(hidden, arrow_dataset(part.table, schema))
        where = ""
        if part.below and found.column and found.watermark is not None and found.dtype:
            where = f" WHERE {sql_units(found.column, found.dtype)} < {found.watermark}"
        selects.append(f'SELECT * FROM "{hidden}"{where}')
    connection.execute(f'CREATE TEMP VIEW "{name}" AS ' + " UNION ALL BY NAME ".join(selects))


def sql(query: str, *, config: LakebedConfig | None = None) -> pa.Table:
    """Run DuckDB SQL over all lakebed tables by name; returns Arrow."""
    import duckdb

    config = config or get_config()
    catalog = Catalog(config)
    try:
        names = duckdb.get_table_names(query)
    except duckdb.Error:
        names = set()  # DuckDB reports the error when it runs the query
    for name in names:
        entry = catalog.find(name)
        policy = entry.contract.tiering if entry is not None and entry.contract is not None else None
        if policy is not None and policy.unread_for is not None:
            tier_access.record(name, None, config)  # what the query filters is not seen here
    connection = connect(config=config)
    try:
        return fetch_arrow(connection.sql(query))
    finally:
        connection.close()


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


__all__ = [
    "connect",
    "dataset",
    "fetch_arrow",
    "open_table",
    "read_table",
    "local_files",
    "register",
    "scan_table",
    "sql",
]
