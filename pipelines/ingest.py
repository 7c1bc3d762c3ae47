"""Structured batch ingest: CSV, JSON lines and Parquet files, globs and folders into a Delta table.

Each file is streamed in Arrow batches and committed through the one write path in its own Delta commit,
tagged with ``_source_file`` and ``_source_line`` columns (where each row came from; the row number for
Parquet) and with commit metadata naming the file and its content hash.
An ingested-files manifest (a lakebed system table) makes ingest incremental: a file with the same path,
size and sha256 as one already ingested is skipped. The manifest is reconciled from the tables' own
commit history on every run, so a crash between a data commit and the manifest update never causes a
file to be ingested twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import glob
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import InputError, MalformedRecordError, SourceNotFoundError, UnknownFormatError
from lakebed.lineage.events import DatasetRef, file_dataset, location
from lakebed.lineage.runs import LineageRun, lineage_run
from lakebed.pipelines.arrays import int64_array, repeated_text
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, commit
from lakebed.pipelines.formats import (
    BadRecord,
    BadRowPolicy,
    FileStream,
    Format,
    detect_format,
    open_file,
    supported,
    text_encoding,
)
from lakebed.pipelines.ingest_manifest import (
    FileOutcome,
    Manifest,
    SourceFile,
    sql_string,
)
from lakebed.schemas.contract import TableContract

ChangePolicy = Literal["replace", "append", "skip"]
SOURCE_COLUMN = "_source_file"
LINE_COLUMN = "_source_line"
_HASH_CHUNK = 8 << 20

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("column", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("rejected_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class NamedFile:
    """A local file ingested under another name: an object-store object's cached copy under its
    ``s3://bucket/key`` URL, which its rows (``_source_file``), rejects, manifest entry and lineage name."""

    path: Path
    name: str


