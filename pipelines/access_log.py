"""The ``access_log`` table: one row per request a lakebed server answered (who, role, action, resource,
allowed or denied, status, when), appended in batches by each server's :class:`lakebed.access.AccessLog`.

Rows go through the one write path (``commit``), but without lineage events: the log records reads, and a
lineage run per batch would bury the lineage of the data. Query it with ``lakebed sql`` or
``lakebed access log``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from lakebed.access import AccessLog, Gate
from lakebed.config import LakebedConfig
from lakebed.pipelines.delta import RunContext, commit

ACCESS_LOG = "access_log"
_RELOAD_SECONDS = 5.0
SCHEMA = pa.schema(  # also the order of an access record's tuple (lakebed.access.AccessLog.record)
    [
        pa.field("requested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("server", pa.string(), nullable=False),
        pa.field("principal", pa.string()),
        pa.field("role", pa.string()),
        pa.field("action", pa.string()),
        pa.field("resource", pa.string()),
        pa.field("allowed", pa.bool_(), nullable=False),
        pa.field("status", pa.int32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("client", pa.string()),
    ]
)


def access_log_sink(config: LakebedConfig) -> Callable[[list[tuple[Any, ...]]], None]:
    """Appends a batch of access records (tuples of :data:`SCHEMA`'s fields, in order) to ``access_log``
    in one commit."""
    quiet = config.model_copy(update={"lineage_enabled": False})

    def append(rows: list[tuple[Any, ...]]) -> None:
        columns = [
            pa.array(values, f.type) for f, values in zip(SCHEMA, zip(*rows, strict=True), strict=True)
        ]
        table = pa.Table.from_arrays(columns, schema=SCHEMA)
        commit(ACCESS_LOG, table, run=RunContext(job="access_log"), config=quiet)

    return append


def server_gate(config: LakebedConfig, *, realm: str, token: str | None, log: bool = True) -> Gate:
    """The gate of a server of the current project: its ``access.yaml`` policy (if any), the single
    ``token``, its tables' tags (from the sources and models that make them), and, with ``log``, an
    access log appending to ``access_log`` (started)."""
    from lakebed.config import find_project
    from lakebed.schemas.access import find_access, load_access

    root = find_project()
    path = find_access(root)
    policy = load_access(path) if path is not None else None
    tags: dict[str, tuple[str, ...]] = {}
    if root is not None and policy is not None:
        from lakebed.schemas.project import load_project

        project = load_project(root)
        for source in project.sources:
            tags[source.table] = (*tags.get(source.table, ()), *source.tags)
        for name, model in project.models.items():
            tags[name] = (*tags.get(name, ()), *model.options.tags)
    access = AccessLog(access_log_sink(config), server=realm) if log else None
    return Gate(
        realm=realm, policy=policy, token=token, tags=lambda name: tags.get(name, ()), access_log=access
    )


def dataset_tables(config: LakebedConfig) -> Callable[[str, str], str | None]:
    """The lakebed table of an OpenLineage dataset (``namespace``, ``name``), from the catalog (re-read at
    most every few seconds when a name is not found, so tables created while a server runs are known)."""
    from lakebed.lineage.events import location
    from lakebed.pipelines.catalog import Catalog

    known: dict[tuple[str, str], str] = {}
    loaded = [0.0]

    def table(namespace: str, name: str) -> str | None:
        found = known.get((namespace, name))
        if found is None and time.monotonic() - loaded[0] > _RELOAD_SECONDS:
            for entry in Catalog(config).list():
                known[location(entry.uri)] = entry.name
            loaded[0] = time.monotonic()
            found = known.get((namespace, name))
        return found

    return table


__all__ = ["ACCESS_LOG", "SCHEMA", "access_log_sink", "dataset_tables", "server_gate"]
