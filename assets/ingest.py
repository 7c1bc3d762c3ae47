"""Source assets of a project: one asset per table its files and unstructured sources write, a sensor per
files source with ``run.sensor: true``, a schedule per source with ``run.schedule``; and the generic
landing-folder sensor. Wiring only: work is in pipelines/."""

import hashlib
import json
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from lakebed.assets.metadata import definition_metadata, owners_of, table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.pipelines.ingest import IngestResult, ingest_files, resolve_sources
from lakebed.pipelines.sources import ingest_source, source_files
from lakebed.schemas.project import FilesSource, Project, UnstructuredSource

GROUP = "sources"
CODE_VERSION = "1"


def _batch_sources(project: Project) -> dict[str, list[FilesSource | UnstructuredSource]]:
    """Files and unstructured sources by table, in the order the project lists them."""
    tables: dict[str, list[FilesSource | UnstructuredSource]] = {}
    for source in project.sources:
        if isinstance(source, FilesSource | UnstructuredSource):
            tables.setdefault(source.table, []).append(source)
    return tables


def _description(sources: list[Any]) -> str | None:
    texts = list(dict.fromkeys(s.description for s in sources if s.description))
    return " ".join(texts) or None


def _source_asset(
    project: Project, table: str, sources: list[FilesSource | UnstructuredSource]
) -> dg.AssetsDefinition:
    files = any(isinstance(s, FilesSource) for s in sources)
    origin = project.origins.get(f"source:{table}")

    @dg.asset(
        name=table,
        group_name=GROUP,
        code_version=CODE_VERSION,
        description=_description(sources),
        owners=owners_of(table, (o for s in sources for o in s.owners), origin),
        kinds={"delta", "polars"} if files else {"delta"},
        metadata={
            **definition_metadata(table, project.contract_of(table)),
            "lakebed/sources": [
                s.path if isinstance(s, FilesSource) else ", ".join(s.paths) for s in sources
            ],
            "lakebed/tags": list(dict.fromkeys(t for s in sources for t in s.tags)),
            **({"lakebed/defined_in": str(origin)} if origin is not None else {}),
        },
    )
    def _asset(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
        config = lakebed.config()
        extra: dict[str, Any] = {}
        for source in sources:
            result = ingest_source(
                project, source, run=lakebed.run_context(context, job=f"dagster:{table}"), config=config
            )
            if isinstance(result, IngestResult):
                context.log.info(
                    f"{table}: {result.rows} rows from {len(result.ingested)} file(s), "
                    f"{len(result.skipped)} unchanged"
                )
                extra["lakebed/files_ingested"] = extra.get("lakebed/files_ingested", 0) + len(
                    result.ingested
                )
                extra["lakebed/rejected_rows"] = extra.get("lakebed/rejected_rows", 0) + result.rejected
                extra["lakebed/quarantined_rows"] = (
                    extra.get("lakebed/quarantined_rows", 0) + result.quarantined
                )
                extra["lakebed/run_id"] = result.run_id
            else:
                context.log.info(f"{table}: {result.files_seen} file(s) seen, {result.rejected} rejected")
                extra["lakebed/files_seen"] = extra.get("lakebed/files_seen", 0) + result.files_seen
                extra["lakebed/rejected_files"] = extra.get("lakebed/rejected_files", 0) + result.rejected
        metadata, version = table_metadata(table, config, **extra)
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return _asset


def source_assets(project: Project) -> list[dg.AssetsDefinition]:
    """An asset per table written by the project's files and unstructured sources."""
    return [_source_asset(project, table, sources) for table, sources in _batch_sources(project).items()]


def _names(suffix: str, sources: list[FilesSource] | list[FilesSource | UnstructuredSource]) -> list[str]:
    """``<table>_<suffix>``, numbered when several sources of one table need one."""
    counts: dict[str, int] = {}
    for source in sources:
        counts[source.table] = counts.get(source.table, 0) + 1
    seen: dict[str, int] = {}
    names = []
    for source in sources:
        seen[source.table] = seen.get(source.table, 0) + 1
        number = f"_{seen[source.table]}" if counts[source.table] > 1 else ""
        names.append(f"{source.table}_{suffix}{number}")
    return names


def _files_sensor(project: Project, source: FilesSource, name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[dg.AssetKey(source.table)],
        description=f"Watches {source.path} for new or changed files and materialises {source.table}.",
    )
    def _sensor(context: dg.SensorEvaluationContext, lakebed: LakebedResource) -> dg.SensorResult:
        seen: dict[str, list[float | str]] = json.loads(context.cursor) if context.cursor else {}
        fresh = []
        for listed in source_files(project, source, config=lakebed.config()):
            signature = [listed.size, listed.version]  # an object's ETag stands for a file's mtime
            if seen.get(listed.name) != signature:
                fresh.append(listed.name)
                seen[listed.name] = signature
        if not fresh:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no new or changed files in {source.path}"), cursor=context.cursor
            )
        key = hashlib.sha256(
            json.dumps([source.table, *fresh, *(seen[f] for f in fresh)]).encode()
        ).hexdigest()
        request = dg.RunRequest(
            run_key=key,
            asset_selection=[dg.AssetKey(source.table)],
            tags={"lakebed/table": source.table, "lakebed/files": str(len(fresh))},
        )
        return dg.SensorResult(run_requests=[request], cursor=json.dumps(seen))

    return _sensor


