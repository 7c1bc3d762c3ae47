"""A compact OpenLineage spec check for the events lakebed emits (a test helper, not a copy of the spec).

The schema below restates, as a JSON Schema (Draft 2020-12) written for these tests, what the OpenLineage
spec (``spec/OpenLineage.json`` 2-0-x and the facet schemas under ``spec/facets``) requires of a run event:

* a ``RunEvent`` has ``eventTime`` (an RFC 3339 date-time), ``producer`` and ``schemaURL`` (URIs), a ``run``
  with a UUID ``runId``, a ``job`` with ``namespace`` and ``name``, an ``eventType`` from the spec's list,
  and ``inputs`` / ``outputs`` whose datasets have ``namespace`` and ``name``;
* every facet (run, job, dataset, input and output facets) is a ``BaseFacet``: ``_producer`` and
  ``_schemaURL`` (URIs) are required;
* the facets lakebed uses have the required fields and types their facet schemas give them (see
  ``_FACETS``). Facets the spec does not define (e.g. ``lakebed``) only need the ``BaseFacet`` fields.

Formats are asserted: ``date-time`` (RFC 3339), ``uuid`` and ``uri`` (RFC 3986: an absolute URI, i.e. one
with a scheme; a bare word such as ``file`` is a relative reference, not a URI).

``validate_event(event)`` returns the problems as ``"<json path>: <message>"`` strings, empty when valid.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

__all__ = ["RUN_EVENT_SCHEMA", "validate_event"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S*$")  # RFC 3986: scheme ":" hier-part, no blanks

FORMATS = FormatChecker()  # date-time (rfc3339-validator), uuid, ... plus:


@FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


_STRING: dict[str, Any] = {"type": "string"}
_URI_STRING: dict[str, Any] = {"type": "string", "format": "uri"}


def _facet(properties: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A facet schema: the BaseFacet fields, then the facet's own fields."""
    own: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        own["required"] = list(required)
    return {"allOf": [{"$ref": "#/$defs/BaseFacet"}, own]}


def _facets(known: dict[str, str]) -> dict[str, Any]:
    """A facets map: the named facets by their schema, anything else (custom facets) a BaseFacet."""
    return {
        "type": "object",
        "properties": {key: {"$ref": f"#/$defs/{name}"} for key, name in known.items()},
        "additionalProperties": {"$ref": "#/$defs/BaseFacet"},
    }


_SCHEMA_FIELD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _STRING,
        "type": _STRING,
        "description": _STRING,
        "ordinal_position": {"type": "integer"},
        "fields": {"type": "array", "items": {"$ref": "#/$defs/SchemaField"}},  # nested (struct) fields
    },
    "required": ["name"],
}

_TRANSFORMATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": _STRING,
        "subtype": _STRING,
        "description": _STRING,
        "masking": {"type": "boolean"},
    },
    "required": ["type"],
}

_INPUT_FIELD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "namespace": _STRING,
        "name": _STRING,
        "field": _STRING,
        "transformations": {"type": "array", "items": _TRANSFORMATION},
    },
    "required": ["namespace", "name", "field"],
}

_ASSERTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "assertion": _STRING,
        "success": {"type": "boolean"},
        "column": _STRING,
        "severity": _STRING,
        "description": _STRING,
        "expected": _STRING,
        "actual": _STRING,
    },
    "required": ["assertion", "success"],
}

_JOB_REF: dict[str, Any] = {
    "type": "object",
    "properties": {"namespace": _STRING, "name": _STRING},
    "required": ["namespace", "name"],
}
_RUN_REF: dict[str, Any] = {
    "type": "object",
    "properties": {"runId": {"type": "string", "format": "uuid"}},
    "required": ["runId"],
}

