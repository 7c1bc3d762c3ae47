"""The ingested-files manifest (a system table): which file, at which size and SHA-256, made which version of
which table, so an unchanged file is never ingested twice and a changed one is replaced or appended."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, commit
from lakebed.schemas.contract import TableContract
from lakebed.storage import arrow_dataset

MANIFEST_TABLE = "ingested_files"

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("rows", pa.int64()),
        pa.field("rejected_rows", pa.int64()),
        pa.field("delta_version", pa.int64()),
        pa.field("run_id", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
MANIFEST_CONTRACT = TableContract.from_arrow(MANIFEST_TABLE, MANIFEST_SCHEMA, keys=("table_name", "path"))


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str
    size: int
    sha256: str


@dataclass
class FileOutcome:
    """What happened to one file."""

    path: str
    status: Literal["ingested", "skipped", "replaced", "rejected"]
    rows: int = 0
    rejected: int = 0
    quarantined: int = 0
    version: int | None = None


def sql_string(value: str) -> str:
    return value.replace("'", "''")


class Manifest:
    """The ingested-files manifest: one row per (table, path), upserted at the end of each run."""

    def __init__(self, catalog: Catalog, run: RunContext) -> None:
        self.catalog = catalog
        self.run = run
        self.pending: list[dict[str, object]] = []

    def entries(self, table: str) -> dict[str, dict[str, Any]]:
        entry = self.catalog.find(MANIFEST_TABLE)
        if entry is None:
            return {}
        rows = arrow_dataset(DeltaTable(entry.uri)).to_table(filter=pc.field("table_name") == table)
        return {row["path"]: row for row in rows.to_pylist()}

    def record(self, table: str, source: SourceFile, outcome: FileOutcome) -> None:
        self.pending.append(
            {
                "table_name": table,
                "path": source.name,
                "size_bytes": source.size,
                "sha256": source.sha256,
                "rows": outcome.rows,
                "rejected_rows": outcome.rejected,
                "delta_version": outcome.version,
                "run_id": self.run.run_id,
                "ingested_at": dt.datetime.now(dt.UTC),
            }
        )

    def flush(self, *, replace_table: str | None = None) -> None:
        """Write pending entries; ``replace_table`` makes them that table's only entries (overwrite)."""
        if not self.pending and replace_table is None:
            return
        rows = pa.Table.from_pylist(self.pending, schema=MANIFEST_SCHEMA)
        options: dict[str, Any] = dict(
            contract=MANIFEST_CONTRACT,
            kind="system",
            run=self.run,
            config=self.catalog.config,
            catalog=self.catalog,
        )
        if replace_table is not None:
            predicate = f"table_name = '{sql_string(replace_table)}'"
            commit(MANIFEST_TABLE, rows, mode="overwrite", overwrite_predicate=predicate, **options)
        else:
            commit(MANIFEST_TABLE, rows, mode="merge", **options)
        self.pending = []

    def reconcile(self, table: str) -> None:
        """Record files whose data commit landed but whose manifest update did not (a crash between).

        Every run flushes the manifest after its last data commit, so any commit newer than the newest
        version the manifest knows for this table, back to the last whole-table overwrite, is unrecorded.
        """
        entry = self.catalog.find(table)
        if entry is None:
            return
        try:
            history = DeltaTable(entry.uri).history()
        except Exception:
            return
        known = self.entries(table)
        recorded = max(
            (int(e["delta_version"]) for e in known.values() if e["delta_version"] is not None), default=-1
        )
        unrecorded: dict[str, tuple[int, dict[str, Any], int]] = {}
        for commit_info in history:  # newest first
            version = int(commit_info["version"])
            if version <= recorded:
                break
            rows = int((commit_info.get("operationMetrics") or {}).get("num_added_rows") or 0)
            for item in json.loads(commit_info.get("lakebed.source_files") or "[]"):
                unrecorded.setdefault(item["path"], (version, item, rows))
            parameters = commit_info.get("operationParameters") or {}
            if parameters.get("mode") == "Overwrite" and not parameters.get("predicate"):
                break
        for path, (version, item, rows) in unrecorded.items():
            source = SourceFile(
                path=Path(path), name=path, size=int(item["size"]), sha256=str(item["sha256"])
            )
            self.record(table, source, FileOutcome(path=path, status="ingested", rows=rows, version=version))
        self.flush()
