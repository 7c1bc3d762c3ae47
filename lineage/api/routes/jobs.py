"""``/api/v1/namespaces/{namespace}/jobs``: jobs, with what they read and write, and their runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from lakebed.lineage.api import marquez
from lakebed.lineage.api.models import Job, JobList, RunList
from lakebed.lineage.api.params import Page, page
from lakebed.lineage.api.routes.responses import API
from lakebed.lineage.api.state import Store

router = APIRouter(prefix="/api/v1/namespaces/{namespace:segment}/jobs", tags=["Jobs"], responses=API)

Namespace = Annotated[str, Path(description="The namespace, e.g. `lakebed`, percent-encoded.")]
Name = Annotated[str, Path(description="The job name, percent-encoded.")]
Paging = Annotated[Page, Depends(page)]


@router.get("/{job:name}/runs", operation_id="getRuns", summary="List the runs of a job, newest first")
def get_job_runs(store: Store, namespace: Namespace, job: Name, paging: Paging) -> RunList:
    rows = store.job_runs(namespace, job, limit=paging.offset + paging.limit)
    return RunList(runs=marquez.runs(store, [r["run_id"] for r in rows[paging.offset :]]))


@router.get("/{job:name}", operation_id="getJob", summary="Retrieve a job")
def get_job(store: Store, namespace: Namespace, job: Name) -> Job:
    return marquez.jobs(store, namespace, [marquez.job_row(store, namespace, job)])[0]


@router.get("", operation_id="getJobs", summary="List the jobs of a namespace")
def get_jobs(store: Store, namespace: Namespace, paging: Paging) -> JobList:
    marquez.known_namespace(store, namespace)
    rows, total = paging.of(store.jobs(namespace))
    return JobList(totalCount=total, jobs=marquez.jobs(store, namespace, rows))
