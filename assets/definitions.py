"""The Dagster code location of lakebed (``dagster dev -m lakebed.assets.definitions``)."""

import dagster as dg

from lakebed.assets.features import FEATURE_ASSETS
from lakebed.assets.ingest import SAMPLE_ASSETS, landing_ingest_job, landing_sensor
from lakebed.assets.quality import contract_checks
from lakebed.assets.resources import LakebedResource
from lakebed.assets.streaming import (
    RAW_EVENT_ASSETS,
    kafka_offsets_sensor,
    stream_maintenance_job,
    stream_maintenance_schedule,
)
from lakebed.assets.tiering import hot_tier_quota_sensor, tier_move_job, tier_move_schedule

sample_data_job = dg.define_asset_job(
    "sample_data_job",
    selection=dg.AssetSelection.groups("sample_data"),
    description="Ingest every shipped sample dataset (what `lakebed demo` runs).",
)

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("streaming", "features"),
    description="Consume every topic up to its end offsets, then update feature views offline and online.",
)

ASSETS = [*SAMPLE_ASSETS, *RAW_EVENT_ASSETS, *FEATURE_ASSETS]
QUALITY_CHECKS = contract_checks(key.to_user_string() for a in ASSETS for key in a.keys)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=QUALITY_CHECKS,
    jobs=[sample_data_job, features_job, landing_ingest_job, stream_maintenance_job, tier_move_job],
    sensors=[landing_sensor, kafka_offsets_sensor, hot_tier_quota_sensor],
    schedules=[stream_maintenance_schedule, tier_move_schedule],
    resources={"lakebed": LakebedResource()},
)
