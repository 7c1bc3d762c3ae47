"""The lineage store's rows: one per OpenLineage event, with the columns queries read (run, job, parent,
inputs and outputs with their versions, statistics, quality and column lineage) beside the whole event."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from lakebed.config import LakebedConfig, get_config
from lakebed.lineage.emit import events_path

_DATASET = pa.struct(
    [
        ("namespace", pa.string()),
        ("name", pa.string()),
        ("version", pa.string()),
        ("table_name", pa.string()),
        ("kind", pa.string()),  # the lakebed table kind: table, rejects or system
        ("rows", pa.int64()),
        ("size", pa.int64()),
        ("quality", pa.string()),  # the dataQualityAssertions facet's assertions, as JSON
        ("column_lineage", pa.string()),  # the columnLineage facet's fields, as JSON
    ]
)
STORE_SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job_namespace", pa.string(), nullable=False),
        pa.field("job_name", pa.string(), nullable=False),
        pa.field("parent_run_id", pa.string()),
        pa.field("parent_job_namespace", pa.string()),
        pa.field("parent_job_name", pa.string()),
        pa.field("processing", pa.string()),
        pa.field("code_version", pa.string()),
        pa.field("error", pa.string()),
        pa.field("inputs", pa.list_(_DATASET)),
        pa.field("outputs", pa.list_(_DATASET)),
        pa.field("event", pa.string(), nullable=False),  # the whole event, as received
        pa.field("file_offset", pa.int64(), nullable=False),
    ]
)
# The columns queries load (the whole event stays in the Delta table).
COMPACT_COLUMNS = [f.name for f in STORE_SCHEMA if f.name != "event"]


def event_row(event: dict[str, Any], raw: str, offset: int) -> dict[str, Any]:
    """One row of :data:`STORE_SCHEMA` for ``event`` (``raw``, its line, at byte ``offset`` of the file)."""
    run, job = event["run"], event["job"]
    run_facets = run.get("facets") or {}
    parent = run_facets.get("parent") or {}
    job_facets = job.get("facets") or {}
    error = (run_facets.get("errorMessage") or {}).get("message")
    return {
        "event_time": _instant(event["eventTime"]),
        "event_type": event.get("eventType") or "OTHER",
        "run_id": str(run["runId"]),
        "job_namespace": job["namespace"],
        "job_name": job["name"],
        "parent_run_id": (parent.get("run") or {}).get("runId"),
        "parent_job_namespace": (parent.get("job") or {}).get("namespace"),
        "parent_job_name": (parent.get("job") or {}).get("name"),
        "processing": (job_facets.get("jobType") or {}).get("processingType"),
        "code_version": (job_facets.get("sourceCodeLocation") or {}).get("version"),
        "error": error,
        "inputs": [_dataset(d) for d in event.get("inputs") or []],
        "outputs": [_dataset(d, output=True) for d in event.get("outputs") or []],
        "event": raw.rstrip("\n"),
        "file_offset": offset,
    }


def _dataset(dataset: dict[str, Any], *, output: bool = False) -> dict[str, Any]:
    facets = dataset.get("facets") or {}
    stats = (dataset.get("outputFacets") or {}).get("outputStatistics") or {}
    quality = facets.get("dataQualityAssertions") or (dataset.get("inputFacets") or {}).get(
        "dataQualityAssertions"
    )
    lineage = facets.get("columnLineage")
    return {
        "namespace": dataset["namespace"],
        "name": dataset["name"],
        "version": (facets.get("version") or {}).get("datasetVersion"),
        "table_name": (facets.get("lakebed") or {}).get("table"),
        "kind": (facets.get("lakebed") or {}).get("kind"),
        "rows": stats.get("rowCount") if output else None,
        "size": stats.get("size") if output else None,
        "quality": json.dumps(quality["assertions"]) if quality else None,
        "column_lineage": json.dumps(lineage["fields"]) if lineage else None,
    }


def _instant(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def iter_events(config: LakebedConfig | None = None) -> Iterator[dict[str, Any]]:
    """Every event in the event file, in order (malformed lines skipped)."""
    path = events_path(config or get_config())
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except ValueError:
                continue


__all__ = ["COMPACT_COLUMNS", "STORE_SCHEMA", "event_row", "iter_events"]
