"""The embed step: the extracted text of an unstructured table, chunked and embedded into ``<table>__chunks``.

One row per chunk (``CHUNKS_SCHEMA``), keyed by ``chunk_id`` (see :mod:`.chunking`). A run compares each
document's ``sha256`` and the chunking settings with what the chunks table holds:

- an unchanged document is skipped: re-embedding an unchanged table calls no embedder and writes no Delta
  version;
- a new document's chunks are appended; a changed one's new chunks replace its old ones in the same commit
  (a merge by ``chunk_id`` that deletes the old ids);
- a document with no text (an image, audio, an empty or blank page) gets one row with ``skipped`` set to the
  reason (``no_text``, ``blank_text``) and no embedding, so every document's fate is in one table.

Every commit records the :class:`~.spec.EmbeddingSpec` (embedder name, dimension, weights digest, chunking)
in ``lakebed.embedding`` commit metadata, and the run's lineage names the source table at the version read
and the embedder on the ``embedding`` column's lineage. A table whose recorded embedder differs (dimension,
name or weights) is refused before anything is embedded. One writer per chunks table at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TableNotFoundError
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, commit, open_delta
from lakebed.pipelines.embeddings.chunking import CHUNK_UNIT, Chunk, ChunkSettings, chunk_id, chunk_tokens
from lakebed.pipelines.embeddings.embedder import (
    Embedder,
    EmbedderInfo,
    TokenEmbedder,
    resolve_embedder,
)
from lakebed.pipelines.embeddings.spec import METADATA_KEY, EmbeddingSpec, read_spec
from lakebed.schemas.contract import TableContract
from lakebed.schemas.project import UnstructuredSource
from lakebed.storage import arrow_dataset

if TYPE_CHECKING:
    import numpy as np

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("document_sha256", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("start_char", pa.int64()),
        pa.field("end_char", pa.int64()),
        pa.field("token_count", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("skipped", pa.string()),
        pa.field("chunking", pa.string(), nullable=False),
        pa.field("embedded_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
EMBEDDING_COLUMN = "embedding"
SEARCH_KEYS = ("chunk_id", "source_path", "chunk_index")
_BATCH_DOCUMENTS = 256


@dataclass(frozen=True)
class EmbedResult:
    """What one run did. ``version`` is the chunks table's new Delta version (None: nothing changed)."""

    table: str
    source: str
    source_version: int
    version: int | None
    documents: int
    embedded_documents: int
    unchanged_documents: int
    skipped_documents: int
    chunks: int
    replaced_chunks: int
    embedder: EmbedderInfo
    run_id: str


def chunks_table(source: str) -> str:
    """The default embedding table of an unstructured table."""
    return f"{source}__chunks"


def embed_documents(
    source: str = "documents",
    *,
    table: str | None = None,
    embedder: Embedder | str | None = None,
    chunking: ChunkSettings | None = None,
    run: RunContext | None = None,
    config: LakebedConfig | None = None,
) -> EmbedResult:
    """Chunk and embed the ``text`` of unstructured table ``source`` into ``table`` (default
    ``<source>__chunks``); only new and changed documents are embedded (see the module docstring)."""
    config = config or get_config()
    chunking = chunking or ChunkSettings()
    model = resolve_embedder(embedder)
    info = EmbedderInfo.of(model)
    chunking.check(info)
    target = table or chunks_table(source)
    run = run or RunContext(job=f"embed:{target}")
    catalog = Catalog(config)
    source_entry = catalog.find(source)
    if source_entry is None:
        raise TableNotFoundError(f"no table {source!r} to embed (ingest its documents first)")
    spec = EmbeddingSpec(
        column=EMBEDDING_COLUMN,
        embedder=info,
        keys=SEARCH_KEYS,
        text_column="text",
        chunking={"size": chunking.size, "overlap": chunking.overlap, "unit": CHUNK_UNIT},
        source=source,
    )
    target_entry = catalog.find(target)
    existing = open_delta(target_entry.uri) if target_entry is not None else None
    if existing is not None:
        recorded = read_spec(existing)
        if recorded is not None:
            recorded.check_embedder(target, info)
    known = _known_documents(existing)
    fingerprint = chunking.fingerprint(info)

    source_table = open_delta(source_entry.uri)
    assert source_table is not None, f"catalog table {source!r} has no Delta table"
    source_version = source_table.version()
    source_ref = table_dataset(source, source_entry.uri, source_version)
    documents = arrow_dataset(source_table).to_table(columns=["source_path", "sha256", "text"])
    paths = documents.column("source_path").to_pylist()
    changed, replaced = _changes(paths, documents.column("sha256").to_pylist(), known, fingerprint)
    step = _Step(model, chunking, fingerprint, run)
    with lineage_run(run, config=config, inputs=[source_ref]) as lineage:
        version = None
        if changed:
            how = f"DIRECT:TRANSFORMATION:embedded by {info.name} ({info.dimension} dims, {info.weights_digest})"
            lineage.add_column_lineage(target, EMBEDDING_COLUMN, [(source_ref, "text", how)])
            lineage.add_column_lineage(
                target, "text", [(source_ref, "text", "DIRECT:TRANSFORMATION:chunked")]
            )
            version = _commit_chunks(
                target,
                step.batches(documents.take(pa.array(changed, pa.int64()))),
                replaced,
                creates=target_entry is None,
                metadata={
                    METADATA_KEY: spec.to_json(),
                    "lakebed.embedding.source_version": str(source_version),
                },
                run=run,
                catalog=catalog,
                config=config,
            )
    return EmbedResult(
        table=target,
        source=source,
        source_version=source_version,
        version=version,
        documents=len(paths),
        embedded_documents=len(changed) - step.skipped,
        unchanged_documents=len(paths) - len(changed),
        skipped_documents=step.skipped,
        chunks=step.chunks,
        replaced_chunks=len(replaced),
        embedder=info,
        run_id=run.run_id,
    )