def source_sensors(project: Project) -> list[dg.SensorDefinition]:
    """A sensor per files source with ``run.sensor: true``: a run of its table's asset when files land."""
    watched = [s for s in project.sources if isinstance(s, FilesSource) and s.run.sensor]
    return [
        _files_sensor(project, source, name)
        for source, name in zip(watched, _names("files_sensor", watched), strict=True)
    ]


def source_jobs_and_schedules(
    project: Project,
) -> tuple[list[UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    """A job materialising each table with a scheduled source, and a schedule per ``run.schedule``."""
    timed = [s for s in project.sources if isinstance(s, FilesSource | UnstructuredSource) and s.run.schedule]
    jobs: dict[str, UnresolvedAssetJobDefinition] = {}
    for source in timed:
        jobs.setdefault(
            source.table,
            dg.define_asset_job(
                f"{source.table}_job",
                selection=[dg.AssetKey(source.table)],
                description=f"Materialise {source.table} from its sources.",
            ),
        )
    schedules = [
        dg.ScheduleDefinition(
            name=name,
            job=jobs[source.table],
            cron_schedule=source.run.schedule or "",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"Ingest {source.table} on the cron schedule {source.run.schedule!r} of its source.",
        )
        for source, name in zip(timed, _names("schedule", timed), strict=True)
    ]
    return list(jobs.values()), schedules


def source_schedules(project: Project) -> list[dg.ScheduleDefinition]:
    """A schedule per source with ``run.schedule`` (each launches its table's job)."""
    return source_jobs_and_schedules(project)[1]


# The landing folder ----------------------------------------------------------------------------------
class LandingIngestConfig(dg.Config):
    table: str
    files: list[str]


@dg.op(description="Ingest new files from the landing folder into their table.")
def ingest_landed_files(
    context: dg.OpExecutionContext, config: LandingIngestConfig, lakebed: LakebedResource
) -> None:
    result = ingest_files(
        config.files,
        table=config.table,
        on_bad_rows="reject",
        run=lakebed.run_context(context, job=f"landing:{config.table}"),
        config=lakebed.config(),
    )
    context.log.info(
        f"{config.table}: {result.rows} rows from {len(result.ingested)} file(s), "
        f"{result.rejected} bad record(s) rejected, version {result.version}"
    )
    if result.version is not None:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=config.table, metadata=table_metadata(config.table, lakebed.config())[0]
            )
        )


@dg.job(description="Ingest files dropped into the landing folder (launched by landing_sensor).")
def landing_ingest_job() -> None:
    ingest_landed_files()


@dg.sensor(
    job=landing_ingest_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing folder (<landing_dir>/<table>/) for new or changed CSV, JSON and "
    "Parquet files.",
)
def landing_sensor(context: dg.SensorEvaluationContext, lakebed: LakebedResource) -> dg.SensorResult:
    root = lakebed.config().landing_root
    seen: dict[str, list[float]] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.exists() else []:
        try:
            files = resolve_sources(folder)
        except Exception:
            continue  # empty folder or nothing ingestible yet
        fresh = []
        for path in files:
            stat = path.stat()
            signature = [stat.st_size, stat.st_mtime]
            if seen.get(str(path)) != signature:
                fresh.append(str(path))
                seen[str(path)] = signature
        if fresh:
            key = hashlib.sha256(
                json.dumps([folder.name, *fresh, *(seen[f] for f in fresh)]).encode()
            ).hexdigest()
            requests.append(
                dg.RunRequest(
                    run_key=key,
                    tags={"lakebed/table": folder.name},
                    run_config={
                        "ops": {"ingest_landed_files": {"config": {"table": folder.name, "files": fresh}}}
                    },
                )
            )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen))
