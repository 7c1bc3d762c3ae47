"""Ingest one source of a project (schemas/project.py) into its table: the work behind a source's asset."""

from __future__ import annotations

from pathlib import Path

from lakebed.config import LakebedConfig
from lakebed.errors import LakebedError
from lakebed.pipelines.delta import RunContext
from lakebed.pipelines.ingest import IngestResult, ingest_files, resolve_sources
from lakebed.pipelines.unstructured import UnstructuredResult, ingest_unstructured
from lakebed.schemas.project import FilesSource, Project, UnstructuredSource


def ingest_source(
    project: Project,
    source: FilesSource | UnstructuredSource,
    *,
    run: RunContext | None = None,
    config: LakebedConfig | None = None,
) -> IngestResult | UnstructuredResult:
    """Ingest ``source`` as its YAML says: its path resolved against the project, its table's contract,
    format, partitioning, bad-row and change policies. Files already ingested unchanged are skipped."""
    if isinstance(source, UnstructuredSource):
        return ingest_unstructured(
            [project.resolve(p) for p in source.paths], table=source.table, run=run, config=config
        )
    return ingest_files(
        project.resolve(source.path),
        table=source.table,
        format=source.format,
        contract=project.contract_of(source.table),
        partition_by=source.partition_by,
        on_bad_rows=source.on_bad_rows,
        on_change=source.on_change,
        encoding=source.encoding,
        run=run,
        config=config,
    )


def source_files(project: Project, source: FilesSource) -> list[Path]:
    """The files ``source`` currently matches (none when its path does not exist yet)."""
    try:
        return resolve_sources(project.resolve(source.path), explicit_format=source.format)
    except LakebedError:
        return []
