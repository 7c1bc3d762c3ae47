"""Streaming: raw stream tables fed from Kafka ("available now" runs) for a project's stream sources, the
offsets sensor, and the maintenance job and schedule for stream and feature tables. Wiring only: work is
in pipelines/."""

import json
from typing import Any

import dagster as dg

from lakebed.assets.metadata import definition_metadata, owners_of, table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.broker import ensure_bootstrap
from lakebed.errors import LakebedError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.maintenance import maintain
from lakebed.pipelines.stream.ingest import ingest_stream
from lakebed.pipelines.stream.kafka import end_offsets
from lakebed.schemas.project import Project, StreamSource

GROUP = "streams"
CODE_VERSION = "1"


def stream_sources(project: Project) -> list[StreamSource]:
    return [s for s in project.sources if isinstance(s, StreamSource)]


def streams(project: Project) -> dict[str, str]:
    """Topic → raw table of every stream source of the project."""
    return {s.topic: s.table for s in stream_sources(project)}


def _raw_stream_asset(project: Project, source: StreamSource) -> dg.AssetsDefinition:
    topic, table = source.topic, source.table
    contract = project.contract_of(table)
    origin = project.origins.get(f"source:{table}")

    @dg.asset(
        name=table,
        group_name=GROUP,
        code_version=CODE_VERSION,
        kinds={"kafka", "delta"},
        owners=owners_of(table, source.owners, origin),
        description=source.description
        or f"Raw events of Kafka topic `{topic}`, ingested exactly once (offsets in the Delta log).",
        metadata={
            **definition_metadata(table, contract),
            "lakebed/topic": topic,
            "lakebed/tags": list(source.tags),
            **({"lakebed/defined_in": str(origin)} if origin is not None else {}),
        },
    )
    def _asset(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
        config = lakebed.config()
        result = ingest_stream(
            topic,
            table,
            until_caught_up=True,
            group=source.group,
            contract=contract,
            run=lakebed.run_context(context, job=f"stream:{table}"),
            config=config,
            bootstrap=ensure_bootstrap(config),
        )
        context.log.info(
            f"{table}: {result.records} records, {result.dead_letters} dead letters, "
            f"{result.quarantined} quarantined, "
            f"{result.skipped} already in Delta, offsets {result.offsets}"
        )
        extra: dict[str, Any] = {
            "lakebed/records": result.records,
            "lakebed/dead_letters": result.dead_letters,
            "lakebed/quarantined_rows": result.quarantined,
            "lakebed/offsets": dg.MetadataValue.json({str(p): o for p, o in result.offsets.items()}),
        }
        if Catalog(config).find(table) is None:  # the topic has had no records yet
            return dg.MaterializeResult(metadata=extra)
        metadata, version = table_metadata(table, config, **extra)
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return _asset


def stream_assets(project: Project) -> list[dg.AssetsDefinition]:
    """An asset per raw stream table (one per table, from its first stream source)."""
    first = {s.table: s for s in reversed(stream_sources(project))}
    return [_raw_stream_asset(project, s) for s in stream_sources(project) if first[s.table] is s]


def kafka_offsets_sensor(project: Project) -> dg.SensorDefinition:
    """Launches an "available now" run of the raw tables whose topics' end offsets moved."""
    topics = streams(project)

    @dg.sensor(
        name="kafka_offsets_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=dg.AssetSelection.assets(*topics.values()).downstream(),
        description="Launches an 'available now' run when a topic's end offsets move (cursor = end offsets).",
    )
    def _sensor(context: dg.SensorEvaluationContext, lakebed: LakebedResource) -> dg.SensorResult:
        config = lakebed.config()
        try:
            bootstrap = ensure_bootstrap(config)
            current = {t: {str(p): o for p, o in end_offsets(bootstrap, t).items()} for t in topics}
        except LakebedError as exc:
            return dg.SensorResult(skip_reason=dg.SkipReason(str(exc)))
        previous = json.loads(context.cursor) if context.cursor else {}
        moved = sorted(t for t in topics if current.get(t) and current[t] != previous.get(t))
        requests = (
            [
                dg.RunRequest(
                    run_key=json.dumps({t: current[t] for t in moved}, sort_keys=True),
                    asset_selection=[dg.AssetKey(topics[t]) for t in moved],
                    tags={"lakebed/topics": ",".join(moved)},
                )
            ]
            if moved
            else []
        )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))

    return _sensor


def stream_maintenance(project: Project) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """The maintenance job of the project's stream and feature tables, and its hourly schedule."""
    tables = set(streams(project).values()) | {v.offline_table for v in project.feature_views.values()}

    @dg.op(
        name="maintain_stream_tables",
        description="Compact, checkpoint and vacuum every stream and feature table.",
    )
    def _maintain(context: dg.OpExecutionContext, lakebed: LakebedResource) -> None:
        config = lakebed.config()
        for entry in Catalog(config).list(kind="table"):
            if entry.name in tables:
                outcome = maintain(
                    entry.name, run=lakebed.run_context(context, job="maintenance"), config=config
                )
                context.log.info(
                    f"{entry.name}: {outcome.files_removed} files compacted into {outcome.files_added}, "
                    f"checkpoint at version {outcome.checkpoint_version}, {outcome.vacuumed_files} files vacuumed"
                )

    @dg.job(
        name="stream_maintenance_job",
        description="Table maintenance for stream and feature tables (delta-rs has no auto-compaction).",
    )
    def _job() -> None:
        _maintain()

    schedule = dg.ScheduleDefinition(
        name="stream_maintenance_schedule",
        job=_job,
        cron_schedule="17 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly compaction, checkpoint and vacuum of stream and feature tables.",
    )
    return _job, schedule