def embed_source(
    source: UnstructuredSource, *, run: RunContext | None = None, config: LakebedConfig | None = None
) -> EmbedResult:
    """The embed step a project's unstructured source asks for with ``embed:``."""
    spec = source.embed
    if spec is None:
        raise ValueError(f"source {source.table!r} asks for no embeddings")
    return embed_documents(
        source.table,
        table=source.embedding_table,
        embedder=spec.embedder,
        chunking=ChunkSettings(size=spec.chunk_size, overlap=spec.overlap),
        run=run,
        config=config,
    )


def _changes(
    paths: list[str], shas: list[str], known: dict[str, tuple[str, str, list[str]]], fingerprint: str
) -> tuple[list[int], pa.Array]:
    """The positions of documents to embed (new, changed, or chunked with other settings) and the chunk
    ids their new chunks replace."""
    changed = [
        i
        for i, (path, sha) in enumerate(zip(paths, shas, strict=True))
        if path not in known or known[path][:2] != (sha, fingerprint)
    ]
    replaced = [cid for i in changed if paths[i] in known for cid in known[paths[i]][2]]
    return changed, pa.array(replaced, pa.string())


def _commit_chunks(
    target: str,
    batches: Iterator[pa.RecordBatch],
    replaced: pa.Array,
    *,
    creates: bool,
    metadata: dict[str, str],
    run: RunContext,
    catalog: Catalog,
    config: LakebedConfig,
) -> int | None:
    """One commit: new documents' chunks streamed in as an append; when chunks are replaced, a merge by
    ``chunk_id`` that also deletes the replaced ids (a merge holds its rows in memory)."""
    data: pa.Table | pa.RecordBatchReader
    if len(replaced):
        data, delete = (
            pa.Table.from_batches(list(batches), schema=CHUNKS_SCHEMA),
            pa.table({"chunk_id": replaced}),
        )
    else:
        data, delete = pa.RecordBatchReader.from_batches(CHUNKS_SCHEMA, batches), None
    return commit(
        target,
        data,
        mode="merge" if delete is not None else "append",
        keys=["chunk_id"],
        delete=delete,
        # Register the contract only when this step creates the table: never overwrite someone else's.
        contract=TableContract.from_arrow(target, CHUNKS_SCHEMA, keys=("chunk_id",)) if creates else None,
        run=run,
        metadata=metadata,
        catalog=catalog,
        config=config,
    ).version


def _known_documents(existing: Any) -> dict[str, tuple[str, str, list[str]]]:
    """``source_path`` → (document sha256, chunking fingerprint, chunk ids) of what the chunks table holds."""
    if existing is None:
        return {}
    held = arrow_dataset(existing).to_table(
        columns=["source_path", "document_sha256", "chunking", "chunk_id"]
    )
    known: dict[str, tuple[str, str, list[str]]] = {}
    columns = [held.column(name).to_pylist() for name in held.column_names]
    for path, sha, fingerprint, cid in zip(*columns, strict=True):
        entry = known.setdefault(path, (sha, fingerprint, []))
        entry[2].append(cid)
    return known


