"""OpenLineage events and facets as lakebed emits them, and dataset naming per the OpenLineage spec.

Datasets are named as the OpenLineage naming spec says: a local path is namespace ``file`` and its
absolute path; ``s3://bucket/key`` is namespace ``s3://bucket`` and ``key``; a Kafka topic is namespace
``kafka://host:port`` (the first bootstrap server) and the topic. Every lakebed table also carries the
``lakebed`` dataset facet naming the table, so queries can speak of tables by name.

Events are plain JSON-ready dicts built from ``openlineage.client`` classes (``event_v2``, ``facet_v2``),
scrubbed of secrets (:func:`scrub`) before they go anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from lakebed.quality.results import CheckRun, RuleResult
from lakebed.version import PRODUCER

LAKEBED_FACET_SCHEMA = "https://github.com/lakebed/lakebed/blob/main/docs/lineage.md#lakebed-facets"
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@")
_SECRET_WORDS = re.compile(
    r"(?i)(password|passwd|secret|token|access[_-]?key|session[_-]?token|api[_-]?key)(\"?\s*[=:]\s*\"?)([^\s\"'&,;]+)"
)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as OpenLineage names it, with what lakebed knows of it at one version."""

    namespace: str
    name: str
    version: str | None = None
    table: str | None = None  # the lakebed table name, when it is one
    schema: pa.Schema | None = field(default=None, compare=False)
    rows: int | None = field(default=None, compare=False)
    size: int | None = field(default=None, compare=False)
    column_lineage: Mapping[str, Sequence[tuple[DatasetRef, str, str]]] | None = field(
        default=None, compare=False
    )  # output column → (input dataset, input column, "TYPE:SUBTYPE[:description]")
    quality: CheckRun | None = field(default=None, compare=False)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)  # more lakebed facet keys

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def location(uri: str) -> tuple[str, str]:
    """The OpenLineage ``(namespace, name)`` of a storage location (a path or an object-store URI)."""
    if "://" not in uri:
        return "file", str(Path(uri).resolve())
    parts = urlsplit(uri.rstrip("/"))
    if parts.scheme == "file":
        return "file", str(Path(parts.path).resolve())
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}", parts.path.lstrip("/")


def table_dataset(table: str, uri: str, version: int | None, **details: Any) -> DatasetRef:
    namespace, name = location(uri)
    return DatasetRef(namespace, name, None if version is None else str(version), table=table, **details)


def file_dataset(path: str | Path, *, sha256: str | None = None, **details: Any) -> DatasetRef:
    return DatasetRef("file", str(Path(path).resolve()), sha256, **details)


def kafka_dataset(
    bootstrap: str, topic: str, offsets: Mapping[int, tuple[int, int]] | None = None
) -> DatasetRef:
    """A topic; ``offsets`` (partition → first, last) become its version and the ``lakebed`` facet."""
    first = bootstrap.split(",")[0].strip()
    host = first.split("://")[-1].split("@")[-1]
    version = None
    extra: dict[str, Any] = {}
    if offsets:
        version = ",".join(f"{p}:{a}-{b}" for p, (a, b) in sorted(offsets.items()))
        extra["offsets"] = {str(p): [a, b] for p, (a, b) in sorted(offsets.items())}
    return DatasetRef(f"kafka://{host}", topic, version, extra=extra)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: URL user-info, ``password=...``-style values and the given secrets."""
    text = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    text = _SECRET_WORDS.sub(lambda m: m.group(1) + m.group(2) + "***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def scrub_event(event: dict[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The event with every string scrubbed (see :func:`scrub`)."""
    secrets = [s for s in secrets if s]

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value, secrets)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(event)


def _type_name(dtype: pa.DataType) -> str:
    from lakebed.schemas.types import type_name

    try:
        return type_name(dtype)
    except Exception:  # nested or exotic types: Arrow's own name
        return str(dtype)


