"""Embedding assets of a project: one per unstructured source with ``embed:``, its chunks table (and the
table version's HNSW index), downstream of the documents asset. Wiring only: work is in pipelines/."""

from typing import Any

import dagster as dg

from lakebed.assets.metadata import table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.pipelines.embeddings.search import build_index
from lakebed.pipelines.embeddings.step import embed_source
from lakebed.schemas.project import Project, UnstructuredSource

GROUP = "embeddings"
CODE_VERSION = "1"


def _embedding_asset(source: UnstructuredSource) -> dg.AssetsDefinition:
    assert source.embed is not None and source.embedding_table is not None
    table, spec = source.embedding_table, source.embed

    @dg.asset(
        name=table,
        group_name=GROUP,
        code_version=CODE_VERSION,
        deps=[dg.AssetKey(source.table)],
        description=f"Chunks of {source.table}'s text ({spec.chunk_size} tokens, overlap {spec.overlap}) "
        f"embedded by {spec.embedder}, with an HNSW index per table version.",
        kinds={"delta", "usearch"},
        metadata={"dagster/table_name": table, "lakebed/embedder": spec.embedder},
    )
    def _asset(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
        config = lakebed.config()
        result = embed_source(source, run=lakebed.run_context(context, job=f"dagster:{table}"), config=config)
        context.log.info(
            f"{table}: {result.chunks} chunk(s) from {result.embedded_documents} document(s), "
            f"{result.unchanged_documents} unchanged, {result.skipped_documents} without text"
        )
        searcher = build_index(table, config=config)
        extra: dict[str, Any] = {
            "lakebed/embedder": result.embedder.name,
            "lakebed/dimension": result.embedder.dimension,
            "lakebed/weights_digest": result.embedder.weights_digest,
            "lakebed/vectors": len(searcher.vectors),
            "lakebed/chunks_embedded": result.chunks,
            "lakebed/index_bytes": searcher.index_file.size_bytes,
            "lakebed/index_path": str(searcher.index_file.path),
        }
        metadata, version = table_metadata(table, config, **extra)
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return _asset


def embedding_assets(project: Project) -> list[dg.AssetsDefinition]:
    """An asset per embedding table the project's unstructured sources ask for."""
    tables: dict[str, UnstructuredSource] = {}
    for source in project.sources:
        if isinstance(source, UnstructuredSource) and source.embedding_table is not None:
            tables.setdefault(source.embedding_table, source)
    return [_embedding_asset(source) for source in tables.values()]
