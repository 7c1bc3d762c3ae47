"""lakebed: a Python data lakehouse and streaming feature pipeline.

The public API is exposed lazily (module-level ``__getattr__``) so that ``import lakebed.config`` and
``lakebed --help`` stay cheap and never import the heavy layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lakebed.version import PRODUCER, __version__

_PUBLIC: dict[str, str] = {
    "read_table": "lakebed.pipelines.read",
    "scan_table": "lakebed.pipelines.read",
    "sql": "lakebed.pipelines.read",
    "commit": "lakebed.pipelines.delta",
    "RunContext": "lakebed.pipelines.delta",
    "CommitResult": "lakebed.pipelines.delta",
    "Catalog": "lakebed.pipelines.catalog",
    "FeatureStore": "lakebed.feature_store",
    "FeatureClient": "lakebed.serving.client",
    "TableContract": "lakebed.schemas.contract",
    "ingest_files": "lakebed.pipelines.ingest",
    "ingest_unstructured": "lakebed.pipelines.unstructured",
    "read_content": "lakebed.pipelines.unstructured",
    "get_config": "lakebed.config",
    "LakebedError": "lakebed.errors",
    "LineageStore": "lakebed.lineage.store",
    "check_table": "lakebed.pipelines.quality",
    "model": "lakebed.schemas.python_models",
}

__all__ = [
    "PRODUCER",
    "__version__",
    "Catalog",
    "FeatureClient",
    "FeatureStore",
    "CommitResult",
    "LakebedError",
    "LineageStore",
    "RunContext",
    "TableContract",
    "check_table",
    "commit",
    "get_config",
    "ingest_files",
    "ingest_unstructured",
    "model",
    "read_content",
    "read_table",
    "scan_table",
    "sql",
]

if TYPE_CHECKING:
    from lakebed.config import get_config
    from lakebed.errors import LakebedError
    from lakebed.feature_store import FeatureStore
    from lakebed.lineage.store import LineageStore
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.delta import CommitResult, RunContext, commit
    from lakebed.pipelines.ingest import ingest_files
    from lakebed.pipelines.quality import check_table
    from lakebed.pipelines.read import read_table, scan_table, sql
    from lakebed.pipelines.unstructured import ingest_unstructured, read_content
    from lakebed.schemas.contract import TableContract
    from lakebed.schemas.python_models import model
    from lakebed.serving.client import FeatureClient


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'lakebed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
