"""The lineage graph as queries return it and renderers draw it: datasets and jobs joined by edges.

An edge goes from a dataset to the job that read it, or from a job to the dataset it wrote. Node ids are
Marquez-style: ``dataset:<namespace>:<name>`` and ``job:<namespace>:<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

NodeKind = Literal["dataset", "job"]


@dataclass(frozen=True)
class Node:
    id: str
    kind: NodeKind
    label: str  # what a person reads: the table name, or the job name
    namespace: str
    name: str
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str | None = None  # e.g. the version read or written


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def ids(self, kind: NodeKind | None = None) -> set[str]:
        return {n.id for n in self.nodes if kind is None or n.kind == kind}


def dataset_id(namespace: str, name: str) -> str:
    return f"dataset:{namespace}:{name}"


def job_id(namespace: str, name: str) -> str:
    return f"job:{namespace}:{name}"


__all__ = ["Edge", "Graph", "Node", "NodeKind", "dataset_id", "job_id"]
