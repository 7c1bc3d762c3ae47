"""What the lineage store answers with: dataset versions, runs, and the graphs of upstream and
downstream walks over its in-memory index (:mod:`lakebed.lineage.index`), built without cyclic garbage
collection (see :func:`cyclic_gc_paused`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakebed.errors import LineageNotFoundError
from lakebed.lineage.graph import Edge, Graph, Node, dataset_id, job_id
from lakebed.lineage.index import LineageIndex, Written, build_index


@dataclass(frozen=True)
class DatasetVersion:
    namespace: str
    name: str
    version: str | None
    table: str | None

    def describe(self) -> str:
        """``table@version`` (a file by its name, a long version such as a content hash shortened)."""
        label = self.table or (Path(self.name).name if self.namespace == "file" else self.name)
        if self.version is None:
            return label
        version = self.version if len(self.version) <= 16 else self.version[:12] + "…"
        return f"{label}@{version}"


@dataclass(frozen=True)
class RunInfo:
    """One run as the store knows it."""

    run_id: str
    job_namespace: str
    job_name: str
    state: str  # COMPLETE, FAIL, ABORT, or RUNNING when no terminal event has arrived
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    code_version: str | None
    processing: str | None
    parent_run_id: str | None
    parent_job: str | None
    error: str | None
    dagster_run_id: str | None = None
    inputs: tuple[DatasetVersion, ...] = ()
    outputs: tuple[DatasetVersion, ...] = ()
    quality: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # output table → assertions

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("inputs", "outputs")}
        data["inputs"] = [d.__dict__ for d in self.inputs]
        data["outputs"] = [d.__dict__ for d in self.outputs]
        for key in ("started_at", "ended_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a walk builds its answer. An answer holds no reference
    cycles, and at a million events the index is millions of objects: a large answer would pay a hundred
    young collections and, now and then, a full one over the whole index (~0.5 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def long_lived_index(db: Any) -> LineageIndex:
    """The index of ``db``, built with the cyclic collector paused and then frozen (``gc.freeze``): it
    holds no reference cycles and lives until the next reload, yet at a million events it is millions of
    objects that every full collection would traverse again (~0.5 s each, the slowest answers). Frozen,
    collections skip it; the previous index is still freed by reference counting when replaced. Garbage
    already waiting is collected first, so nothing unreachable is frozen with it."""
    gc.collect()
    with cyclic_gc_paused():
        index = build_index(db, DatasetVersion)
    gc.freeze()
    return index


class GraphBuilder:
    """Collects nodes and edges in the order they are first met; the nodes are made at the end."""

    def __init__(self, index: LineageIndex) -> None:
        self.index = index
        # node id → [label, namespace, name, versions (ordered, as dict keys), columns] or [name, namespace, runs]
        self.datasets: dict[str, list[Any]] = {}
        self.jobs: dict[str, list[Any]] = {}
        self.order: dict[str, None] = {}
        self.edges: dict[Edge, None] = {}

    def dataset(
        self,
        namespace: str,
        name: str,
        version: str | None,
        *,
        columns: list[str] | None = None,
        table: str | None = None,
    ) -> str:
        node_id = dataset_id(namespace, name)
        entry = self.datasets.get(node_id)
        if entry is None:
            entry = self._new_dataset(node_id, namespace, name, table)
        elif table:
            entry[0] = table
        if version is not None:
            entry[3][version] = None
        if columns:
            known = entry[4]
            for column in columns:
                if column not in known:
                    known.append(column)
        return node_id

    def written(self, out: Written) -> None:
        """Add an output of a run met downstream, and the edge to it from the run's job."""
        entry = self.datasets.get(out.node_id)
        if entry is None:
            entry = self._new_dataset(out.node_id, *out.dataset, None)
        if out.version is not None:
            entry[3][out.version] = None
        self.edges[out.edge] = None

    def _new_dataset(self, node_id: str, namespace: str, name: str, table: str | None) -> list[Any]:
        entry = self.datasets[node_id] = [
            table or table_label(self.index, namespace, name),
            namespace,
            name,
            {},
            [],
        ]
        self.order[node_id] = None
        return entry

    def job(self, node_id: str, namespace: str, name: str, run_id: str) -> str:
        entry = self.jobs.get(node_id)
        if entry is None:
            entry = self.jobs[node_id] = [name, namespace, [run_id]]
            self.order[node_id] = None
        elif entry[2] is None:
            entry[2] = [run_id]
        else:
            entry[2].append(run_id)
        return node_id

    def job_named(self, namespace: str, name: str) -> str:
        node_id = job_id(namespace, name)
        if node_id not in self.jobs:
            self.jobs[node_id] = [name, namespace, None]
            self.order[node_id] = None
        return node_id

    def edge(self, source: str, target: str, label: str | None = None) -> None:
        self.edges[Edge(source, target, label)] = None

    def graph(self) -> Graph:
        nodes: list[Node] = []
        for node_id in self.order:
            entry = self.datasets.get(node_id)
            if entry is not None:
                details: dict[str, Any] = {"versions": list(entry[3])}
                if entry[4]:
                    details["columns"] = entry[4]
                nodes.append(Node(node_id, "dataset", entry[0], entry[1], entry[2], details))
            else:
                name, namespace, runs = self.jobs[node_id]
                nodes.append(
                    Node(node_id, "job", name, namespace, name, {} if runs is None else {"runs": runs})
                )
        return Graph(tuple(nodes), tuple(self.edges))