@dataclass
class IngestResult:
    table: str
    run_id: str
    files: list[FileOutcome] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    @property
    def ingested(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status != "skipped"]

    @property
    def skipped(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def version(self) -> int | None:
        versions = [f.version for f in self.files if f.version is not None]
        return max(versions) if versions else None


ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(path, rows_so_far_in_file, bytes_of_finished_files)``."""


def ingest_files(
    sources: str | Path | NamedFile | Sequence[str | Path | NamedFile],
    *,
    table: str,
    format: str | None = None,  # noqa: A002 - the natural name
    contract: TableContract | None = None,
    mode: Literal["append", "overwrite"] = "append",
    partition_by: str | None = None,
    on_bad_rows: BadRowPolicy = "error",
    on_change: ChangePolicy = "replace",
    encoding: str | None = None,
    run: RunContext | None = None,
    progress: ProgressCallback | None = None,
    config: LakebedConfig | None = None,
) -> IngestResult:
    """Ingest CSV / JSON-lines / Parquet files into lakebed table ``table``.

    ``sources`` are files, folders (searched recursively for supported files) or glob patterns, or
    :class:`NamedFile` items (local copies ingested under their own names, e.g. object-store objects).
    ``on_bad_rows="error"`` stops at the first bad record with its file, line and column;
    ``"reject"`` sends bad records to ``<table>__rejects`` and keeps going. A file already ingested
    unchanged is skipped; a changed file (same path, new content) is handled by ``on_change``:
    ``replace`` swaps the rows from its previous version for the new ones in one commit, ``append`` adds
    the new rows, ``skip`` ignores it. ``mode="overwrite"`` replaces the whole table with these files.
    ``partition_by`` names a date or timestamp column (a timestamp is partitioned by its date, in a
    derived ``<column>_date`` column).

    ``encoding`` is the text encoding of CSV and JSON files (default: the contract's ``encoding``, else
    UTF-8). A file that yields no record (empty, only a header, or not decodable) stops the ingest under
    ``"error"``; under ``"reject"`` it becomes one record of ``<table>__rejects`` (the file and the reason)
    and the other files are ingested.
    """
    config = config or get_config()
    run = run or RunContext(job=f"ingest:{table}")
    entry = None if contract is not None else Catalog(config).find(table)
    declared = contract if contract is not None else (entry.contract if entry is not None else None)
    encoding = text_encoding(encoding or (declared.encoding if declared is not None else None) or "utf-8")
    # One lineage run: the files (at their content hashes) in, every table version written out.
    with lineage_run(run, config=config) as lineage:
        catalog = Catalog(config)
        files = _input_files(sources, explicit_format=format, exclude=own_files(config))
        formats = {f.name: _format_of(f, format) for f in files}
        manifest = Manifest(catalog, run)
        manifest.reconcile(table)
        known = manifest.entries(table)
        result = IngestResult(table=table, run_id=run.run_id)
        bytes_done = 0
        overwrite = mode == "overwrite"
        first_write = overwrite
        for file in files:
            source = _describe(file)
            previous = known.get(source.name)
            changed = previous is not None and (previous["sha256"], previous["size_bytes"]) != (
                source.sha256,
                source.size,
            )
            if not overwrite and previous is not None and (not changed or on_change == "skip"):
                result.files.append(FileOutcome(path=source.name, status="skipped"))
                bytes_done += source.size
                continue
            replace = changed and on_change == "replace" and not overwrite
            lineage.add_input(_dataset(source, size=source.size))
            try:
                with _named_errors(source):
                    outcome = _ingest_one(
                        source,
                        formats[source.name],
                        table=table,
                        contract=contract,
                        catalog=catalog,
                        run=run,
                        mode="overwrite" if first_write else "append",
                        replace=replace,
                        partition_by=partition_by,
                        on_bad_rows=on_bad_rows,
                        encoding=encoding,
                        progress=progress,
                        bytes_done=bytes_done,
                        config=config,
                        lineage=lineage,
                    )
            except MalformedRecordError as exc:
                if on_bad_rows == "error":
                    raise
                outcome = _reject_file(table, source, exc, run=run, config=config, catalog=catalog)
            first_write = first_write and outcome.status == "rejected"
            result.files.append(outcome)
            manifest.record(table, source, outcome)
            bytes_done += source.size
            if progress:
                progress(source.name, outcome.rows, bytes_done)
        manifest.flush(replace_table=table if overwrite else None)
        return result


def resolve_sources(
    sources: str | Path | Sequence[str | Path],
    *,
    explicit_format: str | None = None,
    exclude: Sequence[Path] = (),
) -> list[Path]:
    """Expand files, folders and globs into a sorted, de-duplicated list of files. Folder walks skip
    hidden entries and anything under ``exclude`` (see :func:`own_files`)."""
    items = [sources] if isinstance(sources, str | Path) else list(sources)
    if not items:
        raise SourceNotFoundError("no sources given")
    found: dict[Path, None] = {}
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise SourceNotFoundError("glob matches no files", path=text)
        elif Path(text).is_dir():
            matches = sorted(
                p
                for p in Path(text).rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(text).parts)
                and not any(p.resolve().is_relative_to(root) for root in exclude)
                and (explicit_format is not None or supported(p))
            )
            if not matches:
                raise SourceNotFoundError("folder holds no CSV, JSON or Parquet files", path=text)
        elif Path(text).is_file():
            matches = [Path(text)]
        else:
            raise SourceNotFoundError("no such file or folder", path=text)
        for match in matches:
            found[match.resolve()] = None
    return list(found)


def own_files(config: LakebedConfig) -> tuple[Path, ...]:
    """Where lakebed keeps its own files (tables, system tables, lineage events, the object-store cache):
    never ingest input."""
    return (Path(config.tables_root), Path(config.system_root), config.home / "lineage", remote_cache(config))


def remote_cache(config: LakebedConfig) -> Path:
    """Where object-store sources' objects are cached: ``<home>/remote/<bucket>/<key>``."""
    return config.home / "remote"


def _input_files(
    sources: str | Path | NamedFile | Sequence[str | Path | NamedFile],
    *,
    explicit_format: str | None,
    exclude: Sequence[Path],
) -> list[NamedFile]:
    """Paths, folders and globs resolved (each file named by its resolved path), then the named files."""
    items = [sources] if isinstance(sources, str | Path | NamedFile) else list(sources)
    named = [item for item in items if isinstance(item, NamedFile)]
    local = [item for item in items if not isinstance(item, NamedFile)]
    found = (
        []
        if named and not local
        else resolve_sources(local, explicit_format=explicit_format, exclude=exclude)
    )
    files = [NamedFile(path=path, name=str(path)) for path in found] + named
    return list({file.name: file for file in files}.values())


def _dataset(source: SourceFile, **details: Any) -> DatasetRef:
    """The lineage dataset of an input file: a local file by its path, an object by its URL."""
    if source.name == str(source.path):
        return file_dataset(source.path, sha256=source.sha256, **details)
    namespace, name = location(source.name)
    return DatasetRef(namespace, name, source.sha256, **details)


def _format_of(file: NamedFile, explicit: str | None) -> Format:
    try:
        return detect_format(file.path, explicit)
    except UnknownFormatError as exc:
        if file.name == str(file.path):
            raise
        raise UnknownFormatError(exc.reason, path=file.name) from None


@contextlib.contextmanager
def _named_errors(source: SourceFile) -> Iterator[None]:
    """Errors about the file's records name the source (``s3://...``), not the local copy read."""
    try:
        yield
    except InputError as exc:
        if exc.path != str(source.path) or source.name == str(source.path):
            raise
        named = type(exc)(exc.reason, path=source.name, line=exc.line, column=exc.column, offset=exc.offset)
        raise named from exc


def _describe(file: NamedFile) -> SourceFile:
    path = file.path
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb", buffering=0) as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", path=file.name) from exc
    return SourceFile(path=path, name=file.name, size=size, sha256=digest.hexdigest())


