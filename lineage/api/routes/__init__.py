"""The routers of the lineage API, one per resource."""

from __future__ import annotations

from fastapi import APIRouter

from lakebed.lineage.api.routes import datasets, jobs, lakebed, lineage, meta, namespaces, runs

ROUTERS: tuple[APIRouter, ...] = (
    meta.router,
    namespaces.router,
    datasets.router,
    jobs.router,
    runs.router,
    lineage.router,
    lakebed.router,
)

__all__ = ["ROUTERS"]
