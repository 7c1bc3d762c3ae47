"""What an auditor sees of tables their role may not read: the whole graph, without the tables' details.

The lineage API answers every principal with ``read_lineage`` the whole graph (which runs read and wrote
which dataset versions), as Unity Catalog shows lineage across objects one cannot read. For a dataset
whose table the principal's role may not ``read_table``, the details are masked in every answer:

* schemas: ``fields`` lists are emptied, the ``schema`` facet is dropped, a column lineage ``field`` of
  that dataset reads ``"<masked>"``, and a graph node's ``columns`` detail is emptied;
* column lineage and statistics: every dataset facet but ``version``, ``dataSource``, ``symlinks`` and
  ``lifecycleStateChange`` is dropped (``columnLineage``, ``outputStatistics``, data quality ...), and
  ``rowCount``/``size`` read null; a run's quality assertions on the table are left out.

A dataset is anything with a string ``namespace`` and ``name`` (Marquez datasets, OpenLineage inputs and
outputs, lakebed's version references and graph nodes); jobs have those too and are never masked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lakebed.lineage.graph import Graph

MASKED = "<masked>"
MASKING_STATE = "lakebed.masking"
"""Where a request's :class:`Masking` (or None) is kept in the ASGI scope's state, for drawings."""
_KEPT_FACETS = frozenset({"version", "dataSource", "symlinks", "lifecycleStateChange"})
_FACETS = ("facets", "inputFacets", "outputFacets")


@dataclass(frozen=True)
class Masking:
    """Masks the datasets for which ``readable(namespace, name)`` is false (see the module docstring);
    ``readable_table(label)`` decides the same for a lakebed table name."""

    readable: Callable[[str, str], bool]
    readable_table: Callable[[str], bool]

    def json(self, value: Any) -> Any:
        """``value`` (decoded JSON) with the restricted datasets' details masked."""
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if not isinstance(value, dict):
            return value
        out = {key: self.json(item) for key, item in value.items()}
        quality = out.get("quality")
        if isinstance(quality, dict) and "run_id" in out:
            out["quality"] = {table: found for table, found in quality.items() if self.readable_table(table)}
        namespace, name = out.get("namespace"), out.get("name")
        if isinstance(namespace, str) and isinstance(name, str) and not self._open(out, namespace, name):
            self._mask(out)
        return out

    def _open(self, item: dict[str, Any], namespace: str, name: str) -> bool:
        table = item.get("table")
        if isinstance(table, str) and not self.readable_table(table):
            return False
        return self.readable(namespace, name)

    @staticmethod
    def _mask(item: dict[str, Any]) -> None:
        if isinstance(item.get("fields"), list):
            item["fields"] = []
        for key in _FACETS:
            facets = item.get(key)
            if isinstance(facets, dict):
                item[key] = {k: v for k, v in facets.items() if k in _KEPT_FACETS}
        if isinstance(item.get("field"), str):
            item["field"] = MASKED
        details = item.get("details")
        if isinstance(details, dict) and "columns" in details:
            item["details"] = {**details, "columns": []}
        for key in ("rowCount", "size"):
            if key in item:
                item[key] = None

    def graph(self, graph: Graph) -> Graph:
        """``graph`` with the restricted datasets' column details emptied (what a drawing shows)."""
        nodes = tuple(
            replace(node, details={**node.details, "columns": []})
            if node.kind == "dataset"
            and "columns" in node.details
            and not self.readable(node.namespace, node.name)
            else node
            for node in graph.nodes
        )
        return replace(graph, nodes=nodes)


__all__ = ["MASKED", "MASKING_STATE", "Masking"]