def _ingest_one(
    source: SourceFile,
    fmt: Format,
    *,
    table: str,
    contract: TableContract | None,
    catalog: Catalog,
    run: RunContext,
    mode: Literal["append", "overwrite"],
    replace: bool,
    partition_by: str | None,
    on_bad_rows: BadRowPolicy,
    encoding: str,
    progress: ProgressCallback | None,
    bytes_done: int,
    config: LakebedConfig,
    lineage: LineageRun,
) -> FileOutcome:
    """Write one file's rows in one commit."""
    stream = open_file(
        source.path,
        fmt,
        column_types=_column_types(table, contract, catalog),
        on_bad_rows=on_bad_rows,
        batch_rows=config.batch_rows,
        encoding=encoding,
    )
    schema, batches = _tag(stream, source.name, partition_by, progress, bytes_done)
    source_ref = _dataset(source)
    for column in stream.schema.names:
        lineage.add_column_lineage(table, column, [(source_ref, column, "DIRECT:IDENTITY")])
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    file_meta = json.dumps([{"path": source.name, "size": source.size, "sha256": source.sha256}])
    predicate = f"{SOURCE_COLUMN} = '{sql_string(source.name)}'" if replace else None
    written = commit(
        table,
        reader,
        mode="overwrite" if replace else mode,
        contract=contract,
        run=run,
        partition_by=[_partition_column(partition_by, stream.schema)] if partition_by else None,
        overwrite_predicate=predicate,
        metadata={"lakebed.source_files": file_meta},
        config=config,
        catalog=catalog,
    )
    if stream.bad:
        bad = [
            b if b.path != str(source.path) else dataclasses.replace(b, path=source.name) for b in stream.bad
        ]
        write_rejects(table, bad, run=run, config=config, catalog=catalog)
    return FileOutcome(
        path=source.name,
        status="replaced" if replace else "ingested",
        rows=written.rows,
        rejected=len(stream.bad),
        quarantined=written.quarantined,
        version=written.version,
    )


def _reject_file(
    table: str,
    source: SourceFile,
    exc: MalformedRecordError,
    *,
    run: RunContext,
    config: LakebedConfig,
    catalog: Catalog,
) -> FileOutcome:
    """Under ``reject``, a record error escapes only for a whole file (unreadable, no records, or a value
    its Parquet column cannot take): nothing of it was written, and it is kept as one reject."""
    bad = BadRecord(path=source.name, line=exc.line, column=exc.column, reason=exc.reason, raw="")
    write_rejects(table, [bad], run=run, config=config, catalog=catalog)
    return FileOutcome(path=source.name, status="rejected", rejected=1)


def write_rejects(
    table: str,
    bad: Sequence[BadRecord],
    *,
    run: RunContext,
    config: LakebedConfig,
    catalog: Catalog | None = None,
) -> int | None:
    """Append bad records to ``<table>__rejects``; returns the Delta version."""
    now = dt.datetime.now(dt.UTC)
    rows = pa.Table.from_pylist(
        [
            {
                "source_path": b.path,
                "line": b.line,
                "column": b.column,
                "reason": b.reason,
                "raw": b.raw,
                "run_id": run.run_id,
                "rejected_at": now,
            }
            for b in bad
        ],
        schema=REJECTS_SCHEMA,
    )
    return commit(f"{table}__rejects", rows, kind="rejects", run=run, config=config, catalog=catalog).version


def _column_types(table: str, contract: TableContract | None, catalog: Catalog) -> dict[str, pa.DataType]:
    """Types the reader must use: the contract's, else the existing table's (so files agree)."""
    if contract is not None and contract.columns:
        return contract.column_types()
    entry = catalog.find(table)
    if entry is None:
        return {}
    if entry.contract is not None and entry.contract.columns:
        return entry.contract.column_types()
    try:
        schema = pa.schema(DeltaTable(entry.uri).schema().to_arrow())
    except Exception:  # registered but not written yet
        return {}
    return {f.name: f.type for f in schema if f.name not in (SOURCE_COLUMN, LINE_COLUMN)}


def _partition_column(partition_by: str, schema: pa.Schema) -> str:
    index = schema.get_field_index(partition_by)
    if index < 0:
        raise InputError(f"partition column {partition_by!r} is not in the data", column=partition_by)
    return f"{partition_by}_date" if pa.types.is_timestamp(schema.field(index).type) else partition_by


def _tag(
    stream: FileStream,
    source: str,
    partition_by: str | None,
    progress: ProgressCallback | None,
    bytes_done: int,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Add the ``_source_file`` (``source``) and ``_source_line`` columns (and a derived partition date) to
    every batch."""
    schema = stream.schema.append(pa.field(SOURCE_COLUMN, pa.string()))
    schema = schema.append(pa.field(LINE_COLUMN, pa.int64()))
    derive = None
    if partition_by:
        column = _partition_column(partition_by, stream.schema)
        if column != partition_by:
            derive = partition_by
            schema = schema.append(pa.field(column, pa.date32()))

    def batches() -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch, lines in stream.numbered:
            arrays = [*batch.columns, repeated_text(source, batch.num_rows), int64_array(lines)]
            if derive is not None:
                arrays.append(pc.cast(batch.column(derive), pa.date32()))
            rows += batch.num_rows
            if progress:
                progress(source, rows, bytes_done)
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return schema, batches()
