"""OpenLineage events and facets as lakebed emits them, and dataset naming per the OpenLineage spec.

Datasets are named as the OpenLineage naming spec says: a local path is namespace ``file`` and its
absolute path; ``s3://bucket/key`` is namespace ``s3://bucket`` and ``key``; a Kafka topic is namespace
``kafka://host:port`` (the first bootstrap server) and the topic. Every lakebed table also carries the
``lakebed`` dataset facet naming the table, so queries can speak of tables by name.

Events are plain JSON-ready dicts built directly in the shapes ``openlineage.client``'s classes
(``event_v2``, ``facet_v2``) serialise to (the tests hold them to those classes and the spec's schema),
scrubbed of secrets (:func:`scrub`) before they go anywhere.
"""

from __future__ import annotations

import datetime as dt
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
    seen: dict[str, str] = {}  # facet URLs, names and namespaces repeat within an event

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            clean = seen.get(value)
            if clean is None:
                clean = seen[value] = scrub(value, secrets)
            return clean
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


_EVENT_TYPES = frozenset({"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"})
_SPEC = "https://openlineage.io/spec"
_SCHEMA_URLS = {
    name: f"{_SPEC}/{path}.json#/$defs/{path.rpartition('/')[2]}"
    for name, path in {
        "columnLineage": "facets/1-2-0/ColumnLineageDatasetFacet",
        "version": "facets/1-0-1/DatasetVersionDatasetFacet",
        "dataSource": "facets/1-0-1/DatasourceDatasetFacet",
        "outputStatistics": "facets/1-0-2/OutputStatisticsOutputDatasetFacet",
        "schema": "facets/1-2-0/SchemaDatasetFacet",
        "dataQualityAssertions": "facets/1-1-0/DataQualityAssertionsDatasetFacet",
        "errorMessage": "facets/1-0-1/ErrorMessageRunFacet",
        "jobType": "facets/2-0-4/JobTypeJobFacet",
        "parent": "facets/1-2-0/ParentRunFacet",
        "processing_engine": "facets/1-1-1/ProcessingEngineRunFacet",
        "sourceCodeLocation": "facets/1-1-0/SourceCodeLocationJobFacet",
    }.items()
}
_EVENT_SCHEMA_URL = f"{_SPEC}/2-0-2/OpenLineage.json#/$defs/RunEvent"


def _facet(kind: str, /, **fields: Any) -> dict[str, Any]:
    """An OpenLineage facet as the spec serialises it: ``_producer``, ``_schemaURL``, no null fields."""
    facet: dict[str, Any] = {"_producer": PRODUCER, "_schemaURL": _SCHEMA_URLS[kind]}
    facet.update((k, v) for k, v in fields.items() if v is not None)
    return facet


