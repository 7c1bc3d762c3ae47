"""Assets for the shipped sample data and the landing-folder sensor. Wiring only: work is in pipelines/."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from lakebed.assets.metadata import table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.examples import SHOP
from lakebed.pipelines.ingest import ingest_files, resolve_sources
from lakebed.pipelines.unstructured import ingest_unstructured
from lakebed.samples import MEDIA, STRUCTURED
from lakebed.schemas.contract import TableContract

GROUP = "sample_data"
CODE_VERSION = "1"


def _structured(
    name: str,
    source: Path,
    description: str,
    *,
    contract: TableContract | None = None,
    partition_by: str | None = None,
    deps: list[str] | None = None,
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        group_name=GROUP,
        code_version=CODE_VERSION,
        description=description,
        kinds={"delta", "polars"},
        deps=deps or [],
    )
    def _asset(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
        config = lakebed.config()
        result = ingest_files(
            source,
            table=name,
            contract=contract,
            partition_by=partition_by,
            on_bad_rows="reject",
            run=lakebed.run_context(context, job=f"dagster:{name}"),
            config=config,
        )
        context.log.info(
            f"{name}: {result.rows} rows from {len(result.ingested)} file(s), {len(result.skipped)} unchanged"
        )
        metadata, version = table_metadata(
            name,
            config,
            **{
                "lakebed/files_ingested": len(result.ingested),
                "lakebed/rejected_rows": result.rejected,
                "lakebed/quarantined_rows": result.quarantined,
                "lakebed/run_id": result.run_id,
            },
        )
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return _asset


customers = _structured(
    "customers", STRUCTURED / "customers.csv", "Customers of the shop (CSV, types inferred)."
)
orders = _structured(
    "orders",
    STRUCTURED / "orders",
    "Order lines from monthly CSV exports (typed by the contract contracts/orders.yaml).",
    contract=TableContract.from_yaml(SHOP / "contracts" / "orders.yaml"),
    deps=["customers", "products"],
)
products = _structured("products", STRUCTURED / "products.jsonl", "Product catalogue (JSON lines).")
web_events = _structured(
    "web_events",
    STRUCTURED / "web_events.parquet",
    "Clickstream events (Parquet), partitioned by day; older days move to the cold tier.",
    contract=TableContract.from_yaml(SHOP / "contracts" / "web_events.yaml"),
    partition_by="event_time",
    deps=["customers"],
)


@dg.asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    kinds={"delta"},
    description="Documents, images and audio: one row per file, text and media metadata extracted.",
)
def documents(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
    config = lakebed.config()
    result = ingest_unstructured(
        MEDIA, table="documents", run=lakebed.run_context(context, job="dagster:documents"), config=config
    )
    metadata, version = table_metadata(
        "documents",
        config,
        **{"lakebed/files_seen": result.files_seen, "lakebed/rejected_files": result.rejected},
    )
    return dg.MaterializeResult(metadata=metadata, data_version=version)


SAMPLE_ASSETS = [customers, products, orders, web_events, documents]  # upstream first


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
    description="Watches LAKEBED_LANDING_DIR/<table>/ for new or changed CSV, JSON and Parquet files.",
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
