"""The Dagster code location of lakebed (``dagster dev -m lakebed.assets.definitions``)."""

from __future__ import annotations

import dagster as dg
from lakebed.assets.ingest import SAMPLE_ASSETS, landing_ingest_job, landing_sensor
from lakebed.assets.resources import LakebedResource

sample_data_job = dg.define_asset_job(
    "sample_data_job",
    selection=dg.AssetSelection.groups("sample_data"),
    description="Ingest every shipped sample dataset (what `lakebed demo` runs).",
)

defs = dg.Definitions(
    assets=SAMPLE_ASSETS,
    jobs=[sample_data_job, landing_ingest_job],
    sensors=[landing_sensor],
    resources={"lakebed": LakebedResource()},
)
