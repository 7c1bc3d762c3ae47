"""The Dagster resource that hands assets lakebed's configuration: the configuration of one project."""

import functools
from pathlib import Path

import dagster as dg
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from lakebed.config import PROJECT_FILE, LakebedConfig, _ProjectFileSettings, get_config
from lakebed.pipelines.delta import RunContext


@functools.cache
def _settings_of(project: Path) -> type[LakebedConfig]:
    """LakebedConfig reading ``project``'s lakebed.toml whatever the current directory or LAKEBED_PROJECT:
    keyword arguments, then LAKEBED_* variables, then that file (home defaults to <project>/.lakebed)."""
    toml = project / PROJECT_FILE

    class ProjectConfig(LakebedConfig):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _ProjectFileSettings(settings_cls, toml))

    return ProjectConfig


def project_config(project: str | Path, *, home: str | Path | None = None) -> LakebedConfig:
    """The configuration of the project in folder ``project`` (``home`` overrides its state folder)."""
    settings = _settings_of(Path(project).resolve())
    return settings(home=Path(home)) if home is not None else settings()


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
