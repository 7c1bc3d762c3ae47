"""Feature views: one asset per view version's offline table and one for its online rows.
Wiring only: work is in pipelines/features/."""

from typing import Any

import dagster as dg

from lakebed.assets.metadata import table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.examples import SHOP
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.features.materialize import materialize, sync_online
from lakebed.schemas.features import FeatureView, load_feature_views

GROUP = "features"
FEATURE_VIEWS = load_feature_views(SHOP / "feature_views")


def _offline_asset(view: FeatureView) -> dg.AssetsDefinition:
    @dg.asset(
        name=view.offline_table,
        group_name=GROUP,
        code_version=view.definition_hash()[:12],
        deps=[view.source.table],
        kinds={"delta", "polars"},
        description=f"Offline store of feature view {view.name} v{view.version}: {view.description or ''}".strip(),
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
        }
        if Catalog(config).find(view.offline_table) is None:
            return dg.MaterializeResult(metadata=extra)
        metadata, version = table_metadata(view.offline_table, config, **extra)
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return _asset


def _online_asset(view: FeatureView) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"online_{view.name}_v{view.version}",
        group_name=GROUP,
        code_version=view.definition_hash()[:12],
        deps=[view.offline_table],
        kinds={"sqlite"},
        description=f"Online store rows (latest per entity) of feature view {view.name} v{view.version}.",
    )
    def _asset(lakebed: LakebedResource) -> dg.MaterializeResult:
        rows = sync_online(view, config=lakebed.config())
        return dg.MaterializeResult(metadata={"dagster/row_count": rows, "lakebed/view": view.key})

    return _asset


FEATURE_ASSETS = [
    asset for view in FEATURE_VIEWS.values() for asset in (_offline_asset(view), _online_asset(view))
]
