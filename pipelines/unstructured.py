"""Unstructured ingest: documents, images and audio into a Delta table, one row per file.

Rows are keyed by ``source_path``: the absolute path of a file (symlinks keep their own name) or
``/abs/archive.zip!/entry/path`` for a zip entry. Every run hashes every file and compares it with the table:

- an unchanged file (same path, same sha256) writes nothing, so re-ingesting an unchanged folder makes no
  Delta version at all;
- files at new paths are appended in one streaming commit (Arrow batches of 256 files, so 10k files never
  sit in memory at once);
- a changed file at a known path is upserted, ``commit(mode="merge", keys=["source_path"])``, in bounded
  chunks (a merge holds its source in memory).

Files that disappear keep their rows, and a file that turns bad keeps its last good row (the reject is
still recorded).

**Content is stored once per sha256.** Bytes up to ``inline_content_bytes`` go inline in ``content`` on the
first row that has them; larger bytes go to the blob store beside the table::

    <tables_root>/<table>__blobs/<sha256[:2]>/<sha256>      # e.g. documents__blobs/9f/9f86d0...

and every row whose bytes are blobs names the file in ``blob_path`` (absolute). A row whose bytes were
already stored (inline on another row, or as a blob) gets ``content`` null and ``duplicate_of`` set to its
sha256. So the row holding inline bytes is the one with ``blob_path`` and ``duplicate_of`` both null.
:func:`read_content` finds bytes by hash wherever they are and checks them. Blob files are written to a
temp file, fsynced, hard-linked into place (so an existing blob is never rewritten), made read-only and never
deleted by ingest. When the row holding a hash's inline bytes changes while other rows still share that
hash, the old bytes move to the blob store first, so they stay readable.

**Bad files never stop the batch.** They go to ``<table>__rejects`` (appended once per run) with a short
``reason``: ``empty``, ``too_large`` (decided from the size before reading), ``corrupt_pdf``,
``corrupt_image``, ``corrupt_audio``, ``zip_slip`` (entry names with ``..`` parts or absolute paths; entries
are read in memory and never extracted to disk anyway), ``symlink_outside_root``, ``unreadable`` and
``bad_zip``. A source that does not exist, or a glob matching nothing, raises
:class:`~lakebed.errors.SourceNotFoundError` before anything is written.

Folders are walked recursively in name order, skipping hidden names (``.git``, ``.DS_Store``). Symlinks in a
folder (or under a glob's fixed prefix) are followed when they resolve inside it; a file named explicitly is
always followed. ``.zip`` files are expanded: each entry is a file; the archive itself gets no row. Zips
inside zips are ingested as plain files. One writer per table at a time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import ContentIntegrityError, ContentNotFoundError
from lakebed.lineage.events import file_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.pipelines.blobs import BlobStore
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, WriteMode, commit
from lakebed.pipelines.unstructured_extract import CorruptFileError, extract
from lakebed.pipelines.unstructured_sources import (
    LoadedFile,
    RejectedFile,
    SourceItem,
    SourceReader,
    plan_sources,
)
from lakebed.schemas.contract import TableContract
from lakebed.storage import arrow_dataset

TABLE_SCHEMA = pa.schema(
    [
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("mime_type", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("page_count", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("exif", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("content", pa.binary()),
        pa.field("blob_path", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("rejected_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
_BATCH_FILES = 256
_BATCH_BYTES = 64 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")

Progress = Callable[[int, int], None]
"""Called as ``progress(files_done, files_total)`` after each file."""


@dataclass(frozen=True)
class UnstructuredResult:
    """What one run did. ``version`` is the last Delta version written (None when nothing changed)."""

    table: str
    version: int | None
    files_seen: int
    rows_written: int
    duplicates: int
    rejected: int
    rejects_version: int | None
    bytes_inline: int
    bytes_blob: int
    unchanged: int = 0
    run_id: str = ""


def ingest_unstructured(
    sources: str | Path | Sequence[str | Path],
    *,
    table: str = "documents",
    run: RunContext | None = None,
    config: LakebedConfig | None = None,
    progress: Progress | None = None,
) -> UnstructuredResult:
    """Ingest files, folders (recursive), glob patterns and ``.zip`` archives into ``table``.

    One row per file with its hash, sniffed MIME type, kind, extracted text (txt, md, html, pdf), image size
    and EXIF (png, jpeg), audio duration, sample rate and channels (wav, mp3, flac), and its bytes stored once
    per hash (see the module docstring). Bad files go to ``<table>__rejects``; the batch always finishes.
    """
    config = config or get_config()
    run = run or RunContext(job=f"ingest-unstructured:{table}")
    catalog = Catalog(config)
    entry = catalog.find(table)
    items = plan_sources(sources)  # raises SourceNotFoundError before anything is written
    uri = entry.uri if entry is not None else catalog.default_uri(table)
    given = [os.fspath(s) for s in ([sources] if isinstance(sources, str | Path) else sources)]
    ingest = _Ingest(
        table=table,
        uri=uri,
        config=config,
        run=run,
        catalog=catalog,
        index=_Index.load(uri),
        progress=progress,
        total=len(items),
        metadata={"lakebed.sources": json.dumps(given[:50])},
        creates_table=entry is None,
    )
    # One lineage run: the given sources (files, folders, archives) in, the table versions out.
    with lineage_run(run, config=config, inputs=[file_dataset(path) for path in given[:50]]):
        try:
            version = ingest.append([i for i in items if i.source_path not in ingest.index.paths])
            version = ingest.upsert([i for i in items if i.source_path in ingest.index.paths]) or version
        finally:
            ingest.close()
        rejects_version = ingest.write_rejects()
    return UnstructuredResult(
        table=table,
        version=version,
        files_seen=len(items),
        rows_written=ingest.rows_written,
        duplicates=ingest.duplicates,
        rejected=len(ingest.rejects),
        rejects_version=rejects_version,
        bytes_inline=ingest.bytes_inline,
        bytes_blob=ingest.bytes_blob,
        unchanged=ingest.unchanged,
        run_id=run.run_id,
    )


def read_content(table: str, sha256: str, *, config: LakebedConfig | None = None) -> bytes:
    """The bytes with hash ``sha256`` ingested into ``table``, inline on a row or in the blob store.

    Raises :class:`ContentNotFoundError` when neither holds them and :class:`ContentIntegrityError` when
    the stored bytes do not hash to ``sha256``.
    """
    config = config or get_config()
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    entry = Catalog(config).get(table)
    data = _inline_bytes(entry.uri, digest)
    if data is None:
        data = BlobStore.beside(entry.uri, table).read(digest)
    if data is None:
        raise ContentNotFoundError(f"table {table!r} holds no content with sha256 {digest}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ContentIntegrityError(f"content {digest} of table {table!r} is damaged: its hash differs")
    return data


# The run -------------------------------------------------------------------------------------------------
@dataclass
class _Index:
    """What the table already holds: sha256 per path, hashes held inline, rows per hash."""

    paths: dict[str, tuple[str, bool]] = field(default_factory=dict)  # path → (sha256, holds inline bytes)
    inline: set[str] = field(default_factory=set)
    refs: Counter[str] = field(default_factory=Counter)

    @classmethod
    def load(cls, uri: str) -> _Index:
        index = cls()
        try:
            known = arrow_dataset(DeltaTable(uri)).to_table(
                columns=["source_path", "sha256", "blob_path", "duplicate_of"]
            )
        except DeltaTableNotFoundError:
            return index
        columns = [known.column(name).to_pylist() for name in known.column_names]
        for path, sha, blob_path, duplicate_of in zip(*columns, strict=True):
            holds = blob_path is None and duplicate_of is None
            index.paths[path] = (sha, holds)
            index.refs[sha] += 1
            if holds:
                index.inline.add(sha)
        return index


class _Ingest:
    """One run's state: the content index, the blob store, counters and the rejects."""

    def __init__(
        self,
        *,
        table: str,
        uri: str,
        config: LakebedConfig,
        run: RunContext,
        catalog: Catalog,
        index: _Index,
        progress: Progress | None,
        total: int,
        metadata: dict[str, str],
        creates_table: bool,
    ) -> None:
        self.table, self.uri, self.config, self.run, self.catalog = table, uri, config, run, catalog
        self.index, self.progress, self.total, self.metadata = index, progress, total, metadata
        self.blobs = BlobStore.beside(uri, table)
        if total >= _BATCH_FILES:  # many files: one listing of the blob store instead of a stat each
            self.blobs.list_known()
        self.reader = SourceReader(config, self.blobs)
        # Register our contract only when we create the table: never overwrite the contract of a table
        # someone else made (a mismatching schema then fails in commit, naming the column).
        self.contract = (
            TableContract.from_arrow(table, TABLE_SCHEMA, keys=("source_path",)) if creates_table else None
        )
        self.now = dt.datetime.now(dt.UTC)
        self.done = self.rows_written = self.duplicates = self.unchanged = 0
        self.bytes_inline = self.bytes_blob = 0
        self.rejects: list[dict[str, Any]] = []

    # Writing ---------------------------------------------------------------------------------------------
    def append(self, items: list[SourceItem]) -> int | None:
        """New paths: one streaming append commit."""
        batches = (pa.RecordBatch.from_pylist(rows, schema=TABLE_SCHEMA) for rows in self._chunks(items))
        first = next(batches, None)
        if first is None:
            return None
        reader = pa.RecordBatchReader.from_batches(TABLE_SCHEMA, itertools.chain([first], batches))
        return self._commit(reader, mode="append")

    def upsert(self, items: list[SourceItem]) -> int | None:
        """Known paths: unchanged ones are skipped, changed ones merged by ``source_path`` chunk by chunk."""
        version = None
        for rows in self._chunks(items):
            self._keep_shared_bytes(rows)
            version = self._commit(pa.Table.from_pylist(rows, schema=TABLE_SCHEMA), mode="merge")
            for row in rows:
                old_sha, held = self.index.paths[row["source_path"]]
                self.index.refs[old_sha] -= 1
                if held:
                    self.index.inline.discard(old_sha)
                self.index.paths[row["source_path"]] = (row["sha256"], row["content"] is not None)
        return version

    def _commit(self, data: pa.Table | pa.RecordBatchReader, *, mode: WriteMode) -> int | None:
        result = commit(
            self.table,
            data,
            mode=mode,
            keys=["source_path"],
            contract=self.contract,
            run=self.run,
            metadata=self.metadata,
            catalog=self.catalog,
            config=self.config,
        )
        self.rows_written += result.rows
        return result.version

    def _keep_shared_bytes(self, rows: list[dict[str, Any]]) -> None:
        """Before rows that hold a hash's inline bytes are replaced, move those bytes to the blob store
        when other rows still share the hash."""
        for row in rows:
            old_sha, held = self.index.paths[row["source_path"]]
            if held and old_sha != row["sha256"] and self.index.refs[old_sha] > 1:
                data = _inline_bytes(self.uri, old_sha)
                if data is not None and hashlib.sha256(data).hexdigest() == old_sha:
                    self.blobs.put(old_sha, data)

    def write_rejects(self) -> int | None:
        if not self.rejects:
            return None
        rows = pa.Table.from_pylist(self.rejects, schema=REJECTS_SCHEMA)
        return commit(
            f"{self.table}__rejects",
            rows,
            kind="rejects",
            run=self.run,
            metadata=self.metadata,
            catalog=self.catalog,
            config=self.config,
        ).version

    def close(self) -> None:
        self.reader.close()

    # Reading ---------------------------------------------------------------------------------------------
    def _chunks(self, items: list[SourceItem]) -> Iterator[list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        held = 0
        for item in items:
            row = self._process(item)
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)
            if row is None:
                continue
            rows.append(row)
            held += len(row["content"] or b"") + len(row["text"] or "")
            if len(rows) >= _BATCH_FILES or held >= _BATCH_BYTES:
                yield rows
                rows, held = [], 0
        if rows:
            yield rows

    def _process(self, item: SourceItem) -> dict[str, Any] | None:
        loaded = None
        try:
            if item.reject is not None:
                raise RejectedFile(*item.reject, size=item.size)
            loaded = self.reader.load(item)
            known = self.index.paths.get(item.source_path)
            if known is not None and known[0] == loaded.sha256:
                self.unchanged += 1
                return None
            try:
                body = loaded.data if loaded.data is not None else loaded.spooled
                assert body is not None
                meta = extract(loaded.head, body, item.file_name)
            except CorruptFileError as exc:
                raise RejectedFile(exc.reason, exc.detail, size=loaded.size, sha256=loaded.sha256) from exc
            return {
                "source_path": item.source_path,
                "file_name": item.file_name,
                "sha256": loaded.sha256,
                "size_bytes": loaded.size,
                "mime_type": meta.mime_type,
                "kind": meta.kind,
                "text": meta.text,
                "page_count": meta.page_count,
                "width": meta.width,
                "height": meta.height,
                "exif": meta.exif,
                "duration_s": meta.duration_s,
                "sample_rate": meta.sample_rate,
                "channels": meta.channels,
                **self._store(loaded),
                "ingested_at": self.now,
                "run_id": self.run.run_id,
            }
        except RejectedFile as reject:
            self.rejects.append(
                {
                    "source_path": item.source_path,
                    "reason": reject.reason,
                    "detail": reject.detail,
                    "size_bytes": reject.size,
                    "sha256": reject.sha256,
                    "run_id": self.run.run_id,
                    "rejected_at": self.now,
                }
            )
            return None
        finally:
            if loaded is not None and loaded.spooled is not None:
                loaded.spooled.unlink(missing_ok=True)

    def _store(self, loaded: LoadedFile) -> dict[str, Any]:
        """Where this row's bytes go: inline, a new blob, or nowhere (already stored: a duplicate)."""
        sha = loaded.sha256
        self.index.refs[sha] += 1
        inline = sha in self.index.inline
        if inline or self.blobs.exists(sha):
            self.duplicates += 1
            blob = str(self.blobs.path(sha)) if not inline or self.blobs.exists(sha) else None
            return {"content": None, "blob_path": blob, "duplicate_of": sha}
        if loaded.size <= self.config.inline_content_bytes:
            data = loaded.data if loaded.data is not None else Path(loaded.spooled or "").read_bytes()
            self.index.inline.add(sha)
            self.bytes_inline += loaded.size
            return {"content": data, "blob_path": None, "duplicate_of": None}
        if loaded.spooled is not None:
            written = self.blobs.adopt(loaded.spooled, sha)
        else:
            written = self.blobs.put(sha, loaded.data or b"")
        self.bytes_blob += loaded.size if written else 0
        return {"content": None, "blob_path": str(self.blobs.path(sha)), "duplicate_of": None}


def _inline_bytes(table_uri: str, sha256: str) -> bytes | None:
    """The inline ``content`` of the row holding the bytes with this hash, if any.

    Read with Polars' native Delta scan: it filters on ``sha256`` first and decodes ``content`` only for
    matching rows. (Files written by a Delta merge store string_view/binary_view columns, which a pyarrow
    dataset filter with a plain string literal cannot compare, so ``pipelines.read.dataset`` is no help here.)
    """
    import polars as pl

    found = (
        pl.scan_delta(table_uri)
        .filter((pl.col("sha256") == sha256) & pl.col("content").is_not_null())
        .select("content")
        .head(1)
        .collect()
    )
    return found.item() if found.height else None


__all__ = [
    "REJECTS_SCHEMA",
    "TABLE_SCHEMA",
    "BlobStore",
    "ContentIntegrityError",
    "ContentNotFoundError",
    "UnstructuredResult",
    "ingest_unstructured",
    "plan_sources",
    "read_content",
]
