"""The Dagster resource that hands assets lakebed's configuration."""

from pathlib import Path

import dagster as dg

from lakebed.config import LakebedConfig, get_config
from lakebed.pipelines.delta import RunContext


class LakebedResource(dg.ConfigurableResource):
    """lakebed for Dagster: the config (from LAKEBED_* env / lakebed.toml) and run contexts that tie
    every Delta commit to the Dagster run that made it."""

    home: str | None = None

    def config(self) -> LakebedConfig:
        if self.home:
            return LakebedConfig(home=Path(self.home))
        return get_config()

    def run_context(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext | dg.AssetCheckExecutionContext,
        job: str,
    ) -> RunContext:
        return RunContext(
            job=job, tags={"dagster.run_id": context.run.run_id, "dagster.job": context.run.job_name}
        )
