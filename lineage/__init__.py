"""Lineage: OpenLineage emission, the lineage store, auditor queries and graph rendering.

``from lakebed.lineage import LineageStore`` is the Python API for auditors (see :mod:`.store`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lakebed.lineage.store import LineageStore

__all__ = ["LineageStore"]


def __getattr__(name: str) -> Any:
    if name == "LineageStore":  # lazily: importing lakebed.lineage.events must stay light
        from lakebed.lineage.store import LineageStore

        return LineageStore
    raise AttributeError(f"module 'lakebed.lineage' has no attribute {name!r}")
