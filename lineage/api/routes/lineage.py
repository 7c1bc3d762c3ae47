"""``/api/v1/lineage``: Marquez's lineage graph around a dataset or a job."""

from __future__ import annotations

from fastapi import APIRouter

from lakebed.lineage.api import marquez
from lakebed.lineage.api import models as m
from lakebed.lineage.api.params import MARQUEZ_DEPTH, Depth, NodeId
from lakebed.lineage.api.routes.responses import API
from lakebed.lineage.api.state import Store
from lakebed.lineage.graph import Graph, Node
from lakebed.lineage.store import LineageStore

router = APIRouter(prefix="/api/v1", tags=["Lineage"], responses=API)


@router.get("/lineage", operation_id="getLineage", summary="The lineage graph around a dataset or job")
def get_lineage(store: Store, node_id: NodeId, depth: Depth = MARQUEZ_DEPTH) -> m.LineageGraph:
    return lineage_graph(store, store.node_lineage(node_id, depth=depth))


def lineage_graph(store: LineageStore, graph: Graph) -> m.LineageGraph:
    """A part of the lineage graph as Marquez's ``/lineage`` answer: nodes with their data and edges."""
    full = store.graph(include_system=True)
    edges = sorted({(e.source, e.target) for e in graph.edges})
    dataset_rows: dict[str, dict[str, marquez.Row]] = {}
    job_rows: dict[str, dict[str, marquez.Row]] = {}
    nodes = []
    for node in sorted(graph.nodes, key=lambda n: n.id):
        data: m.Dataset | m.LineageJob
        if node.kind == "dataset":
            if node.namespace not in dataset_rows:
                dataset_rows[node.namespace] = {r["name"]: r for r in store.datasets(node.namespace)}
            row = dataset_rows[node.namespace].get(node.name) or {"name": node.name, "table_name": None}
            versions = store.dataset_versions(node.namespace, node.name)
            data = marquez.dataset_model(node.namespace, row, versions, None)
            data.table = data.table or node.label
        else:
            if node.namespace not in job_rows:
                job_rows[node.namespace] = {r["name"]: r for r in store.jobs(node.namespace)}
            data = _lineage_job(store, full, node, job_rows[node.namespace].get(node.name) or {})
        nodes.append(
            m.LineageNode(
                id=node.id,
                type="DATASET" if node.kind == "dataset" else "JOB",
                data=data,
                inEdges=[m.LineageEdge(origin=s, destination=t) for s, t in edges if t == node.id],
                outEdges=[m.LineageEdge(origin=s, destination=t) for s, t in edges if s == node.id],
            )
        )
    return m.LineageGraph(graph=nodes)


def _lineage_job(store: LineageStore, full: Graph, node: Node, row: marquez.Row) -> m.LineageJob:
    latest_rows = store.job_runs(node.namespace, node.name, limit=1) if row else []
    latest = store.run(latest_rows[0]["run_id"]) if latest_rows else None
    inputs, outputs = marquez.neighbours(full, node.id)
    return m.LineageJob(
        id=m.JobId(namespace=node.namespace, name=node.name),
        type=marquez.job_type(latest.processing if latest else None),
        name=node.name,
        simpleName=node.name,
        namespace=node.namespace,
        updatedAt=row.get("updated_at"),
        inputs=inputs,
        outputs=outputs,
        latestRun=m.RunSummary(
            id=latest.run_id,
            state=marquez.marquez_state(latest.state),
            startedAt=latest.started_at,
            endedAt=latest.ended_at,
        )
        if latest
        else None,
        currentVersion=latest.code_version if latest else None,
        runCount=row.get("runs"),
    )
