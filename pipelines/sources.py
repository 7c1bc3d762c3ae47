"""Ingest one source of a project (schemas/project.py) into its table: the work behind a source's asset."""

from __future__ import annotations

from dataclasses import dataclass

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import SourceNotFoundError
from lakebed.pipelines.delta import RunContext
from lakebed.pipelines.ingest import IngestResult, ingest_files, resolve_sources
from lakebed.pipelines.object_sources import fetch_objects, is_object_url, list_objects
from lakebed.pipelines.unstructured import UnstructuredResult, ingest_unstructured
from lakebed.schemas.project import FilesSource, Project, UnstructuredSource


@dataclass(frozen=True)
class ListedFile:
    """One file a source matches now: its name (a path or an ``s3://`` URL) and what changes with its
    content (size, and a local file's mtime or an object's ETag)."""

    name: str
    size: int
    version: float | str


def ingest_source(
    project: Project,
    source: FilesSource | UnstructuredSource,
    *,
    run: RunContext | None = None,
    config: LakebedConfig | None = None,
) -> IngestResult | UnstructuredResult:
    """Ingest ``source`` as its YAML says: its path resolved against the project, its table's contract,
    format, partitioning, bad-row and change policies. Files already ingested unchanged are skipped; an
    ``s3://`` path's objects are downloaded (when new or changed) and ingested under their URLs."""
    if isinstance(source, UnstructuredSource):
        return ingest_unstructured(
            [project.resolve(p) for p in source.paths], table=source.table, run=run, config=config
        )
    path = project.resolve(source.path)
    config = config or get_config()
    return ingest_files(
        fetch_objects(path, explicit_format=source.format, config=config) if is_object_url(path) else path,
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


def source_files(
    project: Project, source: FilesSource, *, config: LakebedConfig | None = None
) -> list[ListedFile]:
    """The files ``source`` currently matches (none when its path, or its bucket, does not exist yet); an
    object store is only listed. A store that cannot be reached raises."""
    path = project.resolve(source.path)
    try:
        if is_object_url(path):
            objects = list_objects(path, explicit_format=source.format, config=config or get_config())
            return [ListedFile(o.url, o.size, o.etag) for o in objects]
        files = resolve_sources(path, explicit_format=source.format)
    except SourceNotFoundError:
        return []
    return [ListedFile(str(f), (stat := f.stat()).st_size, stat.st_mtime) for f in files]
