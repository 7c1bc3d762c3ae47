"""The one write path into Delta tables.

Every write of table data in lakebed goes through :func:`commit`. It takes Arrow data (a ``pa.Table``, a
``RecordBatchReader`` for large inputs, or anything exporting the Arrow C stream), aligns it to the table's
schema under the drift policy, and writes it in one Delta commit whose metadata points back to the run
that made it (``lakebed.run_id``, ``lakebed.job``, ``lakebed.code_version``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError
from filelock import FileLock
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_never,
    stop_after_attempt,
    wait_random_exponential,
)

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import CommitError, SchemaDriftError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import lineage_run, record_output
from lakebed.metrics import COMMIT_CONFLICTS, COMMIT_DURATION
from lakebed.pipelines.arrays import last_per_key
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.deltalog import added_bytes, find_commit
from lakebed.pipelines.quality import WriteCheck, checks_writes
from lakebed.quality.results import CheckRun
from lakebed.schemas.contract import DriftPolicy, TableContract
from lakebed.schemas.types import delta_schema, widens_to
from lakebed.storage import is_local, local_path
from lakebed.version import __version__

WriteMode = Literal["append", "overwrite", "merge"]
ArrowData: TypeAlias = pa.Table | pa.RecordBatchReader | pa.RecordBatch


@functools.cache
def default_code_version() -> str:
    """The code version recorded on commits: the git commit of the source tree, else the package version."""
    configured = get_config().code_version
    if configured:
        return configured
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}" if sha else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """Who is writing: the run id and job name recorded on every commit (and, later, in lineage)."""

    job: str = "lakebed"
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    code_version: str = field(default_factory=default_code_version)
    tags: Mapping[str, str] = field(default_factory=dict)

    def commit_metadata(self) -> dict[str, str]:
        metadata = {
            "lakebed.run_id": self.run_id,
            "lakebed.job": self.job,
            "lakebed.code_version": self.code_version,
        }
        metadata.update({f"lakebed.tag.{k}": v for k, v in self.tags.items()})
        return metadata


@dataclass(frozen=True)
class CommitResult:
    """What a commit did: the new Delta version (None when there was nothing to write)."""

    table: str
    uri: str
    version: int | None
    mode: WriteMode
    rows: int
    schema: pa.Schema
    added_columns: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    quarantined: int = 0
    quality: CheckRun | None = None


def commit(
    table: str,
    data: ArrowData,
    *,
    mode: WriteMode = "append",
    keys: Sequence[str] | None = None,
    partition_by: Sequence[str] | None = None,
    drift: DriftPolicy | None = None,
    contract: TableContract | None = None,
    run: RunContext | None = None,
    kind: str = "table",
    metadata: Mapping[str, str] | None = None,
    app_transactions: Sequence[Transaction] = (),
    overwrite_predicate: str | None = None,
    quarantine_key: Sequence[str] = (),
    delete: pa.Table | None = None,
    opened: DeltaTable | None = None,
    catalog: Catalog | None = None,
    config: LakebedConfig | None = None,
) -> CommitResult:
    """Write ``data`` into lakebed table ``table`` in one Delta commit.

    Parameters
    ----------
    mode:
        ``append``, ``overwrite`` (replaces the table, or the rows matching ``overwrite_predicate``), or
        ``merge``: upsert by ``keys`` (the last row per key in ``data`` wins).
    drift:
        ``evolve`` (default) adds new columns as nullable; ``strict`` rejects columns the table lacks.
        A column whose type changes is always an error naming the column; lossless widenings
        (int32 → int64, int → float64, null → anything) are applied silently.
    contract:
        The table's contract; registered in the catalog on first write and used for keys, partitioning
        and drift policy when those are not given. When it declares quality rules, every write runs them
        (:mod:`lakebed.pipelines.quality`): failing rows go to ``<table>__quarantine``, a failing
        ``error`` table rule raises :class:`~lakebed.errors.QualityError` and writes nothing.
    metadata:
        Extra ``lakebed.*`` commit metadata (e.g. the source files of an ingest).
    app_transactions:
        Delta application transactions committed atomically with the data (exactly-once bookkeeping).
    quarantine_key:
        Columns naming each row's immutable source record (e.g. topic, partition, offset): a row whose
        record is already quarantined is not quarantined again when a write is retried.
    delete:
        ``merge`` only: key values (a table of the ``keys`` columns) whose rows the same commit deletes.
    opened:
        The table as the caller just opened it: used instead of loading its log again when no commit
        has followed the version it holds (a local table; otherwise it is opened afresh).
    """
    config = config or get_config()
    run = run or RunContext()
    # A commit is part of the run recording it, or a run of its own (START, then COMPLETE or FAIL).
    catalog = catalog or Catalog(config)
    started = time.perf_counter()
    try:
        with lineage_run(run, config=config), _first_commit_lock(table, kind, catalog):
            return _write(
                table,
                data,
                mode=mode,
                keys=keys,
                partition_by=partition_by,
                drift=drift,
                contract=contract,
                run=run,
                kind=kind,
                metadata=metadata,
                app_transactions=app_transactions,
                overwrite_predicate=overwrite_predicate,
                quarantine_key=quarantine_key,
                delete=delete,
                opened=opened,
                catalog=catalog,
                config=config,
            )
    except CommitFailedError:
        COMMIT_CONFLICTS.labels(table).inc()
        raise
    finally:
        COMMIT_DURATION.labels(table).observe(time.perf_counter() - started)


@contextlib.contextmanager
def _first_commit_lock(table: str, kind: str, catalog: Catalog) -> Iterator[None]:
    """Held around the write that creates a table on a local path, so writers racing to create it all
    land: the ones that lose wait, then find the table and append (or merge) into it."""
    entry = catalog.find(table)
    uri = entry.uri if entry is not None else catalog.default_uri(table, kind=kind)
    if not is_local(uri):
        yield  # object stores: a lost creation race is a commit conflict the caller sees
        return
    folder = local_path(uri)
    log = folder / "_delta_log"
    # Two stats, not a listing of the log: this runs before every commit (stream micro-batches included).
    if (log / f"{0:020d}.json").exists() or (log / "_last_checkpoint").exists():
        yield
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.with_name(f".{folder.name}.create.lock")):
        yield


def _write(
    table: str,
    data: ArrowData,
    *,
    mode: WriteMode,
    keys: Sequence[str] | None,
    partition_by: Sequence[str] | None,
    drift: DriftPolicy | None,
    contract: TableContract | None,
    run: RunContext,
    kind: str,
    metadata: Mapping[str, str] | None,
    app_transactions: Sequence[Transaction],
    overwrite_predicate: str | None,
    quarantine_key: Sequence[str],
    delete: pa.Table | None,
    opened: DeltaTable | None,
    catalog: Catalog,
    config: LakebedConfig,
) -> CommitResult:
    entry = catalog.find(table)
    # A table enters the catalog with its first successful commit, so a failed first write leaves no trace.
    uri = entry.uri if entry is not None else catalog.default_uri(table, kind=kind)
    contract = contract or (entry.contract if entry is not None else None)
    if contract is not None:
        keys = keys if keys is not None else (contract.keys or None)
        partition_by = partition_by if partition_by is not None else (contract.partition_by or None)
        drift = drift or contract.drift
    drift = drift or "evolve"
    if mode == "merge" and not keys:
        raise ValueError(f"merge into {table!r} needs key columns (keys=...)")
    if delete is not None and mode != "merge":
        raise ValueError(f"delete= needs mode='merge' (writing {table!r} with mode={mode!r})")
    deleting = delete is not None and delete.num_rows > 0

    reader = _as_reader(data)
    existing = opened if opened is not None and _is_latest(opened, uri) else open_delta(uri)
    base_version = existing.version() if existing is not None else -1
    check = None
    if contract is not None and checks_writes(contract, kind):
        check = WriteCheck(
            table,
            contract,
            run=run,
            mode=mode,
            existing=existing,
            overwrite_predicate=overwrite_predicate,
            app_transactions=app_transactions,
            quarantine_key=quarantine_key,
            config=config,
            catalog=catalog,
        )
    incoming = check.target_schema(reader.schema) if check is not None else reader.schema
    current_schema = pa.schema(existing.schema().to_arrow()) if existing is not None else None
    if current_schema is None and contract is not None and contract.columns:
        current_schema = contract.arrow_schema()
    if current_schema is not None:
        plan = _align(table, incoming, current_schema, drift=drift)
    else:
        plan = _Plan(target=delta_schema(incoming), added=())
    batches = _nonempty(reader)
    first = next(batches, None)
    if first is None and existing is not None and mode in ("append", "merge") and not deleting:
        # Nothing to write: no empty commit.
        return CommitResult(table=table, uri=uri, version=None, mode=mode, rows=0, schema=plan.target)
    if first is not None:
        batches = itertools.chain([first], batches)

    commit_id = str(uuid.uuid4())
    commit_metadata = {**run.commit_metadata(), "lakebed.commit_id": commit_id, **(metadata or {})}
    properties = CommitProperties(
        custom_metadata=commit_metadata, app_transactions=list(app_transactions) or None
    )
    counted = _Counter()
    checked = check.apply(batches) if check is not None else batches
    aligned = pa.RecordBatchReader.from_batches(plan.target, counted.wrap(plan.apply(b) for b in checked))

    try:
        if mode == "merge":
            metrics = _merge(
                table,
                uri,
                existing,
                aligned,
                keys=list(keys or ()),
                partition_by=partition_by,
                evolve=bool(plan.added),
                properties=properties,
                retry_conflicts=not app_transactions,
                delete=delete if deleting else None,
            )
        else:
            _ensure_parent(uri)
            partitions = list(partition_by) if partition_by and existing is None else None
            schema_mode: Literal["merge"] | None = "merge" if plan.added and existing is not None else None
            name = table if existing is None else None
            # The table opened above, not its URI: write_deltalake would load the log once more.
            target: str | DeltaTable = existing if existing is not None else uri
            if mode == "overwrite":
                write_deltalake(
                    target,
                    aligned,
                    mode="overwrite",
                    predicate=overwrite_predicate,
                    partition_by=partitions,
                    schema_mode=schema_mode,
                    name=name,
                    commit_properties=properties,
                    writer_properties=writer_properties(plan.target),
                )
            else:
                write_deltalake(
                    target,
                    aligned,
                    mode="append",
                    partition_by=partitions,
                    schema_mode=schema_mode,
                    name=name,
                    commit_properties=properties,
                    writer_properties=writer_properties(plan.target),
                )
            metrics = {}
        # A streamed write leaves Arrow's allocator holding the freed batches' memory: hand it back before
        # the bookkeeping that follows (catalog, lineage), so a large ingest peaks once, not twice.
        pa.default_memory_pool().release_unused()
    except CommitFailedError:
        raise  # callers with exactly-once bookkeeping re-read their transaction and retry
    except Exception as exc:
        if counted.error is not None:
            raise counted.error from None
        if not isinstance(exc, DeltaError):
            raise
        raise CommitError(f"commit to table {table!r} failed: {exc}") from exc

    if entry is None or (contract is not None and entry.contract != contract):
        catalog.register(table, uri=uri, kind=kind, contract=contract)
    version = _find_version(uri, base_version, commit_id)
    quality = check.record(version) if check is not None else None
    if config.lineage_enabled:
        output = table_dataset(
            table,
            uri,
            version,
            schema=plan.target,
            rows=counted.rows,
            size=added_bytes(uri, version),
            quality=quality,
            extra={"kind": kind, "operation": mode},
        )
        record_output(run, output, config=config)
    return CommitResult(
        table=table,
        uri=uri,
        version=version,
        mode=mode,
        rows=counted.rows,
        schema=plan.target,
        added_columns=plan.added,
        metrics=metrics,
        quarantined=check.quarantined_rows if check is not None else 0,
        quality=quality,
    )


# lakebed's position columns (a file's line, a partition's offset) ascend within a write: Parquet's
# DELTA_BINARY_PACKED stores them in a few bits per row, where the default dictionary attempt hashes every
# value of a column that never repeats and then stores 8 bytes per row (a fifth of the files of a narrow
# table such as the orders sample, and ≈ 3% of its write's CPU).
POSITION_COLUMNS = ("_source_line", "_offset")
_POSITIONS = ColumnProperties(dictionary_enabled=False, encoding="DELTA_BINARY_PACKED")
# delta-rs writes Snappy by default, but a WriterProperties without a codec means none: name it.
_COMPRESSION: Literal["SNAPPY"] = "SNAPPY"
# A streamed write holds the row group it is filling in memory: delta-rs's default of 1,048,576 rows made a
# large write's memory grow with its size (a 3.3M-row model output peaked 200 MiB above a 330k-row one).
# 131,072 rows is about DuckDB's own row group size, large enough for scans.
ROW_GROUP_ROWS = 131_072


def writer_properties(schema: pa.Schema) -> WriterProperties:
    """The Parquet settings of a write of ``schema``: position columns delta-encoded, row groups of
    :data:`ROW_GROUP_ROWS`, the rest default."""
    columns = {
        f.name: _POSITIONS for f in schema if f.name in POSITION_COLUMNS and pa.types.is_integer(f.type)
    }
    return WriterProperties(
        compression=_COMPRESSION, column_properties=columns or None, max_row_group_size=ROW_GROUP_ROWS
    )


def _merge(
    table_name: str,
    uri: str,
    existing: DeltaTable | None,
    source: pa.RecordBatchReader,
    *,
    keys: list[str],
    partition_by: Sequence[str] | None,
    evolve: bool,
    properties: CommitProperties,
    retry_conflicts: bool,
    delete: pa.Table | None = None,
) -> dict[str, Any]:
    """Upsert ``source`` by ``keys`` (and delete the rows of the ``delete`` keys). A merge that meets a concurrent commit is merged again into the new
    version (its source is in memory), unless it carries application transactions: their callers re-read
    the transactions and decide (exactly-once bookkeeping)."""
    data = source.read_all()
    missing = [k for k in keys if k not in data.column_names]
    if missing:
        raise SchemaDriftError(
            f"merge into {table_name!r}: key columns {missing} are not in the data",
            table=table_name,
            columns=missing,
        )
    # Delta refuses a merge where two source rows match one target row: keep the last row per key.
    table = last_per_key(data, keys)
    if existing is None:
        _ensure_parent(uri)
        write_deltalake(
            uri,
            table,
            mode="append",
            name=table_name,
            partition_by=list(partition_by) if partition_by else None,
            commit_properties=properties,
            writer_properties=writer_properties(table.schema),
        )
        return {"num_target_rows_inserted": table.num_rows}
    flag = "__lakebed_delete"
    if delete is not None:
        # The deleted keys' other columns are null: the source schema admits nulls everywhere.
        relaxed = pa.schema([f.with_nullable(True) for f in table.schema])
        table = table.cast(relaxed)
        gone = pa.table(
            [
                delete.column(f.name).cast(f.type) if f.name in keys else pa.nulls(delete.num_rows, f.type)
                for f in relaxed
            ],
            schema=relaxed,
        )
        marks = [pa.array([False] * table.num_rows), pa.array([True] * gone.num_rows)]
        table = pa.concat_tables([table, gone]).append_column(flag, pa.chunked_array(marks, pa.bool_()))
    predicate = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
    retrying = Retrying(
        retry=retry_if_exception_type(CommitFailedError) if retry_conflicts else retry_never,
        stop=stop_after_attempt(10),
        wait=wait_random_exponential(multiplier=0.05, max=1),
        reraise=True,
    )
    target = existing
    for attempt in retrying:
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                COMMIT_CONFLICTS.labels(table_name).inc()  # the previous attempt met a concurrent commit
                target.update_incremental()
            merger = target.merge(
                table,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=evolve,
                commit_properties=properties,
                writer_properties=writer_properties(table.schema),
            )
            if delete is None:
                return dict(merger.when_matched_update_all().when_not_matched_insert_all().execute())
            keep, drop = f"NOT s.{flag}", f"s.{flag}"
            merger = merger.when_matched_delete(predicate=drop)
            merger = merger.when_matched_update_all(predicate=keep, except_cols=[flag])
            return dict(merger.when_not_matched_insert_all(predicate=keep, except_cols=[flag]).execute())
    raise AssertionError("unreachable: the last attempt re-raises")


@dataclass(frozen=True)
class _Plan:
    """How to turn incoming batches into the table's schema."""

    target: pa.Schema
    added: tuple[str, ...]

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.schema == self.target:
            return batch
        columns = []
        for target_field in self.target:
            index = batch.schema.get_field_index(target_field.name)
            if index < 0:
                columns.append(pa.nulls(batch.num_rows, target_field.type))
                continue
            column = batch.column(index)
            if column.type != target_field.type:
                column = column.cast(target_field.type)
            columns.append(column)
        return pa.RecordBatch.from_arrays(columns, schema=self.target)


