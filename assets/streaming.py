"""Streaming: raw event tables fed from Kafka ("available now" runs), the offsets sensor, and the
maintenance schedule for stream tables. Wiring only: work is in pipelines/."""

import json
from typing import Any

import dagster as dg

from lakebed.assets.metadata import table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.broker import ensure_bootstrap
from lakebed.errors import LakebedError
from lakebed.examples import SHOP
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.maintenance import maintain
from lakebed.pipelines.stream.ingest import ingest_stream
from lakebed.pipelines.stream.kafka import end_offsets
from lakebed.schemas.contract import load_contracts
from lakebed.schemas.features import load_feature_views

GROUP = "streaming"
CODE_VERSION = "1"

# Every topic a feature view reads becomes a raw event table: topic → table.
STREAMS: dict[str, str] = {
    view.source.topic: view.source.table
    for view in load_feature_views(SHOP / "feature_views").values()
    if view.source.topic is not None
}


def _raw_events_asset(topic: str, table: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=table,
        group_name=GROUP,
        code_version=CODE_VERSION,
        kinds={"kafka", "delta"},
        description=f"Raw events of Kafka topic `{topic}`, ingested exactly once (offsets in the Delta log).",
    )
    def _asset(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
        config = lakebed.config()
        result = ingest_stream(
            topic,
            table,
            until_caught_up=True,
            contract=load_contracts(SHOP / "contracts").get(table),
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


RAW_EVENT_ASSETS = [_raw_events_asset(topic, table) for topic, table in sorted(STREAMS.items())]


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=dg.AssetSelection.assets(*STREAMS.values()).downstream(),
    description="Launches an 'available now' run when a topic's end offsets move (cursor = end offsets).",
)
def kafka_offsets_sensor(context: dg.SensorEvaluationContext, lakebed: LakebedResource) -> dg.SensorResult:
    config = lakebed.config()
    try:
        bootstrap = ensure_bootstrap(config)
        current = {topic: {str(p): o for p, o in end_offsets(bootstrap, topic).items()} for topic in STREAMS}
    except LakebedError as exc:
        return dg.SensorResult(skip_reason=dg.SkipReason(str(exc)))
    previous = json.loads(context.cursor) if context.cursor else {}
    moved = sorted(topic for topic in STREAMS if current.get(topic) and current[topic] != previous.get(topic))
    requests = (
        [
            dg.RunRequest(
                run_key=json.dumps({t: current[t] for t in moved}, sort_keys=True),
                asset_selection=[dg.AssetKey(STREAMS[t]) for t in moved],
                tags={"lakebed/topics": ",".join(moved)},
            )
        ]
        if moved
        else []
    )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))


@dg.op(description="Compact, checkpoint and vacuum every stream and feature table.")
def maintain_stream_tables(context: dg.OpExecutionContext, lakebed: LakebedResource) -> None:
    config = lakebed.config()
    for entry in Catalog(config).list(kind="table"):
        if entry.name in STREAMS.values() or entry.name.startswith("fv_"):
            outcome = maintain(entry.name, run=lakebed.run_context(context, job="maintenance"), config=config)
            context.log.info(
                f"{entry.name}: {outcome.files_removed} files compacted into {outcome.files_added}, "
                f"checkpoint at version {outcome.checkpoint_version}, {outcome.vacuumed_files} files vacuumed"
            )


@dg.job(description="Table maintenance for stream tables (delta-rs has no auto-compaction).")
def stream_maintenance_job() -> None:
    maintain_stream_tables()


stream_maintenance_schedule = dg.ScheduleDefinition(
    name="stream_maintenance_schedule",
    job=stream_maintenance_job,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly compaction, checkpoint and vacuum of stream and feature tables.",
)