def dataset_facets(ref: DatasetRef, *, output: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dataset facets and the input/output facets of ``ref``."""
    facets: dict[str, Any] = {
        "dataSource": _facet(
            "dataSource",
            name=ref.namespace,
            uri=ref.namespace if "://" in ref.namespace else f"{ref.namespace}://",
        ),
    }
    if ref.version is not None:
        facets["version"] = _facet("version", datasetVersion=ref.version)
    if ref.schema is not None:
        facets["schema"] = _facet(
            "schema",
            fields=[{"name": f.name, "type": _type_name(f.type), "fields": []} for f in ref.schema],
        )
    if ref.column_lineage:
        facets["columnLineage"] = _facet(
            "columnLineage",
            dataset=[],
            fields={
                column: {
                    "inputFields": [
                        {
                            "namespace": source.namespace,
                            "name": source.name,
                            "field": source_column,
                            "transformations": [_transformation(how)],
                        }
                        for source, source_column, how in sources
                    ]
                }
                for column, sources in ref.column_lineage.items()
            },
        )
    io_facets: dict[str, Any] = {}
    if ref.quality is not None and ref.quality.results:
        # The spec's dataQualityAssertions is an input facet; on an output it describes the written data.
        (facets if output else io_facets)["dataQualityAssertions"] = assertions_facet(ref.quality.results)
    lakebed_facet = {k: v for k, v in {"table": ref.table, **ref.extra}.items() if v is not None}
    if lakebed_facet:
        facets["lakebed"] = {"_producer": PRODUCER, "_schemaURL": LAKEBED_FACET_SCHEMA, **lakebed_facet}
    if output and (ref.rows is not None or ref.size is not None):
        io_facets["outputStatistics"] = _facet("outputStatistics", rowCount=ref.rows, size=ref.size)
    return facets, io_facets


def _transformation(how: str) -> dict[str, Any]:
    """``"DIRECT:IDENTITY"`` or ``"DIRECT:AGGREGATION:sum over 1h"`` → an OpenLineage transformation."""
    kind, _, rest = how.partition(":")
    subtype, _, description = rest.partition(":")
    transformation = {"type": kind}
    if subtype:
        transformation["subtype"] = subtype
    if description:
        transformation["description"] = description
    return transformation


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
    from lakebed.version import __version__

    run_facets: dict[str, Any] = {
        "processing_engine": _facet("processing_engine", version=__version__, name="lakebed"),
    }
    if parent is not None:
        run_facets["parent"] = _facet(
            "parent",
            run={"runId": parent.run_id, "facets": {}},
            job={"namespace": parent.namespace, "name": parent.name, "facets": {}},
        )
    if error is not None:
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        run_facets["errorMessage"] = _facet("errorMessage", message=message, programmingLanguage="python")
    if tags:
        run_facets["lakebed"] = {
            "_producer": PRODUCER,
            "_schemaURL": LAKEBED_FACET_SCHEMA,
            "tags": dict(tags),
        }
    job_facets: dict[str, Any] = {
        "jobType": _facet(
            "jobType", processingType=job.processing, integration="LAKEBED", jobType=job.job_type
        ),
    }
    if job.code_version:
        job_facets["sourceCodeLocation"] = _facet(
            "sourceCodeLocation", type="git", url=PRODUCER, version=job.code_version
        )
    if event_type not in _EVENT_TYPES:
        raise KeyError(event_type)
    input_datasets = []
    for ref in inputs:
        facets, io = dataset_facets(ref, output=False)
        input_datasets.append(
            {"namespace": ref.namespace, "name": ref.name, "facets": facets, "inputFacets": io}
        )
    output_datasets = []
    for ref in outputs:
        facets, io = dataset_facets(ref, output=True)
        output_datasets.append(
            {"namespace": ref.namespace, "name": ref.name, "facets": facets, "outputFacets": io}
        )
    event: dict[str, Any] = {
        "eventTime": (event_time or dt.datetime.now(dt.UTC)).isoformat(),
        "producer": PRODUCER,
        "schemaURL": _EVENT_SCHEMA_URL,
        "eventType": event_type,
        "run": {"runId": run_id, "facets": run_facets},
        "job": {"namespace": job.namespace, "name": job.name, "facets": job_facets},
        "inputs": input_datasets,
        "outputs": output_datasets,
    }
    return scrub_event(event, secrets) if secrets is not None else event


def assertions_facet(results: Sequence[RuleResult]) -> dict[str, Any]:
    """The OpenLineage ``dataQualityAssertions`` dataset facet of a check run: one assertion per rule
    (its name, whether it passed, its column where it has exactly one, severity, and the observed value)."""
    return _facet(
        "dataQualityAssertions",
        assertions=[
            {
                k: v
                for k, v in {
                    "assertion": r.rule.name,
                    "success": r.passed,
                    "column": r.rule.columns[0] if len(r.rule.columns) == 1 else None,
                    "severity": r.rule.severity,
                    "description": r.rule.description,
                    "actual": r.observed or None,
                }.items()
                if v is not None
            }
            for r in results
        ],
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