def _align(table: str, incoming: pa.Schema, current: pa.Schema, *, drift: DriftPolicy) -> _Plan:
    """Plan the conversion of ``incoming`` into ``current`` under ``drift``; raise on conflicts."""
    incoming = delta_schema(incoming)
    conflicts = []
    for f in incoming:
        index = current.get_field_index(f.name)
        if index >= 0 and not widens_to(f.type, current.field(index).type):
            conflicts.append(
                f"{f.name!r} is {current.field(index).type} in the table but {f.type} in the data"
            )
    if conflicts:
        names = [c.split("'")[1] for c in conflicts]
        raise SchemaDriftError(
            f"schema conflict writing table {table!r}: column " + "; column ".join(conflicts),
            table=table,
            columns=names,
        )
    new = [f for f in incoming if current.get_field_index(f.name) < 0]
    if new and drift == "strict":
        raise SchemaDriftError(
            f"table {table!r} is strict and has no column(s) {[f.name for f in new]}",
            table=table,
            columns=[f.name for f in new],
        )
    missing_required = [f.name for f in current if not f.nullable and incoming.get_field_index(f.name) < 0]
    if missing_required:
        raise SchemaDriftError(
            f"data for table {table!r} lacks required (non-nullable) column(s) {missing_required}",
            table=table,
            columns=missing_required,
        )
    target = pa.schema(list(current) + [f.with_nullable(True) for f in new])
    return _Plan(target=target, added=tuple(f.name for f in new))


