"""Feature views of a project: one asset per view version's offline table and one for its online rows,
with the column lineage from the source table. Wiring only: work is in pipelines/features/."""

from pathlib import Path
from typing import Any

import dagster as dg

from lakebed.assets.metadata import table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.features.materialize import materialize, sync_online
from lakebed.schemas.features import FEATURE_TS, FEATURE_VALID_TO, FeatureView
from lakebed.schemas.project import Project

GROUP = "features"


def online_asset_name(view: FeatureView) -> str:
    return f"online_{view.name}_v{view.version}"


def _column_lineage(view: FeatureView) -> dg.TableColumnLineage:
    """Offline columns from source columns: entities, feature_ts and feature_valid_to (from the event time), and each
    aggregation from the column it aggregates (count of rows reads the event time)."""
    source = dg.AssetKey(view.source.table)
    lineage: dict[str, list[dg.TableColumnDep]] = {
        entity: [dg.TableColumnDep(asset_key=source, column_name=entity)] for entity in view.entities
    }
    lineage[FEATURE_TS] = [dg.TableColumnDep(asset_key=source, column_name=view.event_time)]
    lineage[FEATURE_VALID_TO] = [dg.TableColumnDep(asset_key=source, column_name=view.event_time)]
    for aggregation in view.aggregations:
        column = aggregation.column or view.event_time
        lineage[aggregation.name] = [dg.TableColumnDep(asset_key=source, column_name=column)]
    return dg.TableColumnLineage(deps_by_column=lineage)


def _online_lineage(view: FeatureView) -> dg.TableColumnLineage:
    offline = dg.AssetKey(view.offline_table)
    columns = [*view.entities, FEATURE_TS, *(a.name for a in view.aggregations)]
    return dg.TableColumnLineage(
        deps_by_column={c: [dg.TableColumnDep(asset_key=offline, column_name=c)] for c in columns}
    )


def _offline_asset(view: FeatureView, origin: Path | None) -> dg.AssetsDefinition:
    @dg.asset(
        name=view.offline_table,
        group_name=GROUP,
        code_version=view.definition_hash()[:12],
        deps=[view.source.table],
        kinds={"delta", "polars"},
        description=f"Offline store of feature view {view.name} v{view.version}: {view.description or ''}".strip(),
        metadata={
            "dagster/table_name": view.offline_table,
            "dagster/column_lineage": _column_lineage(view),
            "lakebed/view": view.key,
            **({"lakebed/defined_in": str(origin)} if origin is not None else {}),
        },
    )
    def _asset(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
        config = lakebed.config()
        result = materialize(
            view, config=config, run=lakebed.run_context(context, job=f"features:{view.key}")
        )
        context.log.info(
            f"{view.offline_table}: {result.events} events from raw versions {list(result.raw_versions)}, "
            f"{result.late_events} late, {result.feature_rows} feature rows merged"
        )
        extra: dict[str, Any] = {
            "lakebed/late_events": result.late_events,
            "lakebed/feature_rows_merged": result.feature_rows,
            "lakebed/raw_version": result.raw_version if result.raw_version is not None else -1,
            "lakebed/watermark": str(result.watermark),
            "dagster/column_lineage": _column_lineage(view),
        }
        if Catalog(config).find(view.offline_table) is None:
            return dg.MaterializeResult(metadata=extra)
        metadata, version = table_metadata(view.offline_table, config, **extra)
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return _asset


def _online_asset(view: FeatureView) -> dg.AssetsDefinition:
    @dg.asset(
        name=online_asset_name(view),
        group_name=GROUP,
        code_version=view.definition_hash()[:12],
        deps=[view.offline_table],
        kinds={"sqlite"},
        description=f"Online store rows (latest per entity) of feature view {view.name} v{view.version}.",
        metadata={"dagster/column_lineage": _online_lineage(view), "lakebed/view": view.key},
    )
    def _asset(lakebed: LakebedResource) -> dg.MaterializeResult:
        rows = sync_online(view, config=lakebed.config())
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "lakebed/view": view.key,
                "dagster/column_lineage": _online_lineage(view),
            }
        )

    return _asset


def feature_assets(project: Project) -> list[dg.AssetsDefinition]:
    """The offline and online assets of every feature-view version of the project; each offline asset
    depends on the asset of its source table (a raw stream table or a files table)."""
    return [
        asset
        for key, view in sorted(project.feature_views.items())
        for asset in (_offline_asset(view, project.origins.get(f"view:{key}")), _online_asset(view))
    ]
