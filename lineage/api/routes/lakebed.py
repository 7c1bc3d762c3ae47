"""``/api/v1/lakebed/*``: lakebed's additions to the Marquez API, version-exact and as of a time.

``producer`` is the run that wrote a table at an exact version; ``upstream``, ``downstream`` and ``graph``
(as of a time) answer JSON or a drawing (``format=svg|png|dot|mermaid``); ``history``, ``runs`` and
``events`` (the raw OpenLineage events of a run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from lakebed.lineage.api import marquez
from lakebed.lineage.api import models as m
from lakebed.lineage.api.masking import MASKING_STATE, Masking
from lakebed.lineage.api.params import (
    DEFAULT_LIMIT,
    LINEAGE_DEPTH,
    AsOf,
    Depth,
    Format,
    Limit,
    Table,
    Version,
)
from lakebed.lineage.api.routes.responses import API
from lakebed.lineage.api.state import Store
from lakebed.lineage.graph import Graph

if TYPE_CHECKING:
    from lakebed.lineage.render import Format as DrawingFormat

router = APIRouter(prefix="/api/v1/lakebed", tags=["lakebed"], responses=API)

MEDIA_TYPES: dict[DrawingFormat, str] = {
    "svg": "image/svg+xml",
    "png": "image/png",
    "dot": "text/vnd.graphviz",
    "mermaid": "text/plain",
}
DRAWINGS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The graph as JSON, or drawn in the requested format.",
        "content": {
            "image/svg+xml": {"schema": {"type": "string"}},
            "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
            "text/vnd.graphviz": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string", "description": "Mermaid"}},
        },
    }
}


class Drawing(Response):
    """A graph drawn by :mod:`lakebed.lineage.render` when the answer is sent: after the store is released."""

    def __init__(self, graph: Graph, fmt: DrawingFormat, title: str) -> None:
        self.graph, self.fmt, self.title = graph, fmt, title
        super().__init__(media_type=MEDIA_TYPES[fmt])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from lakebed.lineage.render import render

        masking: Masking | None = scope.get("state", {}).get(MASKING_STATE)
        graph = self.graph if masking is None else masking.graph(self.graph)
        self.body = await run_in_threadpool(render, graph, self.fmt, title=self.title)
        self.init_headers()
        await super().__call__(scope, receive, send)


def _nodes(graph: Graph) -> list[m.GraphNode]:
    return [
        m.GraphNode(
            id=n.id, kind=n.kind, label=n.label, namespace=n.namespace, name=n.name, details=n.details
        )
        for n in graph.nodes
    ]


def _edges(graph: Graph) -> list[m.GraphEdge]:
    return [m.GraphEdge(source=e.source, target=e.target, label=e.label) for e in graph.edges]


@router.get(
    "/producer",
    operation_id="getProducer",
    summary="The run that wrote a table at an exact version, with the versions it read",
)
def get_producer(store: Store, table: Table, version: Version = None) -> m.RunInfo:
    run = store.producer(table, version)
    return m.RunInfo.model_validate(
        {
            **run.__dict__,
            "inputs": marquez.version_refs(run.inputs),
            "outputs": marquez.version_refs(run.outputs),
        }
    )


@router.get(
    "/upstream",
    operation_id="getUpstream",
    summary="What a table version came from, run by run (optionally for one column)",
    response_model=m.UpstreamGraph,
    responses=DRAWINGS,
)
def get_upstream(
    store: Store,
    table: Table,
    version: Version = None,
    depth: Depth = LINEAGE_DEPTH,
    column: Annotated[
        str | None, Query(description="Follow only the columns this column derives from.")
    ] = None,
    fmt: Format = "json",
) -> m.UpstreamGraph | Response:
    graph = store.upstream(table, version, depth=depth, column=column)
    if fmt != "json":
        at = f"@{version}" if version is not None else ""
        return Drawing(graph, fmt, f"upstream of {table}{at}" + (f".{column}" if column else ""))
    return m.UpstreamGraph(
        table=table, version=version, column=column, nodes=_nodes(graph), edges=_edges(graph)
    )


@router.get(
    "/downstream",
    operation_id="getDownstream",
    summary="What was made from a table (from a version on)",
    response_model=m.DownstreamGraph,
    responses=DRAWINGS,
)
def get_downstream(
    store: Store,
    table: Table,
    version: Version = None,
    depth: Depth = LINEAGE_DEPTH,
    fmt: Format = "json",
) -> m.DownstreamGraph | Response:
    graph = store.downstream(table, version, depth=depth)
    if fmt != "json":
        at = f"@{version}" if version is not None else ""
        return Drawing(graph, fmt, f"downstream of {table}{at}")
    return m.DownstreamGraph(table=table, version=version, nodes=_nodes(graph), edges=_edges(graph))


@router.get(
    "/history", operation_id="getHistory", summary="Every version of a table with the run that wrote it"
)
def get_history(store: Store, table: Table) -> m.History:
    namespace, name = store.resolve(table)
    return m.History.model_validate(
        {"table": table, "namespace": namespace, "name": name, "versions": store.history(table)}
    )


@router.get(
    "/graph",
    operation_id="getGraph",
    summary="The whole lineage graph as of a time",
    response_model=m.GraphAsOf,
    responses=DRAWINGS,
)
def get_graph(
    store: Store,
    as_of: AsOf = None,
    include_system: Annotated[
        bool, Query(alias="includeSystem", description="Include lakebed's own system tables.")
    ] = False,
    fmt: Format = "json",
) -> m.GraphAsOf | Response:
    graph = store.graph(as_of=as_of, include_system=include_system)
    if fmt != "json":
        return Drawing(graph, fmt, f"lineage as of {as_of.isoformat()}" if as_of else "lineage")
    return m.GraphAsOf(asOf=as_of, includeSystem=include_system, nodes=_nodes(graph), edges=_edges(graph))


@router.get("/runs", operation_id="getLakebedRuns", summary="Runs, newest first")
def get_runs(
    store: Store,
    failed: Annotated[bool, Query(description="Only failed or aborted runs.")] = False,
    job: Annotated[str | None, Query(description="Only runs of this job.")] = None,
    limit: Limit = DEFAULT_LIMIT,
) -> m.RunRows:
    return m.RunRows.model_validate({"runs": store.runs(failed=failed, job=job, limit=limit)})


@router.get("/events", operation_id="getRunEvents", summary="The raw OpenLineage events of a run, in order")
def get_events(
    store: Store, run_id: Annotated[str, Query(alias="runId", description="The run id.")]
) -> m.RunEvents:
    store.run(run_id)  # 404 for an unknown run
    return m.RunEvents(runId=run_id, events=marquez.events_by_run(store, [run_id]).get(run_id, []))