def table_label(index: LineageIndex, namespace: str, name: str) -> str:
    label = index.labels.get((namespace, name))
    if label is not None:
        return label
    return name if namespace != "file" else Path(name).name


def resolve(index: LineageIndex, table: str) -> tuple[str, str]:
    found = index.by_table.get(table) or index.by_text.get(table)
    if found is None:
        raise LineageNotFoundError(f"no lineage for table or dataset {table!r}")
    return found


def run_info(index: LineageIndex, run_id: str) -> RunInfo:
    from lakebed.lineage.runs import DAGSTER_NAMESPACE

    run = index.runs.get(run_id)
    if run is None:
        raise LineageNotFoundError(f"no run {run_id!r} in the lineage store")
    row = index.detail(run)
    dagster_run_id = None
    parent = row
    for _ in range(4):  # a micro-batch's parent is the worker, whose parent may be the Dagster run
        if parent.get("parent_run_id") is None:
            break
        if parent.get("parent_job_namespace") == DAGSTER_NAMESPACE:
            dagster_run_id = str(parent["parent_run_id"])
            break
        above = index.runs.get(parent["parent_run_id"])
        if above is None:
            break
        parent = index.detail(above)
    quality: dict[str, list[dict[str, Any]]] = {}
    for label, assertions in run.quality:
        quality[label] = json.loads(assertions)
    return RunInfo(
        run_id=run_id,
        job_namespace=row["job_namespace"],
        job_name=row["job_name"],
        state=row["state"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        code_version=row["code_version"],
        processing=row["processing"],
        parent_run_id=row["parent_run_id"],
        parent_job=f"{row['parent_job_namespace']}:{row['parent_job_name']}"
        if row["parent_run_id"]
        else None,
        error=row["error"],
        dagster_run_id=dagster_run_id,
        inputs=tuple(run.inputs),
        outputs=tuple(run.outputs),
        quality=quality,
    )


def component(graph: Graph, start: str, depth: int) -> Graph:
    """The part of ``graph`` within ``depth`` hops of ``start`` (following edges either way)."""
    neighbours: dict[str, set[str]] = {}
    for e in graph.edges:
        neighbours.setdefault(e.source, set()).add(e.target)
        neighbours.setdefault(e.target, set()).add(e.source)
    keep, frontier = {start}, {start}
    for _ in range(depth):
        frontier = {n for f in frontier for n in neighbours.get(f, ())} - keep
        if not frontier:
            break
        keep |= frontier
    return Graph(
        tuple(n for n in graph.nodes if n.id in keep),
        tuple(e for e in graph.edges if e.source in keep and e.target in keep),
    )


__all__ = [
    "DatasetVersion",
    "GraphBuilder",
    "RunInfo",
    "component",
    "cyclic_gc_paused",
    "long_lived_index",
    "resolve",
    "run_info",
    "table_label",
]
