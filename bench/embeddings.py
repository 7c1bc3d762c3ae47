"""Embedding benchmarks: lakebed's embed step against the bare embedder, and vector search.

``embed``: 300 generated documents of about 1,500 words (``--quick``: 15) ingested once (untimed) into an
unstructured table. Alternating rounds of the baseline, WordLlama's own ``embed`` called on the very chunk
texts lakebed made (read once from the chunks table), and lakebed's ``embed_documents`` into a fresh chunks
table (read the documents from Delta, tokenize, chunk, embed, write the vectors through the write path
with lineage). Each pair's ratio is chunks/s(lakebed) / chunks/s(bare embedder); target: median ≥ 0.8.

``vector_search``: 100,000 random 256-dimensional vectors (``--quick``: 5,000) written as an embedding
table, searched for 10 neighbours by 1,000 random queries. The vectors and queries are drawn from one random
mixture of 1,000 Gaussian clusters (centres N(0, 1), spread 0.5 per dimension), the shape real embeddings
have. (Independent Gaussian vectors are no test of an index: in 256 dimensions all their neighbours are
nearly equidistant, and HNSW at M=16, ef=128 finds only ~20% of the true top 10 there; measured on this
machine.) Checked: the exact search (``exact=True``) returns the same ids as brute-force numpy, in the same
order, for every query, except where two scores are equal to within 1e-6 (the two matrix-vector products
may round the last bit differently, and lakebed breaks ties by row order): such queries are counted and
printed, any other difference is an error; approximate recall@10 against exact must be ≥ 0.95. Timed in alternating rounds: the 1,000 queries
one at a time through brute-force numpy (``argpartition`` over ``vectors @ q``) and through
``FeatureStore.search`` at the pinned version (the HNSW index, built once beforehand: its build time is
printed). Each pair's ratio is queries/s(lakebed approximate) / queries/s(numpy); target: median ≥ 20.
"""

from __future__ import annotations

import functools
import random
from typing import TYPE_CHECKING

from bench.common import BenchOptions, RoundTimes, fresh_dir, lakebed_home, log, remove, report, timed

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

DOCUMENTS = 300
WORDS_PER_DOCUMENT = 1500
EMBED_TARGET = 0.8
VECTORS = 100_000
DIMENSION = 256
CLUSTERS = 1_000
SPREAD = 0.5
QUERIES = 1000
K = 10
RECALL_TARGET = 0.95
QPS_TARGET = 20.0
TIE = 1e-6
_WORDS = [
    "the",
    "order",
    "pipeline",
    "table",
    "schema",
    "commit",
    "version",
    "customer",
    "espresso",
    "grinder",
    "kettle",
    "beans",
    "shipment",
    "invoice",
    "warehouse",
    "delivery",
    "return",
    "refund",
    "loyalty",
    "region",
    "quarterly",
    "report",
    "revenue",
    "margin",
    "forecast",
    "incident",
    "latency",
    "partition",
    "snapshot",
    "merge",
    "contract",
    "column",
    "lineage",
    "sensor",
    "folder",
    "checksum",
    "retry",
    "review",
    "agreed",
    "decided",
    "next",
    "week",
    "before",
    "because",
    "however",
    "therefore",
    "roughly",
    "new",
    "old",
    "large",
    "small",
    "slow",
    "fast",
    "stable",
    "open",
]


def _document(rng: random.Random) -> str:
    sentences = []
    words = 0
    while words < WORDS_PER_DOCUMENT:
        picked = rng.choices(_WORDS, k=rng.randint(6, 18))
        sentences.append(" ".join(picked).capitalize() + ".")
        words += len(picked)
    return " ".join(sentences)


def run_embed(opts: BenchOptions) -> str:
    from lakebed.pipelines.embeddings.embedder import get_embedder
    from lakebed.pipelines.embeddings.step import embed_documents
    from lakebed.pipelines.read import read_table
    from lakebed.pipelines.unstructured import ingest_unstructured

    count = opts.scaled(DOCUMENTS)
    log(
        f"embed{opts.label}: lakebed's embed step over {count} documents vs WordLlama's embed on the same chunks"
    )
    folder = fresh_dir(opts.workdir / "embed_docs")
    rng = random.Random(7)
    for index in range(count):
        (folder / f"doc-{index:04d}.txt").write_text(_document(rng))
    with lakebed_home(opts.workdir / "embed_home") as config:
        ingest_unstructured(folder, config=config)
        embedder = get_embedder()
        warm = embed_documents("documents", table="warmup_chunks", config=config)  # untimed warm-up
        texts = read_table("warmup_chunks", config=config).column("text").to_pylist()
        embedder.embed(texts[:64])
        log(f"  {warm.chunks:,} chunks of up to 256 tokens (overlap 32) from {count} documents")
        times = RoundTimes("embed", "chunks/s", "bare WordLlama embed", EMBED_TARGET, opts.quick)
        for round_no in range(1, opts.rounds + 1):
            seconds, vectors = timed(lambda: embedder.embed(texts))
            times.record("baseline", round_no, seconds, f"embedder.embed: {len(vectors):,} chunks")
            seconds, result = timed(
                functools.partial(embed_documents, "documents", table=f"chunks_{round_no}", config=config)
            )
            if result.chunks != len(texts):
                raise RuntimeError(f"lakebed made {result.chunks} chunks, the warm-up {len(texts)}")
            times.record(
                "lakebed", round_no, seconds, f"embed_documents: {result.chunks:,} chunks, v{result.version}"
            )
        line = times.summary(len(texts))
    remove(folder)
    return line