class _Counter:
    """Counts rows streamed into a write and keeps the exception that stopped the stream, if any, so
    the caller sees the original error (e.g. a bad record's location), not delta-rs's wrapper."""

    def __init__(self) -> None:
        self.rows = 0
        self.error: BaseException | None = None

    def wrap(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            for batch in batches:
                self.rows += batch.num_rows
                yield batch
        except BaseException as exc:
            self.error = exc
            raise


def _nonempty(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    return (batch for batch in reader if batch.num_rows)


def _as_reader(data: Any) -> pa.RecordBatchReader:
    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, pa.Table):
        return data.to_reader()
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]).to_reader()
    if hasattr(data, "to_arrow"):  # polars DataFrame
        return _as_reader(data.to_arrow())
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data)
    raise TypeError(f"cannot write {type(data).__name__}: pass a pyarrow Table or RecordBatchReader")


def _is_latest(table: DeltaTable, uri: str) -> bool:
    """Whether ``table`` (loaded from ``uri``) holds the latest version: a local table whose log has no
    commit after it (one stat)."""
    if not is_local(uri) or not is_local(table.table_uri) or local_path(table.table_uri) != local_path(uri):
        return False
    return not (local_path(uri) / "_delta_log" / f"{table.version() + 1:020d}.json").exists()


