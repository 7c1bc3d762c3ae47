"""Standard Dagster metadata for a lakebed table: row count, column schema, name, URI, Delta version."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable
from lakebed.pipelines.catalog import Catalog
from lakebed.schemas.types import type_name

from lakebed.config import LakebedConfig


def table_metadata(table: str, config: LakebedConfig, **extra: Any) -> tuple[dict[str, Any], dg.DataVersion]:
    """Metadata for the table's current version and that version as the asset's DataVersion."""
    entry = Catalog(config).get(table)
    delta = DeltaTable(entry.uri)
    schema = pa.schema(delta.schema().to_arrow())
    rows = sum(int(n or 0) for n in delta.get_add_actions(flatten=True).column("num_records").to_pylist())
    metadata: dict[str, Any] = {
        "dagster/row_count": rows,
        "dagster/table_name": table,
        "dagster/uri": entry.uri,
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=f.name,
                    type=type_name(f.type),
                    constraints=dg.TableColumnConstraints(nullable=f.nullable),
                )
                for f in schema
            ]
        ),
        "lakebed/delta_version": delta.version(),
        **extra,
    }
    return metadata, dg.DataVersion(str(delta.version()))
