"""Similarity search: exact top-k against numpy, pinned versions, the HNSW index cache, bad input, the CLI.

Real documents embedded by the real WordLlama embedder into real Delta tables.
"""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from lakebed import FeatureStore
from lakebed.cli import main as cli
from lakebed.errors import QueryDimensionError, SearchError, SearchQueryError, TableNotFoundError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import commit
from lakebed.pipelines.embeddings.embedder import get_embedder
from lakebed.pipelines.embeddings.search import MAX_K, open_searcher
from lakebed.pipelines.embeddings.step import embed_documents
from lakebed.pipelines.read import read_table
from lakebed.pipelines.unstructured import ingest_unstructured

DOCS = {
    "returns.txt": "Customers may return shoes within 30 days of delivery for a full refund.",
    "shipping.txt": "The warehouse ships every order on weekdays before noon.",
    "payments.txt": "We accept credit cards, bank transfers and gift vouchers at checkout.",
    "sizes.txt": "Our sneakers run small; order half a size up if you are between sizes.",
    "privacy.txt": "Personal data is kept for two years and never sold to third parties.",
    "stores.txt": "Visit our shops in Berlin, Paris and Madrid, open Monday to Saturday.",
}
QUESTION = "can I send my shoes back and get my money back?"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    ingest_unstructured(folder)
    embed_documents("documents")
    return folder


def numpy_top_k(query: np.ndarray, k: int, version: int | None = None) -> list[str]:
    """The reference: cosine similarity over every embedded row of the table version, best first."""
    rows = read_table("documents__chunks", version=version).filter(pa.compute.field("embedding").is_valid())
    vectors = np.array(rows.column("embedding").to_pylist(), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ (query / np.linalg.norm(query))
    ids = rows.column("chunk_id").to_pylist()
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]]


def test_exact_search_equals_a_numpy_reference(docs: Path) -> None:
    store = FeatureStore()
    query = get_embedder().embed([QUESTION])[0]
    for k in (1, 3, len(DOCS)):
        hits = store.search("documents", query, k, exact=True)
        assert hits.column("chunk_id").to_pylist() == numpy_top_k(query, k)
        scores = hits.column("score").to_pylist()
        assert scores == sorted(scores, reverse=True)
    # A text query is embedded with the table's embedder: the same answer, the returns policy first.
    by_text = store.search("documents", QUESTION, 3, exact=True)
    assert by_text.column("chunk_id").to_pylist() == numpy_top_k(query, 3)
    assert by_text.column("source_path").to_pylist()[0].endswith("returns.txt")
    assert by_text.column_names == ["chunk_id", "source_path", "chunk_index", "text", "score", "distance"]
    assert by_text.schema.metadata[b"lakebed.search"] == b"exact"


def test_approximate_search_agrees_with_exact_and_filters_search_exactly(docs: Path) -> None:
    store = FeatureStore()
    approximate = store.search("documents__chunks", QUESTION, 3)
    assert approximate.schema.metadata[b"lakebed.search"] == b"approximate"
    exact = store.search("documents__chunks", QUESTION, 3, exact=True)
    assert approximate.column("chunk_id").to_pylist() == exact.column("chunk_id").to_pylist()
    assert np.allclose(approximate.column("score").to_numpy(), exact.column("score").to_numpy(), atol=1e-5)
    wanted = [str(docs / "stores.txt"), str(docs / "sizes.txt")]
    filtered = store.search("documents", QUESTION, 5, filter={"source_path": wanted})
    assert sorted(filtered.column("source_path").to_pylist()) == sorted(wanted)
    (one,) = store.search(
        "documents", QUESTION, 5, filter={"source_path": wanted[0], "chunk_index": "0"}
    ).to_pylist()
    assert one["source_path"] == wanted[0] and one["chunk_index"] == 0  # text casts to the column's type


