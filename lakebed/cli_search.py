"""Embedding commands of the ``lakebed`` CLI: ``embed`` (documents into ``<table>__chunks``) and ``search``.

Heavy layers (numpy, the embedder, usearch) are imported inside the commands, so ``lakebed --help`` stays
fast.
"""

from __future__ import annotations

import click

from lakebed.cli_output import OutputFormat, emit, emit_arrow, format_option
from lakebed.config import get_config


@click.command("search")
@click.argument("table")
@click.argument("query")
@click.option("-k", "k", type=int, default=5, show_default=True, help="How many rows to return (1 to 1000).")
@click.option("--version", "version", type=int, help="Search this Delta version of the table.")
@click.option("--as-of", "as_of", help="Search the version current at this time (ISO 8601).")
@click.option("--exact", is_flag=True, help="Exact search over the version (default: its HNSW index).")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="COLUMN=VALUE",
    help="Keep rows whose column equals the value (repeat for more columns; searches exactly).",
)
@format_option
def search_command(
    table: str,
    query: str,
    k: int,
    version: int | None,
    as_of: str | None,
    exact: bool,
    filters: tuple[str, ...],
    fmt: OutputFormat,
) -> None:
    """The K rows of TABLE nearest QUERY, a text embedded with the table's recorded embedder.

    TABLE is an embedding table or a documents table (its TABLE__chunks is searched). Rows come best
    first: the table's key columns, the chunk text, score (cosine similarity) and distance."""
    from lakebed.pipelines.embeddings.search import search

    wanted: dict[str, str] = {}
    for item in filters:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise click.BadParameter(f"{item!r} is not COLUMN=VALUE", param_hint="--filter")
        wanted[column] = value
    hits = search(
        table, query, k, filter=wanted or None, version=version, as_of=as_of, exact=exact, config=get_config()
    )
    title = f"{hits.schema.metadata[b'lakebed.table'].decode()} v{hits.schema.metadata[b'lakebed.version'].decode()}"
    emit_arrow(hits, fmt, title=title)


@click.command("embed")
@click.argument("source", default="documents")
@click.option("--table", "table", help="The embedding table (default: SOURCE__chunks).")
@click.option("--embedder", default="wordllama", show_default=True, help="A registered embedder.")
@click.option("--chunk-size", type=int, default=256, show_default=True, help="Tokens per chunk.")
@click.option("--overlap", type=int, default=32, show_default=True, help="Tokens shared by neighbours.")
@format_option
def embed_command(
    source: str, table: str | None, embedder: str, chunk_size: int, overlap: int, fmt: OutputFormat
) -> None:
    """Chunk and embed the text of unstructured table SOURCE; unchanged documents are skipped."""
    from lakebed.pipelines.embeddings.chunking import ChunkSettings
    from lakebed.pipelines.embeddings.step import embed_documents

    result = embed_documents(
        source,
        table=table,
        embedder=embedder,
        chunking=ChunkSettings(size=chunk_size, overlap=overlap),
        config=get_config(),
    )
    row = {
        "table": result.table,
        "version": result.version,
        "source": result.source,
        "source_version": result.source_version,
        "embedded_documents": result.embedded_documents,
        "unchanged_documents": result.unchanged_documents,
        "skipped_documents": result.skipped_documents,
        "chunks": result.chunks,
        "replaced_chunks": result.replaced_chunks,
        "embedder": result.embedder.name,
        "dimension": result.embedder.dimension,
    }
    emit([row], list(row), fmt)


def register(group: click.Group) -> None:
    group.add_command(search_command)
    group.add_command(embed_command)
