"""The lineage store's rows in Marquez's shapes: namespaces, datasets, versions, jobs, runs, the graph.

Run states use Marquez's words (``COMPLETED``, ``FAILED``, ``ABORTED``, ``RUNNING``); a dataset version
is the Delta version. Facets come from the raw events of the runs, read with one scan of the store's
Delta table per answer. Every function raises :class:`~lakebed.errors.LineageNotFoundError` for what
the store does not know.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import JsonValue

from lakebed.errors import LineageNotFoundError
from lakebed.lineage.api import models as m
from lakebed.lineage.api.params import MAX_LIMIT
from lakebed.lineage.graph import Graph, Node, job_id
from lakebed.lineage.store import DatasetVersion, LineageStore, RunInfo
from lakebed.storage import arrow_dataset

log = logging.getLogger("lakebed.lineage.api")

Event = dict[str, JsonValue]
Row = Mapping[str, Any]  # a row of a store query
MARQUEZ_STATES: dict[str, m.MarquezState] = {
    "COMPLETE": "COMPLETED",
    "FAIL": "FAILED",
    "ABORT": "ABORTED",
    "RUNNING": "RUNNING",
    "START": "RUNNING",
}


def marquez_state(state: str) -> m.MarquezState:
    return MARQUEZ_STATES.get(state, "RUNNING")


def _obj(value: JsonValue) -> dict[str, JsonValue]:
    return value if isinstance(value, dict) else {}


def _list(value: JsonValue) -> list[JsonValue]:
    return value if isinstance(value, list) else []


def _dataset_type(namespace: str) -> m.DatasetType:
    return "STREAM" if namespace.startswith("kafka://") else "DB_TABLE"


def job_type(processing: str | None) -> m.JobType:
    return "STREAM" if (processing or "").upper().startswith("STREAM") else "BATCH"


def _fields(facets: Mapping[str, JsonValue]) -> list[m.SchemaField]:
    fields = [_obj(f) for f in _list(_obj(facets.get("schema")).get("fields")) if isinstance(f, dict)]
    return [
        m.SchemaField(
            name=_str(f.get("name")),
            type=_str(f.get("type")),
            tags=[],
            description=_str(f.get("description")),
        )
        for f in fields
    ]


def _str(value: JsonValue) -> str | None:
    return None if value is None else str(value)


def _merge_facets(events: Iterable[Event], pick: Callable[[Event], JsonValue]) -> dict[str, JsonValue]:
    merged: dict[str, JsonValue] = {}
    for event in events:
        merged.update(_obj(pick(event)))
    return merged


def _run_facets(event: Event) -> JsonValue:
    return _obj(event.get("run")).get("facets")


def _job_facets(event: Event) -> JsonValue:
    return _obj(event.get("job")).get("facets")


def _output_facets(
    events: Iterable[Event], namespace: str, name: str, version: str | None
) -> dict[str, JsonValue]:
    """The dataset facets (plus output facets) of ``namespace:name`` at ``version`` as its run wrote it."""
    found: dict[str, JsonValue] = {}
    for event in events:
        for output in (_obj(o) for o in _list(event.get("outputs"))):
            if output.get("namespace") != namespace or output.get("name") != name:
                continue
            facets = dict(_obj(output.get("facets")))
            written = _obj(facets.get("version")).get("datasetVersion")
            if version is not None and written is not None and str(written) != version:
                continue
            facets.update(_obj(output.get("outputFacets")))
            found = facets
    return found


def events_by_run(store: LineageStore, run_ids: Iterable[str]) -> dict[str, list[Event]]:
    """The raw events of several runs with one scan of the store's Delta table, each run's in order."""
    wanted = sorted({r for r in run_ids if r})
    if not wanted:
        return {}
    import pyarrow.dataset as pads
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

    try:
        table = DeltaTable(store.uri)
    except DeltaTableNotFoundError:
        return {}
    data = arrow_dataset(table).to_table(
        columns=["run_id", "event_time", "event"], filter=pads.field("run_id").isin(wanted)
    )
    data = data.sort_by([("event_time", "ascending"), ("run_id", "ascending")])
    found: dict[str, list[Event]] = {}
    for run_id, event in zip(
        data.column("run_id").to_pylist(), data.column("event").to_pylist(), strict=True
    ):
        try:
            found.setdefault(run_id, []).append(json.loads(event))
        except ValueError:
            log.warning("skipping an unreadable stored event of run %s", run_id)
    return found


def version_refs(datasets: Iterable[DatasetVersion]) -> list[m.DatasetVersionRef]:
    return [
        m.DatasetVersionRef(namespace=d.namespace, name=d.name, version=d.version, table=d.table)
        for d in datasets
    ]


def run_model(run: RunInfo, events: Sequence[Event]) -> m.Run:
    """A run in Marquez's ``Run`` shape, plus lakebed's fields (job, code version, parent, error)."""
    started, ended = run.started_at, run.ended_at
    duration = int((ended - started).total_seconds() * 1000) if started and ended else None
    first_seen = _str(events[0].get("eventTime")) if events else None
    last_seen = _str(events[-1].get("eventTime")) if events else None
    facets = _merge_facets(events, _run_facets)
    if "parent" not in facets and run.parent_run_id:
        job_ns, _, job_name = (run.parent_job or ":").partition(":")
        facets["parent"] = {
            "run": {"runId": run.parent_run_id},
            "job": {"namespace": job_ns, "name": job_name},
        }
    if "errorMessage" not in facets and run.error:
        facets["errorMessage"] = {"message": run.error}
    return m.Run.model_validate(
        {
            "id": run.run_id,
            "createdAt": started or first_seen,
            "updatedAt": ended or started or last_seen,
            "nominalStartTime": None,
            "nominalEndTime": None,
            "state": marquez_state(run.state),
            "startedAt": started,
            "endedAt": ended,
            "durationMs": duration,
            "args": {},
            "jobVersion": m.JobVersion(
                namespace=run.job_namespace, name=run.job_name, version=run.code_version
            ),
            "inputVersions": version_refs(run.inputs),
            "outputVersions": version_refs(run.outputs),
            "context": {},
            "facets": facets,
            "job": m.JobId(namespace=run.job_namespace, name=run.job_name),
            "jobFacets": _merge_facets(events, _job_facets),
            "codeVersion": run.code_version,
            "processing": run.processing,
            "parentRun": m.ParentRun(id=run.parent_run_id, job=run.parent_job) if run.parent_run_id else None,
            "errorMessage": run.error,
            "dagsterRunId": run.dagster_run_id,
            "quality": run.quality,
        }
    )


def runs(
    store: LineageStore, run_ids: Sequence[str], events: Mapping[str, list[Event]] | None = None
) -> list[m.Run]:
    found = events_by_run(store, run_ids) if events is None else events
    return [run_model(store.run(r), found.get(r, [])) for r in run_ids]


def known_namespace(store: LineageStore, namespace: str) -> None:
    if namespace not in store.namespaces():
        raise LineageNotFoundError(f"no namespace {namespace!r} in the lineage store")


def namespace_model(store: LineageStore, namespace: str) -> m.Namespace:
    rows = [*store.datasets(namespace), *store.jobs(namespace)]
    times = [r["updated_at"] for r in rows if r.get("updated_at")]
    return m.Namespace(
        name=namespace,
        createdAt=None,
        updatedAt=max(times) if times else None,
        ownerName=None,
        description="lakebed jobs" if namespace == store.config.lineage_namespace else None,
    )


def dataset_model(
    namespace: str, row: Row, versions: Sequence[Row], facets: Mapping[str, JsonValue] | None
) -> m.Dataset:
    name = row["name"]
    all_facets = dict(facets or {})
    lakebed_facet = dict(_obj(all_facets.get("lakebed")))
    if row.get("table_name"):
        lakebed_facet.setdefault("table", row["table_name"])
    if lakebed_facet:
        all_facets["lakebed"] = lakebed_facet
    return m.Dataset(
        id=m.DatasetId(namespace=namespace, name=name),
        type=_dataset_type(namespace),
        name=name,
        physicalName=name,
        createdAt=versions[-1]["created_at"] if versions else None,
        updatedAt=row.get("updated_at"),
        namespace=namespace,
        sourceName=namespace,
        fields=_fields(all_facets),
        tags=[],
        lastModifiedAt=versions[0]["created_at"] if versions else None,
        lastLifecycleState=None,
        description=None,
        facets=all_facets,
        currentVersion=row.get("current_version"),
        deleted=False,
        table=row.get("table_name"),
    )


def datasets(store: LineageStore, namespace: str, rows: Sequence[Row]) -> list[m.Dataset]:
    versions = {row["name"]: store.dataset_versions(namespace, row["name"]) for row in rows}
    current_runs = {
        row["name"]: next(
            (v["run_id"] for v in versions[row["name"]] if v["version"] == row.get("current_version")), None
        )
        for row in rows
    }
    events = events_by_run(store, (r for r in current_runs.values() if r))
    result = []
    for row in rows:
        run_id = current_runs[row["name"]]
        facets = (
            _output_facets(events.get(run_id, []), namespace, row["name"], row.get("current_version"))
            if run_id
            else None
        )
        result.append(dataset_model(namespace, row, versions[row["name"]], facets))
    return result


def dataset_row(store: LineageStore, namespace: str, name: str) -> Row:
    for row in store.datasets(namespace):
        if row["name"] == name:
            return row
    raise LineageNotFoundError(f"no dataset {namespace}:{name} in the lineage store")


def dataset_versions(
    store: LineageStore, namespace: str, name: str, rows: Sequence[Row]
) -> list[m.DatasetVersion]:
    run_ids = list(dict.fromkeys(v["run_id"] for v in rows))
    events = events_by_run(store, run_ids)
    by_id = {r.id: r for r in runs(store, run_ids, events)}
    return [
        _version_model(namespace, name, row, by_id[row["run_id"]], events.get(row["run_id"], []))
        for row in rows
    ]


def _version_model(
    namespace: str, name: str, row: Row, run: m.Run, events: Sequence[Event]
) -> m.DatasetVersion:
    version = row["version"]
    facets = _output_facets(events, namespace, name, version)
    return m.DatasetVersion(
        id=m.DatasetVersionId(namespace=namespace, name=name, version=version),
        type=_dataset_type(namespace),
        name=name,
        physicalName=name,
        createdAt=row["created_at"],
        version=version,
        namespace=namespace,
        sourceName=namespace,
        fields=_fields(facets),
        tags=[],
        description=None,
        createdByRun=run,
        facets=facets,
        rowCount=row.get("rows"),
        size=row.get("size"),
    )


def jobs(store: LineageStore, namespace: str, rows: Sequence[Row]) -> list[m.Job]:
    graph = store.graph(include_system=True)
    all_runs = {row["name"]: store.job_runs(namespace, row["name"], limit=MAX_LIMIT) for row in rows}
    events = events_by_run(store, [r[0]["run_id"] for r in all_runs.values() if r])
    result = []
    for row in rows:
        job_runs = all_runs[row["name"]]
        latest = store.run(job_runs[0]["run_id"]) if job_runs else None
        latest_events = events.get(latest.run_id, []) if latest else []
        inputs, outputs = neighbours(graph, job_id(namespace, row["name"]))
        job_facets = _merge_facets(latest_events, _job_facets)
        starts = [r["started_at"] for r in job_runs if r.get("started_at") is not None]
        result.append(
            m.Job(
                id=m.JobId(namespace=namespace, name=row["name"]),
                type=job_type(latest.processing if latest else None),
                name=row["name"],
                simpleName=row["name"],
                parentJobName=None,
                createdAt=min(starts) if starts else None,
                updatedAt=row.get("updated_at"),
                namespace=namespace,
                inputs=inputs,
                outputs=outputs,
                location=_str(_obj(job_facets.get("sourceCodeLocation")).get("url")),
                description=None,
                latestRun=run_model(latest, latest_events) if latest else None,
                facets=job_facets,
                currentVersion=latest.code_version if latest else None,
                runCount=row.get("runs"),
                latestState=marquez_state(row["latest_state"]) if row.get("latest_state") else None,
            )
        )
    return result


def job_row(store: LineageStore, namespace: str, name: str) -> Row:
    for row in store.jobs(namespace):
        if row["name"] == name:
            return row
    raise LineageNotFoundError(f"no job {namespace}:{name} in the lineage store")


def _dataset_ref(node: Node) -> m.DatasetId:
    return m.DatasetId(namespace=node.namespace, name=node.name)


def neighbours(graph: Graph, node_id: str) -> tuple[list[m.DatasetId], list[m.DatasetId]]:
    """The datasets a job reads and writes in ``graph``."""
    nodes = {n.id: n for n in graph.nodes}
    inputs = sorted({e.source for e in graph.edges if e.target == node_id and e.source in nodes})
    outputs = sorted({e.target for e in graph.edges if e.source == node_id and e.target in nodes})
    return [_dataset_ref(nodes[i]) for i in inputs], [_dataset_ref(nodes[o]) for o in outputs]


__all__ = [
    "MARQUEZ_STATES",
    "Row",
    "dataset_model",
    "dataset_row",
    "dataset_versions",
    "datasets",
    "events_by_run",
    "job_row",
    "jobs",
    "marquez_state",
    "job_type",
    "known_namespace",
    "namespace_model",
    "neighbours",
    "run_model",
    "runs",
    "version_refs",
]