def test_a_pinned_version_answers_the_same_after_new_rows_arrive(docs: Path) -> None:
    store = FeatureStore()
    before = store.search("documents", QUESTION, 3, version=0, exact=True)
    assert store.search("documents", QUESTION, 3).schema.metadata[b"lakebed.version"] == b"0"
    (docs / "refunds.txt").write_text("Refunds for returned shoes reach your card within five days.")
    ingest_unstructured(docs)
    assert embed_documents("documents").version == 1
    latest = store.search("documents", QUESTION, 3, exact=True)
    assert latest.schema.metadata[b"lakebed.version"] == b"1"
    assert latest.column("chunk_id").to_pylist() != before.column("chunk_id").to_pylist()
    for fresh in (store, FeatureStore()):  # cached and freshly loaded
        again = fresh.search("documents", QUESTION, 3, version=0, exact=True)
        assert again.equals(before)
        committed = DeltaTable(Catalog().get("documents__chunks").uri).history()[-1]["timestamp"]
        as_of = dt.datetime.fromtimestamp(committed / 1000, dt.UTC).isoformat()
        assert fresh.search("documents", QUESTION, 3, as_of=as_of, exact=True).equals(before)
        assert (
            fresh.search("documents", QUESTION, 3, version=0)
            .column("chunk_id")
            .equals(before.column("chunk_id"))
        )


def test_concurrent_searches_of_one_store_agree(docs: Path) -> None:
    store = FeatureStore()
    expected = store.search("documents", QUESTION, 4, exact=True).column("chunk_id").to_pylist()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: store.search("documents", QUESTION, 4), range(32)))
    assert all(a.column("chunk_id").to_pylist() == expected for a in answers)


def test_a_corrupt_or_missing_index_is_rebuilt_and_the_answer_stays_right(docs: Path) -> None:
    first = open_searcher("documents")
    expected = first.search(QUESTION, 3, exact=True)
    assert first.search(QUESTION, 3).column("chunk_id").equals(expected.column("chunk_id"))
    assert first.index_rebuilt  # built on first use
    path = first.index_file.path
    assert path.exists() and first.index_file.size_bytes > 0
    cached = open_searcher("documents")
    cached.index()
    assert not cached.index_rebuilt  # loaded from the file
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    damaged = open_searcher("documents")
    assert damaged.search(QUESTION, 3).column("chunk_id").equals(expected.column("chunk_id"))
    assert damaged.index_rebuilt
    path.write_bytes(b"not an index")
    assert (
        open_searcher("documents").search(QUESTION, 3).column("chunk_id").equals(expected.column("chunk_id"))
    )
    path.unlink()
    missing = open_searcher("documents")
    assert missing.search(QUESTION, 3).column("chunk_id").equals(expected.column("chunk_id"))
    assert missing.index_rebuilt and path.exists()


def test_bad_requests_raise_errors_an_http_layer_can_map(docs: Path) -> None:
    store = FeatureStore()
    with pytest.raises(QueryDimensionError, match="256-dimensional") as raised:
        store.search("documents", [0.1] * 3, 3)
    assert (raised.value.expected, raised.value.got) == (256, 3)
    for k in (0, -1, MAX_K + 1):
        with pytest.raises(SearchQueryError, match=f"1 to {MAX_K}"):
            store.search("documents", QUESTION, k)
    with pytest.raises(SearchQueryError, match="empty"):
        store.search("documents", "  ", 3)
    with pytest.raises(SearchQueryError, match="NaN"):
        store.search("documents", [float("nan")] * 256, 3)
    with pytest.raises(SearchQueryError, match="'nope' is not a column"):
        store.search("documents", QUESTION, 3, filter={"nope": 1})
    with pytest.raises(SearchQueryError, match="filter chunk_index='first'"):
        store.search("documents", QUESTION, 3, filter={"chunk_index": "first"})
    with pytest.raises(TableNotFoundError, match="'missing'"):
        store.search("missing", QUESTION, 3)
    commit("plain", pa.table({"id": [1, 2]}))
    with pytest.raises(SearchError, match="holds no embeddings"):
        store.search("plain", QUESTION, 3)


def test_cli_search_prints_the_top_k(docs: Path) -> None:
    result = CliRunner().invoke(cli, ["search", "documents", QUESTION, "-k", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert [Path(h["source_path"]).name for h in hits][0] == "returns.txt" and len(hits) == 2
    assert set(hits[0]) >= {"chunk_id", "source_path", "text", "score"}
    table = CliRunner().invoke(cli, ["search", "documents", QUESTION, "-k", "1"])
    assert table.exit_code == 0 and "returns.txt" in table.output
    bad = CliRunner().invoke(cli, ["search", "documents", QUESTION, "-k", "0"])
    assert bad.exit_code != 0 and "k must be" in bad.output
