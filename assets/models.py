"""Models of a project (docs/models.md): one asset per model, depending on the assets of the tables it
reads (sources, feature views, other models). Wiring only: the work is in pipelines/models/."""

from typing import Any

import dagster as dg

from lakebed.assets.metadata import owners_of, table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.errors import ModelError
from lakebed.pipelines.models.columns import ColumnSources
from lakebed.pipelines.models.run import run_model
from lakebed.schemas.models import Model, SqlModel
from lakebed.schemas.project import Project

GROUP = "models"


def _column_lineage(columns: ColumnSources) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=dg.AssetKey(t), column_name=c) for t, c, _ in sources]
            for column, sources in columns.items()
        }
    )


def _asset(project: Project, model: Model) -> dg.AssetsDefinition:
    name = model.name

    @dg.asset(
        name=name,
        group_name=GROUP,
        code_version=model.code_version,
        deps=list(model.inputs),
        kinds={"delta", "duckdb", "sql"} if isinstance(model, SqlModel) else {"delta", "polars", "python"},
        description=model.options.description or f"{model.options.materialized} model {model.path.name}",
        owners=owners_of(name, model.options.owners, model.path),
        tags={tag: "" for tag in model.options.tags},
        metadata={
            "dagster/table_name": name,
            "lakebed/materialized": model.options.materialized,
            "lakebed/defined_in": str(model.path),
        },
    )
    def _build(context: dg.AssetExecutionContext, lakebed: LakebedResource) -> dg.MaterializeResult:
        config = lakebed.config()
        try:
            result = run_model(
                project, name, config=config, run=lakebed.run_context(context, job=f"model:{name}")
            )
        except Exception as exc:
            raise ModelError(f"model {name!r} ({model.path}) failed: {exc}") from exc
        context.log.info(
            f"{name}: {result.status}, {result.rows} rows, inputs at versions {result.inputs}"
            + (f" (rebuilt: {result.reason})" if result.reason else "")
        )
        extra: dict[str, Any] = {"lakebed/status": result.status, "lakebed/inputs": result.inputs}
        if result.columns:
            extra["dagster/column_lineage"] = _column_lineage(result.columns)
        metadata, version = table_metadata(name, config, **extra)
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return _build


def model_assets(project: Project) -> list[dg.AssetsDefinition]:
    """One asset per model of the project, in dependency order."""
    return [_asset(project, model) for model in project.models.values()]