def open_delta(uri: str) -> DeltaTable | None:
    """The Delta table at ``uri``, or None when there is none yet."""
    try:
        return DeltaTable(uri)
    except DeltaTableNotFoundError:
        return None


def table_size(table: DeltaTable | None) -> tuple[int, int]:
    """Rows and bytes of the loaded version of ``table`` (from the Delta log's file statistics)."""
    if table is None:
        return 0, 0
    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return 0, 0
    rows = int(pc.sum(actions.column("num_records")).as_py() or 0)
    return rows, int(pc.sum(actions.column("size_bytes")).as_py() or 0)


def commit_time(table: DeltaTable) -> dt.datetime:
    """When the loaded version of ``table`` was committed."""
    for entry in table.history():
        if entry.get("version") == table.version() and entry.get("timestamp"):
            return dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC)
    return dt.datetime.now(dt.UTC)


def _ensure_parent(uri: str) -> None:
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)


def _find_version(uri: str, base_version: int, commit_id: str) -> int | None:
    """The version our commit landed at, found by its commit id (robust to concurrent writers)."""
    if is_local(uri):
        return find_commit(uri, base_version, commit_id)
    try:
        history = DeltaTable(uri).history(50)
    except DeltaTableNotFoundError:
        return None
    return next((int(e["version"]) for e in history if e.get("lakebed.commit_id") == commit_id), None)


def table_history(uri: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commit history, newest first, with lakebed's metadata lifted to plain keys."""
    rows = []
    for entry in DeltaTable(uri).history(limit):
        rows.append(
            {
                "version": entry.get("version"),
                "timestamp": dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC),
                "operation": entry.get("operation"),
                "run_id": entry.get("lakebed.run_id"),
                "job": entry.get("lakebed.job"),
                "code_version": entry.get("lakebed.code_version"),
                "rows_added": (entry.get("operationMetrics") or {}).get("num_added_rows")
                or (entry.get("operationMetrics") or {}).get("num_target_rows_inserted"),
                "metadata": json.dumps({k: v for k, v in entry.items() if k.startswith("lakebed.")}),
            }
        )
    return rows


__all__ = [
    "CommitResult",
    "RunContext",
    "WriteMode",
    "commit",
    "commit_time",
    "open_delta",
    "table_history",
    "table_size",
]