def dataset_facets(ref: DatasetRef, *, output: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dataset facets and the input/output facets of ``ref``."""
    from openlineage.client.facet_v2 import (
        column_lineage_dataset,
        dataset_version_dataset,
        datasource_dataset,
        output_statistics_output_dataset,
        schema_dataset,
    )

    facets: dict[str, Any] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(
            name=ref.namespace,
            uri=ref.namespace if "://" in ref.namespace else f"{ref.namespace}://",
            producer=PRODUCER,
        ),
    }
    if ref.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=ref.version, producer=PRODUCER
        )
    if ref.schema is not None:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=f.name, type=_type_name(f.type))
                for f in ref.schema
            ],
            producer=PRODUCER,
        )
    if ref.column_lineage:
        facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(
            fields={
                column: column_lineage_dataset.Fields(
                    inputFields=[
                        column_lineage_dataset.InputField(
                            namespace=source.namespace,
                            name=source.name,
                            field=source_column,
                            transformations=[_transformation(how)],
                        )
                        for source, source_column, how in sources
                    ]
                )
                for column, sources in ref.column_lineage.items()
            },
            producer=PRODUCER,
        )
    io_facets: dict[str, Any] = {}
    if ref.quality is not None and ref.quality.results:
        # The spec's dataQualityAssertions is an input facet; on an output it describes the written data.
        (facets if output else io_facets)["dataQualityAssertions"] = assertions_facet(ref.quality.results)
    lakebed_facet = {k: v for k, v in {"table": ref.table, **ref.extra}.items() if v is not None}
    if lakebed_facet:
        facets["lakebed"] = {"_producer": PRODUCER, "_schemaURL": LAKEBED_FACET_SCHEMA, **lakebed_facet}
    if output and (ref.rows is not None or ref.size is not None):
        io_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=ref.rows, size=ref.size, producer=PRODUCER
        )
    return facets, io_facets


def _transformation(how: str) -> Any:
    """``"DIRECT:IDENTITY"`` or ``"DIRECT:AGGREGATION:sum over 1h"`` → an OpenLineage transformation."""
    from openlineage.client.facet_v2 import column_lineage_dataset

    kind, _, rest = how.partition(":")
    subtype, _, description = rest.partition(":")
    return column_lineage_dataset.Transformation(
        type=kind, subtype=subtype or None, description=description or None
    )


@dataclass(frozen=True)
class JobInfo:
    """The job of a run: its name, whether it is a batch or streaming job, and the code version."""

    namespace: str
    name: str
    processing: str = "BATCH"  # or STREAMING
    job_type: str = "JOB"
    code_version: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class ParentRef:
    run_id: str
    namespace: str
    name: str


def run_event(
    event_type: str,
    *,
    run_id: str,
    job: JobInfo,
    inputs: Sequence[DatasetRef] = (),
    outputs: Sequence[DatasetRef] = (),
    parent: ParentRef | None = None,
    error: BaseException | str | None = None,
    tags: Mapping[str, str] | None = None,
    event_time: dt.datetime | None = None,
    secrets: Iterable[str] | None = (),
) -> dict[str, Any]:
    """One OpenLineage ``RunEvent`` (START, RUNNING, COMPLETE, FAIL, ABORT) as a JSON dict, scrubbed of
    ``secrets`` and credentials (``secrets=None`` leaves scrubbing to the caller: the emitter scrubs the
    serialised line in one pass)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        error_message_run,
        job_type_job,
        parent_run,
        processing_engine_run,
        source_code_location_job,
    )
    from openlineage.client.serde import Serde

    from lakebed.version import __version__

    run_facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=__version__, name="lakebed", producer=PRODUCER
        ),
    }
    if parent is not None:
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent.run_id),
            job=parent_run.Job(namespace=parent.namespace, name=parent.name),
            producer=PRODUCER,
        )
    if error is not None:
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="python", producer=PRODUCER
        )
    if tags:
        run_facets["lakebed"] = {
            "_producer": PRODUCER,
            "_schemaURL": LAKEBED_FACET_SCHEMA,
            "tags": dict(tags),
        }
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType=job.processing, integration="LAKEBED", jobType=job.job_type, producer=PRODUCER
        ),
    }
    if job.code_version:
        job_facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url=PRODUCER, version=job.code_version, producer=PRODUCER
        )
    input_datasets = []
    for ref in inputs:
        facets, io = dataset_facets(ref, output=False)
        input_datasets.append(
            InputDataset(namespace=ref.namespace, name=ref.name, facets=facets, inputFacets=io)
        )
    output_datasets = []
    for ref in outputs:
        facets, io = dataset_facets(ref, output=True)
        output_datasets.append(
            OutputDataset(namespace=ref.namespace, name=ref.name, facets=facets, outputFacets=io)
        )
    event = RunEvent(
        eventType=RunState[event_type],
        eventTime=(event_time or dt.datetime.now(dt.UTC)).isoformat(),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=job.namespace, name=job.name, facets=job_facets),
        inputs=input_datasets,
        outputs=output_datasets,
        producer=PRODUCER,
    )
    return (
        scrub_event(json.loads(Serde.to_json(event)), secrets)
        if secrets is not None
        else json.loads(Serde.to_json(event))
    )


def assertions_facet(results: Sequence[RuleResult]) -> Any:
    """The OpenLineage ``dataQualityAssertions`` dataset facet of a check run: one assertion per rule
    (its name, whether it passed, its column where it has exactly one, severity, and the observed value)."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dqa

    return dqa.DataQualityAssertionsDatasetFacet(
        assertions=[
            dqa.Assertion(
                assertion=r.rule.name,
                success=r.passed,
                column=r.rule.columns[0] if len(r.rule.columns) == 1 else None,
                severity=r.rule.severity,
                description=r.rule.description,
                actual=r.observed or None,
            )
            for r in results
        ],
        producer=PRODUCER,
    )


__all__ = [
    "DatasetRef",
    "assertions_facet",
    "JobInfo",
    "ParentRef",
    "file_dataset",
    "kafka_dataset",
    "location",
    "run_event",
    "scrub",
    "scrub_event",
    "table_dataset",
]
