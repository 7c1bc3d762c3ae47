"""The approximate index of an embedding table version: a usearch HNSW graph, a cache of the Delta table.

One index per table version, under the lakebed home::

    <home>/indexes/<table>/v<version>.usearch     # the graph and its vectors (usearch's own file)
    <home>/indexes/<table>/v<version>.json        # rows, dimension, the file's sha256, the rows' digest

Index key ``i`` is row ``i`` of the version's vectors in the searcher's order (sorted by the key columns),
and the sidecar records a digest of those keys. An index is used only when its file hashes to the recorded
sha256 and its rows and keys match the table version; otherwise (missing, truncated, corrupt, stale) it is
rebuilt from the Delta table, so a damaged cache can cost time but never a wrong answer. The truth is the
exact search over the pinned version; the index only makes the same question fast. The
``KEEP_VERSIONS`` most recently written indexes of a table are kept; older ones are removed when a new one is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakebed.config import LakebedConfig

if TYPE_CHECKING:
    import numpy as np

KEEP_VERSIONS = 3
CONNECTIVITY = 16  # HNSW graph degree (usearch's M)
EXPANSION_ADD = 64  # candidates kept while inserting (efConstruction)
EXPANSION_SEARCH = 40  # candidates kept while searching (ef); usearch takes k when k is larger


@dataclass(frozen=True)
class IndexFile:
    """Where a table version's index lives and what it must match."""

    path: Path
    rows: int
    dimension: int
    rows_digest: str

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def index_file(
    table: str, version: int, *, rows: int, dimension: int, rows_digest: str, config: LakebedConfig
) -> IndexFile:
    return IndexFile(config.home / "indexes" / table / f"v{version}.usearch", rows, dimension, rows_digest)


def rows_digest(keys: list[str]) -> str:
    """A digest of the rows an index covers, in index-key order."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode() + b"\0")
    return digest.hexdigest()


def load_or_build(target: IndexFile, vectors: np.ndarray) -> tuple[Any, bool]:
    """The usearch index of ``target`` and whether it was (re)built: loaded when the file checks out,
    else built from ``vectors`` (rows in key order) and saved."""
    loaded = _load(target)
    if loaded is not None:
        return loaded, False
    return build(target, vectors), True


def build(target: IndexFile, vectors: np.ndarray) -> Any:
    """Build the HNSW index of ``vectors`` (key ``i`` = row ``i``) and save it atomically with its sidecar."""
    import numpy as np
    from usearch.index import Index

    index = _new_index(target.dimension)
    if len(vectors):
        index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=os.cpu_count() or 1)
    target.path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.path.parent, suffix=".tmp")
    os.close(handle)
    try:
        index.save(temp)
        sidecar = {
            "rows": target.rows,
            "dimension": target.dimension,
            "rows_digest": target.rows_digest,
            "sha256": _file_sha256(Path(temp)),
            "connectivity": CONNECTIVITY,
            "expansion_add": EXPANSION_ADD,
        }
        os.replace(temp, target.path)
    finally:
        Path(temp).unlink(missing_ok=True)
    target.sidecar.write_text(json.dumps(sidecar, sort_keys=True))
    _prune(target.path.parent)
    assert isinstance(index, Index)
    return index


def _load(target: IndexFile) -> Any:
    try:
        recorded = json.loads(target.sidecar.read_text())
        if (recorded["rows"], recorded["dimension"], recorded["rows_digest"]) != (
            target.rows,
            target.dimension,
            target.rows_digest,
        ) or recorded["sha256"] != _file_sha256(target.path):
            return None
        index = _new_index(target.dimension)
        index.load(str(target.path))
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    return index if len(index) == target.rows else None


def _new_index(dimension: int) -> Any:
    from usearch.index import Index

    return Index(
        ndim=dimension,
        metric="ip",  # the vectors are L2-normalised, so inner product is cosine, without the norms
        dtype="f32",
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _prune(folder: Path) -> None:
    """Keep the ``KEEP_VERSIONS`` most recently written indexes of a table (a pinned old version's index,
    just rebuilt, counts as recent)."""
    written = sorted(folder.glob("v*.usearch"), key=lambda p: p.stat().st_mtime_ns)
    for path in written[:-KEEP_VERSIONS]:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