def _mixture(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    import numpy as np

    picked = centres[rng.integers(0, len(centres), count)]
    return (picked + SPREAD * rng.standard_normal(picked.shape, dtype=np.float32)).astype(np.float32)


def _compare_exact(
    exact_hits: list[pa.Table],
    reference: list[np.ndarray],
    normalised: np.ndarray,
    queries: np.ndarray,
    ids: list[str],
) -> tuple[int, int]:
    """How many exact answers equal numpy's ids exactly, and how many differ only among scores equal to
    within ``TIE`` (a different BLAS blocking rounds the last bit differently); anything else raises."""
    import numpy as np

    identical = tied = 0
    for hits, found, query in zip(exact_hits, reference, queries, strict=True):
        ours, theirs = hits.column("id").to_pylist(), [ids[i] for i in found]
        if ours == theirs:
            identical += 1
            continue
        q = query / np.linalg.norm(query)
        expected = (normalised[found] @ q).astype(np.float32)
        if not np.allclose(hits.column("score").to_numpy(), expected, rtol=0, atol=TIE):
            raise RuntimeError(f"exact search differs from numpy: {ours} vs {theirs}")
        tied += 1
    return identical, tied


def run_vector_search(opts: BenchOptions) -> str:
    import numpy as np
    import pyarrow as pa

    from lakebed import FeatureStore
    from lakebed.pipelines.delta import commit
    from lakebed.pipelines.embeddings.embedder import EmbedderInfo
    from lakebed.pipelines.embeddings.search import open_searcher
    from lakebed.pipelines.embeddings.spec import METADATA_KEY, EmbeddingSpec

    count = opts.scaled(VECTORS)
    log(f"vector_search{opts.label}: {count:,} vectors of {DIMENSION} dims, {QUERIES} queries, k={K}")
    rng = np.random.default_rng(16)
    centres = rng.standard_normal((CLUSTERS, DIMENSION), dtype=np.float32)
    vectors = _mixture(rng, centres, count)
    queries = _mixture(rng, centres, QUERIES)
    spec = EmbeddingSpec(
        column="embedding",
        embedder=EmbedderInfo("random-mixture", DIMENSION, "sha256:none", 0),
        keys=("id",),
    )
    ids = [f"v{i:07d}" for i in range(count)]  # sorts as generated: index key i is row i
    flat = pa.array(vectors.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, (count + 1) * DIMENSION, DIMENSION, dtype=np.int32))
    data = pa.table({"id": ids, "embedding": pa.ListArray.from_arrays(offsets, flat)})
    with lakebed_home(opts.workdir / "search_home") as config:
        version = commit("vectors", data, metadata={METADATA_KEY: spec.to_json()}, config=config).version
        seconds, searcher = timed(lambda: open_searcher("vectors", version=version, config=config))
        log(f"  loaded version {version} in {seconds:.2f} s")
        seconds, _ = timed(searcher.index)
        log(f"  HNSW index built in {seconds:.1f} s ({searcher.index_file.size_bytes / 2**20:.0f} MiB)")
        store = FeatureStore(config)
        seconds, _ = timed(lambda: store.search("vectors", queries[0], K, version=version))
        log(f"  FeatureStore: version and index loaded from the cache file in {seconds:.2f} s")
        normalised = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        def brute_force() -> list[np.ndarray]:
            found = []
            for query in queries:
                q = query / np.linalg.norm(query)
                scores = normalised @ q
                best = np.argpartition(-scores, K - 1)[:K]
                found.append(best[np.argsort(-scores[best], kind="stable")])
            return found

        def approximate() -> list[list[str]]:
            return [store.search("vectors", q, K, version=version).column("id").to_pylist() for q in queries]

        exact_hits = [store.search("vectors", q, K, version=version, exact=True) for q in queries]
        exact = [hits.column("id").to_pylist() for hits in exact_hits]
        identical, tied = _compare_exact(exact_hits, brute_force(), normalised, queries, ids)
        log(
            f"  exact search vs numpy: {identical} of {QUERIES} queries identical, {tied} differ only in the "
            f"order of scores equal to within {TIE:g} (float32 rounding of one BLAS product vs another)"
        )
        found = approximate()
        recall = float(np.mean([len(set(a) & set(e)) / K for a, e in zip(found, exact, strict=True)]))
        log(f"  approximate recall@{K} against exact: {recall:.4f}")
        times = RoundTimes("vector_search", "queries/s", "brute-force numpy", QPS_TARGET, opts.quick)
        for round_no in range(1, opts.rounds + 1):
            seconds, _ = timed(brute_force)
            times.record("baseline", round_no, seconds, f"numpy: {QUERIES / seconds:,.0f} queries/s")
            seconds, _ = timed(approximate)
            times.record(
                "lakebed", round_no, seconds, f"FeatureStore.search: {QUERIES / seconds:,.0f} queries/s"
            )
        recall_line = report(
            "vector_search_recall",
            [recall],
            target=RECALL_TARGET,
            unit="recall@10",
            detail=f"approximate vs exact over {QUERIES} queries, {count:,} vectors",
            quick=opts.quick,
        )
        return "\n".join([times.summary(QUERIES), recall_line])
