"""Standard Dagster metadata for a lakebed table: row count, column schema, name, URI, Delta version."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

from lakebed.config import LakebedConfig
from lakebed.errors import ProjectError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import table_size
from lakebed.schemas.contract import TableContract
from lakebed.schemas.types import type_name


def _tiers(table: str, entry: Any, config: LakebedConfig) -> dict[str, Any]:
    """Rows and bytes on each tier and the watermark, for a tiered table."""
    from lakebed.pipelines.tiering import policy_of, status

    if policy_of(entry) is None:
        return {}
    state = status(table, config=config)
    return {
        "lakebed/tier/hot_rows": state.hot_rows,
        "lakebed/tier/hot_bytes": state.hot_bytes,
        "lakebed/tier/cold_rows": state.cold_rows,
        "lakebed/tier/cold_bytes": state.cold_bytes,
        "lakebed/tier/watermark": str(state.watermark) if state.watermark is not None else "-",
        "lakebed/tier/cold_uri": state.cold_uri,
    }


def _producer(table: str, delta: DeltaTable) -> dict[str, Any]:
    """The run that wrote the current version (from its commit), and how to ask lineage about it."""
    commit = delta.history(1)[0] if delta.version() >= 0 else {}
    run_id = commit.get("lakebed.run_id")
    if not run_id:
        return {}
    return {
        "lakebed/run_id": run_id,
        "lakebed/job": commit.get("lakebed.job", ""),
        "lakebed/code_version": commit.get("lakebed.code_version", ""),
        "lakebed/lineage": dg.MetadataValue.md(
            f"Produced by run `{run_id}`. Provenance: `lakebed lineage producer {table}@{delta.version()}`; "
            f"graph: `lakebed lineage upstream {table}@{delta.version()} --format svg -o {table}.svg`."
        ),
    }


def table_metadata(table: str, config: LakebedConfig, **extra: Any) -> tuple[dict[str, Any], dg.DataVersion]:
    """Metadata for the table's current version and that version as the asset's DataVersion."""
    entry = Catalog(config).get(table)
    delta = DeltaTable(entry.uri)
    schema = pa.schema(delta.schema().to_arrow())
    rows = table_size(delta)[0]
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
        **_producer(table, delta),
        **_tiers(table, entry, config),
        **extra,
    }
    return metadata, dg.DataVersion(str(delta.version()))


def definition_metadata(table: str, contract: TableContract | None) -> dict[str, Any]:
    """What is known of a table before it is written: its name and, from its contract, its columns."""
    metadata: dict[str, Any] = {"dagster/table_name": table}
    if contract is not None and contract.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c.name,
                    type=c.type,
                    description=c.description,
                    constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=c.unique),
                )
                for c in contract.columns
            ]
        )
    return metadata


def owners_of(table: str, owners: Iterable[str], origin: Path | None) -> list[str]:
    """The ``owners`` of a source as Dagster asset owners (an email address or ``team:<name>``); any other
    spelling is a ProjectError naming the file."""
    found = list(dict.fromkeys(owners))
    bad = [o for o in found if not (o.startswith("team:") and len(o) > 5) and "@" not in o]
    if bad:
        where = f"{origin}: " if origin is not None else ""
        raise ProjectError(
            f"{where}source {table}: owners: {', '.join(map(repr, bad))}: an owner is an email address or "
            "team:<name>"
        )
    return found