# Facet schemas: each facet's own fields, required ones as its spec file requires them.
_FACETS: dict[str, dict[str, Any]] = {
    # spec/facets/SchemaDatasetFacet.json
    "SchemaDatasetFacet": _facet({"fields": {"type": "array", "items": {"$ref": "#/$defs/SchemaField"}}}),
    # spec/facets/DatasourceDatasetFacet.json: name and uri optional, uri a URI
    "DatasourceDatasetFacet": _facet({"name": _STRING, "uri": _URI_STRING}),
    # spec/facets/DatasetVersionDatasetFacet.json
    "DatasetVersionDatasetFacet": _facet({"datasetVersion": _STRING}, ("datasetVersion",)),
    # spec/facets/ColumnLineageDatasetFacet.json: output column -> {inputFields: [...]}
    "ColumnLineageDatasetFacet": _facet(
        {
            "fields": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"inputFields": {"type": "array", "items": _INPUT_FIELD}},
                    "required": ["inputFields"],
                },
            },
            "dataset": {"type": "array", "items": _INPUT_FIELD},
        },
        ("fields",),
    ),
    # spec/facets/OutputStatisticsOutputDatasetFacet.json (1-0-2: every count optional, integers)
    "OutputStatisticsOutputDatasetFacet": _facet(
        {
            "rowCount": {"type": "integer", "minimum": 0},
            "size": {"type": "integer", "minimum": 0},
            "fileCount": {"type": "integer", "minimum": 0},
        }
    ),
    # spec/facets/DataQualityAssertionsDatasetFacet.json
    "DataQualityAssertionsDatasetFacet": _facet(
        {"assertions": {"type": "array", "items": _ASSERTION}}, ("assertions",)
    ),
    # spec/facets/ParentRunFacet.json
    "ParentRunFacet": _facet(
        {
            "run": _RUN_REF,
            "job": _JOB_REF,
            "root": {
                "type": "object",
                "properties": {"run": _RUN_REF, "job": _JOB_REF},
                "required": ["run", "job"],
            },
        },
        ("run", "job"),
    ),
    # spec/facets/JobTypeJobFacet.json
    "JobTypeJobFacet": _facet(
        {"processingType": _STRING, "integration": _STRING, "jobType": _STRING},
        ("processingType", "integration"),
    ),
    # spec/facets/SourceCodeLocationJobFacet.json
    "SourceCodeLocationJobFacet": _facet(
        {
            "type": _STRING,
            "url": _URI_STRING,
            "repoUrl": _STRING,
            "path": _STRING,
            "version": _STRING,
            "tag": _STRING,
            "branch": _STRING,
        },
        ("type", "url"),
    ),
    # spec/facets/ErrorMessageRunFacet.json
    "ErrorMessageRunFacet": _facet(
        {"message": _STRING, "programmingLanguage": _STRING, "stackTrace": _STRING},
        ("message", "programmingLanguage"),
    ),
    # spec/facets/ProcessingEngineRunFacet.json
    "ProcessingEngineRunFacet": _facet(
        {"version": _STRING, "name": _STRING, "openlineageAdapterVersion": _STRING}, ("version",)
    ),
}

_DATASET_FACETS = {
    "schema": "SchemaDatasetFacet",
    "dataSource": "DatasourceDatasetFacet",
    "version": "DatasetVersionDatasetFacet",
    "columnLineage": "ColumnLineageDatasetFacet",
    "dataQualityAssertions": "DataQualityAssertionsDatasetFacet",
}

RUN_EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$ref": "#/$defs/RunEvent",
    "$defs": {
        "BaseFacet": {
            "type": "object",
            "properties": {"_producer": _URI_STRING, "_schemaURL": _URI_STRING},
            "required": ["_producer", "_schemaURL"],
        },
        "SchemaField": _SCHEMA_FIELD,
        **_FACETS,
        "RunEvent": {
            "type": "object",
            "properties": {
                "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
                "eventTime": {"type": "string", "format": "date-time"},
                "producer": _URI_STRING,
                "schemaURL": _URI_STRING,
                "run": {"$ref": "#/$defs/Run"},
                "job": {"$ref": "#/$defs/Job"},
                "inputs": {"type": "array", "items": {"$ref": "#/$defs/InputDataset"}},
                "outputs": {"type": "array", "items": {"$ref": "#/$defs/OutputDataset"}},
            },
            "required": ["eventTime", "producer", "schemaURL", "run", "job"],
        },
        "Run": {
            "type": "object",
            "properties": {
                "runId": {"type": "string", "format": "uuid"},
                "facets": _facets(
                    {
                        "parent": "ParentRunFacet",
                        "errorMessage": "ErrorMessageRunFacet",
                        "processing_engine": "ProcessingEngineRunFacet",
                    }
                ),
            },
            "required": ["runId"],
        },
        "Job": {
            "type": "object",
            "properties": {
                "namespace": _STRING,
                "name": _STRING,
                "facets": _facets(
                    {"jobType": "JobTypeJobFacet", "sourceCodeLocation": "SourceCodeLocationJobFacet"}
                ),
            },
            "required": ["namespace", "name"],
        },
        "Dataset": {
            "type": "object",
            "properties": {"namespace": _STRING, "name": _STRING, "facets": _facets(_DATASET_FACETS)},
            "required": ["namespace", "name"],
        },
        "InputDataset": {
            "allOf": [
                {"$ref": "#/$defs/Dataset"},
                {
                    "type": "object",
                    "properties": {
                        "inputFacets": _facets({"dataQualityAssertions": "DataQualityAssertionsDatasetFacet"})
                    },
                },
            ]
        },
        "OutputDataset": {
            "allOf": [
                {"$ref": "#/$defs/Dataset"},
                {
                    "type": "object",
                    "properties": {
                        "outputFacets": _facets({"outputStatistics": "OutputStatisticsOutputDatasetFacet"})
                    },
                },
            ]
        },
    },
}

Draft202012Validator.check_schema(RUN_EVENT_SCHEMA)
_VALIDATOR = Draft202012Validator(RUN_EVENT_SCHEMA, format_checker=FORMATS)


def validate_event(event: dict[str, Any]) -> list[str]:
    """What makes ``event`` an invalid OpenLineage run event, as ``"<path>: <message>"``; empty when valid."""
    problems = []
    for error in sorted(_VALIDATOR.iter_errors(event), key=lambda e: [str(p) for p in e.absolute_path]):
        path = "/".join(str(p) for p in error.absolute_path) or "<event>"
        problems.append(f"{path}: {error.message}")
    return problems
