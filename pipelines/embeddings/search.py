"""Similarity search over an embedding table at one Delta version: exact (the truth) or approximate.

A :class:`Searcher` holds one table version in memory: its rows (every column but the vectors, sorted by
the recorded key columns, so the order never depends on file layout) and its L2-normalised vectors. Scores
are cosine similarities (higher is closer), ``distance = 1 - score``.

- **Exact** search is one matrix-vector product over the pinned version, ties broken by row order: the
  answer a training job reproduces by pinning the same version, whatever was written since.
- **Approximate** search asks the version's HNSW index (:mod:`.index`), loaded or rebuilt on first use.
  A ``filter`` (column → value, or column → list of values) makes the search exact over the matching rows.

Bad requests raise :class:`~lakebed.errors.SearchQueryError` (``k`` outside ``1..MAX_K``, an empty or
non-finite query, an unknown filter column) or its subclass
:class:`~lakebed.errors.QueryDimensionError` (naming the expected dimension); an unknown table raises
:class:`~lakebed.errors.TableNotFoundError`, a table without embeddings :class:`~lakebed.errors.SearchError`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import (
    QueryDimensionError,
    SearchError,
    SearchQueryError,
    TableNotFoundError,
)
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.embeddings import index as hnsw
from lakebed.pipelines.embeddings.embedder import EmbedderInfo, get_embedder
from lakebed.pipelines.embeddings.spec import EmbeddingSpec, read_spec
from lakebed.pipelines.read import AsOf, open_table
from lakebed.storage import arrow_dataset, is_local, local_path

if TYPE_CHECKING:
    from deltalake import DeltaTable

MAX_K = 1000
"""The largest ``k`` a search accepts."""
Query = str | Sequence[float] | np.ndarray
Filter = Mapping[str, Any]


@dataclass
class Searcher:
    """One embedding table version, ready to search (see the module docstring)."""

    table: str
    version: int
    spec: EmbeddingSpec
    rows: pa.Table
    vectors: np.ndarray  # (n, dim) float32, L2-normalised, row i of ``rows``
    index_file: hnsw.IndexFile
    _index: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    index_rebuilt: bool = False
    _returns: tuple[pa.Table, dict[str, pa.Schema]] | None = field(default=None, repr=False)

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    def index(self) -> Any:
        """The version's HNSW index: loaded from the cache, or rebuilt when missing or damaged."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index, self.index_rebuilt = hnsw.load_or_build(self.index_file, self.vectors)
        return self._index

    def query_vector(self, query: Query) -> np.ndarray:
        """``query`` as a normalised float32 vector: a text is embedded by the table's recorded embedder."""
        if isinstance(query, str):
            if not query.strip():
                raise SearchQueryError("the query text is empty")
            embedder = get_embedder(self.spec.embedder.name)
            self.spec.check_embedder(self.table, EmbedderInfo.of(embedder))
            vector = embedder.embed([query])[0]
        else:
            vector = np.asarray(query, dtype=np.float32)
            if vector.ndim != 1 or vector.shape[0] != self.dimension:
                got = int(vector.shape[-1]) if vector.ndim else 0
                raise QueryDimensionError(
                    f"table {self.table!r} holds {self.dimension}-dimensional vectors in column "
                    f"{self.spec.column!r}; the query has shape {tuple(vector.shape)}",
                    expected=self.dimension,
                    got=got,
                )
        if not np.isfinite(vector).all():
            raise SearchQueryError("the query vector holds NaN or infinite values")
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            raise SearchQueryError("the query vector is all zeros")
        return (vector / norm).astype(np.float32, copy=False)

    def search(
        self, query: Query, k: int = 10, *, filter: Filter | None = None, exact: bool = False
    ) -> pa.Table:  # noqa: A002
        """The ``k`` rows nearest ``query``, best first: the key columns, the text, ``score``, ``distance``."""
        check_k(k)
        vector = self.query_vector(query)
        if filter:
            positions, scores = self._exact(vector, k, self._filter_positions(filter))
            mode = "exact"
        elif exact or len(self.vectors) <= k:
            positions, scores = self._exact(vector, k, None)
            mode = "exact"
        else:
            positions, scores = self._approximate(vector, k)
            mode = "approximate"
        return self._result(positions, scores, mode)

    def _exact(self, vector: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return exact_top_k(self.vectors if subset is None else self.vectors[subset], vector, k, subset)

    def _approximate(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # usearch searches with max(expansion_search, k) candidates itself: the shared index is never
        # reconfigured per query, so concurrent searches (the HTTP server's threads) stay safe.
        matches = self.index().search(vector, k, threads=1)
        positions = np.asarray(matches.keys, dtype=np.int64)
        return positions, (1.0 - np.asarray(matches.distances, dtype=np.float32)).astype(np.float32)

    def _filter_positions(self, filter: Filter) -> np.ndarray:  # noqa: A002
        mask = None
        for column, wanted in filter.items():
            if column not in self.rows.column_names:
                raise SearchQueryError(
                    f"filter column {column!r} is not a column of {self.table!r} (it has {self.rows.column_names})"
                )
            values = self.rows.column(column)
            listed = isinstance(wanted, list | tuple | set | frozenset)
            try:  # values of the column's type, or text that casts to it (``--filter chunk_index=0``)
                allowed = pa.array(list(wanted) if listed else [wanted]).cast(values.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise SearchQueryError(
                    f"filter {column}={wanted!r}: not a value of the column's type {values.type} ({exc})"
                ) from exc
            match = pc.is_in(values, value_set=allowed)
            mask = match if mask is None else pc.and_(mask, match)
        assert mask is not None
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False) == True)  # noqa: E712 - nulls are False

    def _result(self, positions: np.ndarray, scores: np.ndarray, mode: str) -> pa.Table:
        returned, schemas = self._returned()
        picked = returned.take(pa.array(positions, pa.int64()))
        scores32 = scores.astype(np.float32, copy=False)
        columns = [*picked.columns, pa.array(scores32), pa.array(np.float32(1.0) - scores32)]
        return pa.Table.from_arrays(columns, schema=schemas[mode])

    def _returned(self) -> tuple[pa.Table, dict[str, pa.Schema]]:
        """The columns a search returns (one contiguous chunk each, so ``take`` is one pass) and the
        result schema, made once per searcher: building them per query would cost a third of a search."""
        if self._returns is None:
            wanted = [*self.spec.keys, *([self.spec.text_column] if self.spec.text_column else [])]
            returned = self.rows.select(wanted).combine_chunks()
            fields = [*returned.schema, pa.field("score", pa.float32()), pa.field("distance", pa.float32())]
            metadata = {
                "lakebed.table": self.table,
                "lakebed.version": str(self.version),
                "lakebed.embedder": self.spec.embedder.to_json(),
            }
            schemas = {
                mode: pa.schema(fields, metadata={**metadata, "lakebed.search": mode})
                for mode in ("exact", "approximate")
            }
            self._returns = (returned, schemas)
        return self._returns


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise SearchQueryError(f"k must be an integer from 1 to {MAX_K}, not {k!r}")


def exact_top_k(
    vectors: np.ndarray, query: np.ndarray, k: int, subset: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``subset`` when given) and cosine scores of the ``k`` best rows of normalised
    ``vectors`` for normalised ``query``: highest score first, ties by position."""
    scores = vectors @ query
    count = min(k, len(scores))
    if count == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    best = np.argpartition(-scores, count - 1)[:count] if count < len(scores) else np.arange(len(scores))
    order = best[np.lexsort((best, -scores[best]))]
    positions = order if subset is None else subset[order]
    return positions.astype(np.int64), scores[order].astype(np.float32)


def open_searcher(
    table: str, *, version: int | None = None, as_of: AsOf | None = None, config: LakebedConfig | None = None
) -> Searcher:
    """Load ``table`` (or, when it records no embeddings, its ``<table>__chunks``) at a version."""
    config = config or get_config()
    name, delta = resolve(table, version=version, as_of=as_of, config=config)
    return load_searcher(name, delta, config=config)


def resolve(
    table: str, *, version: int | None, as_of: AsOf | None, config: LakebedConfig
) -> tuple[str, DeltaTable]:
    """The embedding table meant by ``table`` and its Delta table at the asked version."""
    catalog = Catalog(config)
    if catalog.find(table) is None and catalog.find(f"{table}__chunks") is None:
        raise TableNotFoundError(f"no table {table!r} to search")
    if catalog.find(table) is not None:
        delta = open_table(table, version=version, as_of=as_of, config=config)
        if read_spec(delta) is not None or catalog.find(f"{table}__chunks") is None:
            return table, delta
    chunks = f"{table}__chunks"
    return chunks, open_table(chunks, version=version, as_of=as_of, config=config)


def load_searcher(name: str, delta: DeltaTable, *, config: LakebedConfig) -> Searcher:
    spec = read_spec(delta)
    if spec is None:
        raise SearchError(f"table {name!r} holds no embeddings (no commit records lakebed.embedding)")
    data = arrow_dataset(delta).to_table(filter=pc.field(spec.column).is_valid())
    data = data.take(pc.sort_indices(data, [(key, "ascending") for key in spec.keys]))
    column = data.column(spec.column).combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != spec.dimension).any():
        raise SearchError(
            f"table {name!r} column {spec.column!r} holds vectors not of dimension {spec.dimension}"
        )
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    vectors = flat.reshape(len(column), spec.dimension)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.ascontiguousarray(vectors / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)
    rows = data.drop_columns([spec.column])
    keys = [str(v) for v in rows.column(spec.keys[0]).to_pylist()]
    target = hnsw.index_file(
        name,
        delta.version(),
        rows=len(vectors),
        dimension=spec.dimension,
        rows_digest=hnsw.rows_digest(keys),
        config=config,
    )
    return Searcher(name, delta.version(), spec, rows, vectors, target)


class SearcherCache:
    """Loaded searchers by (table, version), the few most recently used.

    A pinned ``version=`` is answered from memory. For the latest version of a local table the cache
    remembers the version it last saw and looks for the next commit file in the Delta log: one ``stat``
    per search while nothing new was committed, instead of a catalog lookup and a Delta table load (tens
    of milliseconds). Anything unexpected (a remote table, a log without the remembered commit, a name not
    seen yet) takes the full lookup.
    """

    def __init__(self, config: LakebedConfig, *, size: int = 8) -> None:
        self.config, self.size = config, size
        self._searchers: OrderedDict[tuple[str, int], Searcher] = OrderedDict()
        self._latest_seen: dict[str, tuple[str, Path, int]] = {}  # asked name → (table, Delta log, version)
        self._lock = threading.Lock()

    def get(self, table: str, *, version: int | None = None, as_of: AsOf | None = None) -> Searcher:
        if as_of is None:
            keys = (
                [(table, version), (f"{table}__chunks", version)]
                if version is not None
                else [self._latest(table)]
            )
            for key in keys:
                found = self._hit(key) if key is not None else None
                if found is not None:
                    return found
        name, delta = resolve(table, version=version, as_of=as_of, config=self.config)
        if version is None and as_of is None and is_local(delta.table_uri):
            self._latest_seen[table] = (name, local_path(delta.table_uri) / "_delta_log", delta.version())
        found = self._hit((name, delta.version()))
        if found is not None:
            return found
        loaded = load_searcher(name, delta, config=self.config)
        with self._lock:
            self._searchers[(name, delta.version())] = loaded
            while len(self._searchers) > self.size:
                self._searchers.popitem(last=False)
        return loaded

    def _hit(self, key: tuple[str, int]) -> Searcher | None:
        with self._lock:
            found = self._searchers.get(key)
            if found is not None:
                self._searchers.move_to_end(key)
            return found

    def _latest(self, table: str) -> tuple[str, int] | None:
        """The table meant by ``table`` and its latest version, from the Delta log of a local table seen
        before (None when it must be looked up)."""
        seen = self._latest_seen.get(table)
        if seen is None:
            return None
        name, log, version = seen
        if not (log / f"{version:020d}.json").exists():
            return None  # dropped and re-created, or the log was cleaned up: look it up again
        while (log / f"{version + 1:020d}.json").exists():
            version += 1
        self._latest_seen[table] = (name, log, version)
        return name, version


def build_index(table: str, *, config: LakebedConfig | None = None) -> Searcher:
    """Load ``table``'s latest version and its HNSW index (built now unless a valid one is cached): what a
    write calls so the first search does not pay for the build."""
    searcher = open_searcher(table, config=config)
    searcher.index()
    return searcher


def search(
    table: str,
    query: Query,
    k: int = 10,
    *,
    filter: Filter | None = None,  # noqa: A002
    version: int | None = None,
    as_of: AsOf | None = None,
    exact: bool = False,
    config: LakebedConfig | None = None,
) -> pa.Table:
    """Search ``table`` once (see the module docstring); :class:`SearcherCache` keeps versions loaded."""
    check_k(k)
    return open_searcher(table, version=version, as_of=as_of, config=config).search(
        query, k, filter=filter, exact=exact
    )


__all__ = ["MAX_K", "Searcher", "SearcherCache", "build_index", "exact_top_k", "open_searcher", "search"]
