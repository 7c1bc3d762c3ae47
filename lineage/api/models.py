"""The response bodies of the lineage API, as pydantic models: the OpenAPI schemas are generated from them.

The Marquez-compatible models use Marquez's camelCase field names (``createdAt``, ``currentVersion``) and
add a few lakebed fields, each marked below; lakebed's own routes use the store's snake_case rows.
Timestamps are ISO-8601 instants; facets and events are free-form OpenLineage JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

MarquezState = Literal["RUNNING", "COMPLETED", "FAILED", "ABORTED"]
StoreState = Literal["RUNNING", "COMPLETE", "FAIL", "ABORT"]
DatasetType = Literal["DB_TABLE", "STREAM"]
JobType = Literal["BATCH", "STREAM"]
Facets = dict[str, JsonValue]


class Model(BaseModel):
    """Every response model: unknown fields are errors, so a response never carries more than its schema."""

    model_config = ConfigDict(extra="forbid")


# --- errors and the index ------------------------------------------------------------------------------


class Index(Model):
    name: str
    version: str
    openapi: str = Field(description="Where the OpenAPI document is.")
    endpoints: list[str]


# --- Marquez-compatible ---------------------------------------------------------------------------------


class Namespace(Model):
    name: str
    createdAt: dt.datetime | None
    updatedAt: dt.datetime | None
    ownerName: str | None
    description: str | None


class NamespaceList(Model):
    namespaces: list[Namespace]
    totalCount: int = Field(description="How many there are in all (before limit and offset).")


class DatasetId(Model):
    namespace: str
    name: str


class JobId(Model):
    namespace: str
    name: str


class DatasetVersionId(Model):
    namespace: str
    name: str
    version: str


class DatasetVersionRef(Model):
    """A dataset at the version a run read or wrote, with its lakebed table name."""

    namespace: str
    name: str
    version: str | None
    table: str | None


class SchemaField(Model):
    name: str | None
    type: str | None
    tags: list[str]
    description: str | None


class JobVersion(Model):
    """The job and the code version it ran."""

    namespace: str
    name: str
    version: str | None


class ParentRun(Model):
    id: str
    job: str | None = Field(description="`<namespace>:<name>` of the parent's job.")


class Run(Model):
    """Marquez's Run, plus lakebed's fields (from ``job`` on)."""

    id: str
    createdAt: dt.datetime | None
    updatedAt: dt.datetime | None
    nominalStartTime: dt.datetime | None
    nominalEndTime: dt.datetime | None
    state: MarquezState
    startedAt: dt.datetime | None
    endedAt: dt.datetime | None
    durationMs: int | None
    args: dict[str, str]
    jobVersion: JobVersion
    inputVersions: list[DatasetVersionRef]
    outputVersions: list[DatasetVersionRef]
    context: dict[str, str]
    facets: Facets = Field(description="Run facets: parent, errorMessage, processing_engine, lakebed.")
    job: JobId
    jobFacets: Facets
    codeVersion: str | None
    processing: str | None
    parentRun: ParentRun | None
    errorMessage: str | None
    dagsterRunId: str | None
    quality: dict[str, list[Facets]] = Field(description="Output table → its data quality assertions.")


class RunList(Model):
    runs: list[Run]


class Dataset(Model):
    """Marquez's Dataset; ``currentVersion`` is the Delta version, ``table`` the lakebed table."""

    id: DatasetId
    type: DatasetType
    name: str
    physicalName: str
    createdAt: dt.datetime | None
    updatedAt: dt.datetime | None
    namespace: str
    sourceName: str
    fields: list[SchemaField]
    tags: list[str]
    lastModifiedAt: dt.datetime | None
    lastLifecycleState: str | None
    description: str | None
    facets: Facets
    currentVersion: str | None
    deleted: bool
    table: str | None


class DatasetList(Model):
    totalCount: int = Field(description="How many there are in all (before limit and offset).")
    datasets: list[Dataset]


class DatasetVersion(Model):
    id: DatasetVersionId
    type: DatasetType
    name: str
    physicalName: str
    createdAt: dt.datetime | None
    version: str
    namespace: str
    sourceName: str
    fields: list[SchemaField]
    tags: list[str]
    description: str | None
    createdByRun: Run
    facets: Facets
    rowCount: int | None
    size: int | None


class DatasetVersionList(Model):
    totalCount: int = Field(description="How many there are in all (before limit and offset).")
    versions: list[DatasetVersion]


class Job(Model):
    id: JobId
    type: JobType
    name: str
    simpleName: str
    parentJobName: str | None
    createdAt: dt.datetime | None
    updatedAt: dt.datetime | None
    namespace: str
    inputs: list[DatasetId]
    outputs: list[DatasetId]
    location: str | None
    description: str | None
    latestRun: Run | None
    facets: Facets
    currentVersion: str | None = Field(description="The code version of the latest run.")
    runCount: int | None
    latestState: MarquezState | None


class JobList(Model):
    totalCount: int = Field(description="How many there are in all (before limit and offset).")
    jobs: list[Job]


class RunSummary(Model):
    id: str
    state: MarquezState
    startedAt: dt.datetime | None
    endedAt: dt.datetime | None


class LineageJob(Model):
    """A job node of the ``/lineage`` graph."""

    id: JobId
    type: JobType
    name: str
    simpleName: str
    namespace: str
    updatedAt: dt.datetime | None
    inputs: list[DatasetId]
    outputs: list[DatasetId]
    latestRun: RunSummary | None
    currentVersion: str | None
    runCount: int | None


class LineageEdge(Model):
    origin: str
    destination: str


class LineageNode(Model):
    id: str = Field(examples=["dataset:file:/lake/tables/orders", "job:lakebed:ingest"])
    type: Literal["DATASET", "JOB"]
    data: Dataset | LineageJob
    inEdges: list[LineageEdge]
    outEdges: list[LineageEdge]


class LineageGraph(Model):
    graph: list[LineageNode]


# --- lakebed's own --------------------------------------------------------------------------------------


class RunInfo(Model):
    """A run as the lineage store knows it: version-exact inputs and outputs."""

    run_id: str
    job_namespace: str
    job_name: str
    state: StoreState
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    code_version: str | None
    processing: str | None
    parent_run_id: str | None
    parent_job: str | None
    error: str | None
    dagster_run_id: str | None
    inputs: list[DatasetVersionRef]
    outputs: list[DatasetVersionRef]
    quality: dict[str, list[Facets]]


class GraphNode(Model):
    id: str
    kind: Literal["dataset", "job"]
    label: str
    namespace: str
    name: str
    details: dict[str, list[str]] = Field(description="versions (datasets), runs (jobs), columns.")


class GraphEdge(Model):
    source: str
    target: str
    label: str | None


class Graph(Model):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class UpstreamGraph(Graph):
    table: str
    version: int | None
    column: str | None


class DownstreamGraph(Graph):
    table: str
    version: int | None


class GraphAsOf(Graph):
    asOf: dt.datetime | None
    includeSystem: bool


class HistoryRow(Model):
    version: int | None
    run_id: str
    job: str
    written_at: dt.datetime | None
    code_version: str | None
    rows: int | None
    size: int | None
    parent_run_id: str | None


class History(Model):
    table: str
    namespace: str
    name: str
    versions: list[HistoryRow]


class RunRow(Model):
    run_id: str
    job: str
    state: StoreState
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    code_version: str | None
    parent_run_id: str | None
    error: str | None


class RunRows(Model):
    runs: list[RunRow]


class RunEvents(Model):
    runId: str
    events: list[Facets] = Field(description="The OpenLineage RunEvents of the run, in order.")
