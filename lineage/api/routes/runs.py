"""``/api/v1/runs/{id}`` (also at Marquez's older ``/api/v1/jobs/runs/{id}``): one run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from lakebed.lineage.api import marquez
from lakebed.lineage.api.models import Run
from lakebed.lineage.api.routes.responses import API
from lakebed.lineage.api.state import Store

router = APIRouter(prefix="/api/v1", tags=["Runs"], responses=API)

RunId = Annotated[str, Path(description="The run id.")]


@router.get("/runs/{id:segment}", operation_id="getRun", summary="Retrieve a run")
def get_run(store: Store, id: RunId) -> Run:
    return marquez.runs(store, [id])[0]


@router.get(
    "/jobs/runs/{id:segment}", operation_id="getJobRun", summary="Retrieve a run (Marquez's older path)"
)
def get_job_run(store: Store, id: RunId) -> Run:
    return marquez.runs(store, [id])[0]