class _Step:
    """Chunks and embeds documents in batches, counting what it made."""

    def __init__(
        self, embedder: Embedder, chunking: ChunkSettings, fingerprint: str, run: RunContext
    ) -> None:
        self.embedder, self.chunking, self.fingerprint, self.run = embedder, chunking, fingerprint, run
        self.now = dt.datetime.now(dt.UTC)
        self.chunks = self.skipped = 0

    def batches(self, documents: pa.Table) -> Iterator[pa.RecordBatch]:
        for offset in range(0, documents.num_rows, _BATCH_DOCUMENTS):
            part = documents.slice(offset, _BATCH_DOCUMENTS)
            yield self._batch(
                part.column("source_path").to_pylist(),
                part.column("sha256").to_pylist(),
                part.column("text").to_pylist(),
            )

    def _batch(
        self, paths: Sequence[str], shas: Sequence[str], texts: Sequence[str | None]
    ) -> pa.RecordBatch:
        import numpy as np

        readable = [i for i, text in enumerate(texts) if text and not text.isspace()]
        tokens = dict(zip(readable, self.embedder.tokenize([texts[i] or "" for i in readable]), strict=True))
        rows: dict[str, list[Any]] = {name: [] for name in CHUNKS_SCHEMA.names if name != EMBEDDING_COLUMN}
        embedded: list[int] = []  # row positions that get a vector
        pieces: list[str] = []
        ids: list[np.ndarray] = []
        for i, (path, sha, text) in enumerate(zip(paths, shas, texts, strict=True)):
            found = tokens.get(i)
            windows = chunk_tokens(text or "", found, self.chunking) if found is not None else []
            if not windows:
                self.skipped += 1
                self._row(rows, path, sha, 0, None, skipped="no_text" if not text else "blank_text")
                continue
            for window in windows:
                assert found is not None
                embedded.append(len(rows["chunk_id"]))
                pieces.append(window.text)
                ids.append(found.ids[window.first_token : window.last_token])
                self._row(rows, path, sha, window.index, window)
        self.chunks += len(embedded)
        if isinstance(self.embedder, TokenEmbedder):
            vectors = (
                self.embedder.embed_tokens(ids) if ids else np.empty((0, self.embedder.dimension), np.float32)
            )
        else:
            vectors = (
                self.embedder.embed(pieces) if pieces else np.empty((0, self.embedder.dimension), np.float32)
            )
        columns = {name: pa.array(values, CHUNKS_SCHEMA.field(name).type) for name, values in rows.items()}
        columns[EMBEDDING_COLUMN] = _vector_column(len(rows["chunk_id"]), embedded, vectors)
        return pa.RecordBatch.from_pydict(
            {name: columns[name] for name in CHUNKS_SCHEMA.names}, schema=CHUNKS_SCHEMA
        )

    def _row(
        self,
        rows: dict[str, list[Any]],
        path: str,
        sha: str,
        index: int,
        window: Chunk | None,
        *,
        skipped: str | None = None,
    ) -> None:
        values = {
            "chunk_id": chunk_id(path, sha, self.fingerprint, index),
            "source_path": path,
            "document_sha256": sha,
            "chunk_index": index,
            "start_char": window.start if window is not None else None,
            "end_char": window.end if window is not None else None,
            "token_count": window.token_count if window is not None else None,
            "text": window.text if window is not None else None,
            "skipped": skipped,
            "chunking": self.fingerprint,
            "embedded_at": self.now,
            "run_id": self.run.run_id,
        }
        for name, value in values.items():
            rows[name].append(value)


def _vector_column(rows: int, positions: list[int], vectors: np.ndarray) -> pa.Array:
    """A ``list<float32>`` column with ``vectors`` at ``positions`` and nulls elsewhere, built from one
    flat buffer (no per-value Python objects)."""
    import numpy as np

    dimension = vectors.shape[1]
    present = np.zeros(rows, dtype=bool)
    present[positions] = True
    lengths = np.where(present, dimension, 0)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    values = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
    mask = pa.array(~present) if not present.all() else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()), mask=mask)


__all__ = [
    "CHUNKS_SCHEMA",
    "EMBEDDING_COLUMN",
    "EmbedResult",
    "chunks_table",
    "embed_documents",
    "embed_source",
]
