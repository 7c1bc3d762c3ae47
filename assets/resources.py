"""The Dagster resource that hands assets lakebed's configuration: the configuration of one project."""

from pathlib import Path

import dagster as dg

from lakebed.config import LakebedConfig, get_config, project_config
from lakebed.pipelines.delta import RunContext


class LakebedResource(dg.ConfigurableResource):
    """lakebed for Dagster: the config of ``project`` (its lakebed.toml, LAKEBED_* variables first; without
    a project, the process-wide config) and run contexts that tie every Delta commit to the Dagster run
    that made it. ``home`` overrides the state folder; ``process_home`` keeps the state where the
    process-wide config puts it (read when used, not when the definitions load)."""

    project: str | None = None
    home: str | None = None
    process_home: bool = False

    def config(self) -> LakebedConfig:
        if self.project:
            home = get_config().home if self.process_home else self.home
            return project_config(self.project, home=home)
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
