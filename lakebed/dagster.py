"""A lakebed project as one Dagster code location (docs/projects.md, "Dagster").

``definitions(project)`` reads the project's files when it is called, so "Reload definitions" in the UI
picks up a new or edited YAML file. Three ways in, one result:

- ``defs = lakebed.dagster.definitions(__file__)`` in the project's definitions.py (``dagster dev -f``);
- ``[tool.dagster] module_name`` naming a module that does the same;
- the ``dg`` component ``type: lakebed.dagster.LakebedProject`` in a defs.yaml (``project:`` relative to it).
"""

from __future__ import annotations

import graphlib
from pathlib import Path

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from lakebed.assets.embeddings import embedding_assets
from lakebed.assets.features import feature_assets
from lakebed.assets.ingest import (
    landing_ingest_job,
    landing_sensor,
    source_assets,
    source_jobs_and_schedules,
    source_sensors,
)
from lakebed.assets.models import model_assets
from lakebed.assets.quality import contract_checks
from lakebed.assets.resources import LakebedResource
from lakebed.assets.streaming import kafka_offsets_sensor, stream_assets, stream_maintenance
from lakebed.assets.tiering import hot_tier_quota_sensor, tier_move_job, tier_move_schedule
from lakebed.config import PROJECT_FILE, project_above
from lakebed.errors import ProjectError
from lakebed.schemas.project import Project, load_project


def project_dir(project: str | Path) -> Path:
    """The project folder of ``project``: that folder, or the nearest folder holding a lakebed.toml at or
    above a file or folder inside it (``definitions(__file__)``)."""
    start = Path(project).expanduser().resolve()
    found = project_above(start)
    if found is None:
        raise ProjectError(f"{start}: not in a lakebed project (no {PROJECT_FILE} here or above)")
    return found


def project_assets(project: Project) -> list[dg.AssetsDefinition]:
    """Every asset of the project in dependency order (sources and raw streams first; a model may read a
    feature table and a feature view a model's table, so the order follows the assets' dependencies)."""
    assets = [
        *source_assets(project),
        *embedding_assets(project),
        *stream_assets(project),
        *model_assets(project),
        *feature_assets(project),
    ]
    by_key = {asset.key: asset for asset in assets}
    graph = {asset.key: [k for k in asset.dependency_keys if k in by_key] for asset in assets}
    return [by_key[key] for key in graphlib.TopologicalSorter(graph).static_order()]


def project_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    """The project's asset checks: a blocking ``contract`` check per table whose contract has rules."""
    return contract_checks(project)


def definitions(
    project: str | Path, *, home: str | Path | None = None, process_home: bool = False
) -> dg.Definitions:
    """The Dagster definitions of the lakebed project at ``project`` (its folder or a file inside it).

    The ``lakebed`` resource carries the project folder, so every asset, check, sensor and job reads and
    writes that project's tables (its lakebed.toml; ``home`` overrides its state folder, ``process_home``
    keeps the state where the process-wide config puts it, as for the shop example's code location).
    """
    loaded = load_project(project_dir(project))
    sources, streams, features = source_assets(loaded), stream_assets(loaded), feature_assets(loaded)
    models, embeddings = model_assets(loaded), embedding_assets(loaded)
    source_jobs, source_schedules = source_jobs_and_schedules(loaded)
    maintenance_job, maintenance_schedule = stream_maintenance(loaded)
    jobs: list[dg.JobDefinition | UnresolvedAssetJobDefinition] = [
        *source_jobs,
        landing_ingest_job,
        maintenance_job,
        tier_move_job,
    ]
    sensors = [*source_sensors(loaded), landing_sensor, hot_tier_quota_sensor]
    if streams:
        sensors.append(kafka_offsets_sensor(loaded))
    if streams or features:
        jobs.append(
            dg.define_asset_job(
                "features_job",
                selection=dg.AssetSelection.groups("streams", "features"),
                description="Consume every topic up to its end offsets, then update feature views offline "
                "and online.",
            )
        )
    return dg.Definitions(
        assets=[*sources, *embeddings, *streams, *models, *features],
        asset_checks=project_checks(loaded),
        jobs=jobs,
        sensors=sensors,
        schedules=[*source_schedules, maintenance_schedule, tier_move_schedule],
        resources={
            "lakebed": LakebedResource(
                project=str(loaded.root),
                home=str(Path(home).resolve()) if home is not None else None,
                process_home=process_home,
            )
        },
    )


class LakebedProject(dg.Component, dg.Model, dg.Resolvable):
    """A lakebed project as a ``dg`` component: ``type: lakebed.dagster.LakebedProject`` in a defs.yaml,
    with ``attributes: {project: <folder relative to that defs.yaml>}``."""

    project: str = "."

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        base = context.path if context.path.is_dir() else context.path.parent
        return definitions(base / self.project)


__all__ = ["LakebedProject", "definitions", "project_assets", "project_checks", "project_dir"]
