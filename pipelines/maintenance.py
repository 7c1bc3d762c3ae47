"""Table maintenance: compaction, checkpoints and vacuum.

delta-rs has no auto-compaction, so stream tables (many small commits) need this on a schedule. Compaction
keeps application transactions (exactly-once offsets) intact; vacuum only removes files no version within
the retention window references.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from deltalake import CommitProperties, DeltaTable

from lakebed.config import LakebedConfig, get_config
from lakebed.lineage.events import table_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext
from lakebed.pipelines.deltalog import commits_with

DEFAULT_RETENTION = dt.timedelta(days=7)


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    files_removed: int
    files_added: int
    checkpoint_version: int
    vacuumed_files: int


def maintain(
    table: str,
    *,
    target_file_bytes: int | None = None,
    retention: dt.timedelta = DEFAULT_RETENTION,
    run: RunContext | None = None,
    config: LakebedConfig | None = None,
) -> MaintenanceResult:
    """Compact small files, write a checkpoint and vacuum files older than ``retention``."""
    config = config or get_config()
    run = run or RunContext(job=f"maintain:{table}")
    entry = Catalog(config).get(table)
    properties = CommitProperties(custom_metadata=run.commit_metadata())
    with lineage_run(run, config=config) as lineage:
        delta = DeltaTable(entry.uri)
        before = delta.version()
        lineage.add_input(table_dataset(table, entry.uri, before))
        metrics = delta.optimize.compact(target_size=target_file_bytes, commit_properties=properties)
        delta = DeltaTable(delta.table_uri)
        delta.create_checkpoint()
        checkpoint_version = delta.version()
        removed = delta.vacuum(
            retention_hours=max(int(retention.total_seconds() // 3600), 0),
            enforce_retention_duration=retention >= DEFAULT_RETENTION,
            dry_run=False,
            commit_properties=properties,
        )
        # Every version this run made (compaction, vacuum start and end) is one of its outputs.
        for version in commits_with(entry.uri, before, run.run_id):
            lineage.add_output(table_dataset(table, entry.uri, version, extra={"operation": "maintenance"}))
    return MaintenanceResult(
        table=table,
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        checkpoint_version=checkpoint_version,
        vacuumed_files=len(removed),
    )
