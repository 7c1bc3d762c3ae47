"""A read-only HTTP API over the lineage store, for auditors and for tools that speak Marquez.

``serve(store)`` answers on ``http://127.0.0.1:5005`` until interrupted; ``make_server`` returns the
(not yet serving) :class:`http.server.ThreadingHTTPServer` so a caller or a test can run it in a thread
and stop it with ``server.shutdown()``. Only the standard library is used.

Endpoints (JSON unless a ``format`` says otherwise; the whole list, with parameters and response shapes,
is the OpenAPI 3.1 document at ``GET /openapi.json``):

* Marquez-compatible, shaped like Marquez's ``/api/v1``: ``/namespaces``, ``/namespaces/{ns}``,
  ``/namespaces/{ns}/datasets``, ``/namespaces/{ns}/datasets/{name}``, ``.../versions``,
  ``.../versions/{version}``, ``/namespaces/{ns}/jobs``, ``/namespaces/{ns}/jobs/{name}``,
  ``.../runs``, ``/runs/{id}`` (also at Marquez's older ``/jobs/runs/{id}``) and
  ``/lineage?nodeId=dataset:<ns>:<name>|job:<ns>:<name>&depth=N``. Run states use Marquez's words
  (``COMPLETED``, ``FAILED``, ``ABORTED``, ``RUNNING``); a dataset version is the Delta version.
* lakebed's own, under ``/api/v1/lakebed/``: ``producer`` (the run that wrote a table at an exact
  version), ``upstream``, ``downstream``, ``history``, ``graph`` (as of a time; ``format=json|svg|dot|
  mermaid|png``), ``runs`` and ``events`` (the raw OpenLineage events of a run).

Names hold slashes (a dataset name is an absolute path): percent-encode them in paths
(``/api/v1/namespaces/file/datasets/%2Ftmp%2Flake%2Ftables%2Forders``), and ``nodeId`` in the query.
An unencoded name is accepted too where it cannot be confused with a sub-resource (a name whose last
part is ``versions`` must be encoded).

Security:

* Every request, ``/openapi.json`` and ``/`` included, needs ``Authorization: Bearer <token>`` when a
  token is configured (the ``token`` argument, else ``LAKEBED_LINEAGE_API_TOKEN``); the token is compared
  in constant time and never logged. Without it the answer is ``401`` with ``WWW-Authenticate: Bearer``.
* Authentication comes first, for every method: a client without the token learns nothing, not even
  which methods exist. An authenticated request with any method but ``GET`` or ``HEAD`` gets ``405``
  with ``Allow: GET, HEAD``: the API never changes anything.
* Without a token the server only binds a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)
  and warns; any other address is refused with a :class:`~lakebed.errors.ConfigError`.

Errors are JSON ``{"error": ...}``: ``400`` for a bad parameter (a depth or version that is no integer, a
time that is no ISO-8601 instant, an unknown format), ``404`` for an unknown path or for a table, dataset,
job, run or version the store does not know (with the store's message), and ``500`` for anything
unexpected, which is logged with its traceback on the server and never shown to the client.

Each ``/api`` request refreshes the store first (cheap when no event arrived; it is the store loading new
lines of the event file into its own Delta table, never a change to lineage), and requests use the store
one at a time, so a response is built from one consistent state. Rendering an SVG or PNG happens outside
that lock.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from lakebed.errors import ConfigError, LineageNotFoundError
from lakebed.lineage.graph import Graph, Node, job_id
from lakebed.version import __version__

if TYPE_CHECKING:
    from pydantic import SecretStr

    from lakebed.lineage.render import Format
    from lakebed.lineage.store import LineageStore, RunInfo

log = logging.getLogger("lakebed.lineage.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5005
ALLOWED_METHODS = ("GET", "HEAD")
ALLOW = ", ".join(ALLOWED_METHODS)
JSON_TYPE = "application/json; charset=utf-8"
REALM = "lakebed-lineage"
MAX_DEPTH = 100
DEFAULT_DEPTH = 20  # Marquez's default for /lineage
DEFAULT_LINEAGE_DEPTH = 5  # the store's default for upstream/downstream
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
GRAPH_FORMATS = ("json", "svg", "dot", "mermaid", "png")
CONTENT_TYPES = {
    "svg": "image/svg+xml",
    "png": "image/png",
    "dot": "text/vnd.graphviz; charset=utf-8",
    "mermaid": "text/plain; charset=utf-8",
}
MARQUEZ_STATES = {
    "COMPLETE": "COMPLETED",
    "FAIL": "FAILED",
    "ABORT": "ABORTED",
    "RUNNING": "RUNNING",
    "START": "RUNNING",
}


# --- responses and errors ------------------------------------------------------------------------------


@dataclass
class Response:
    """What a handler answers: the body may be produced later (rendering runs outside the store lock)."""

    status: int
    body: bytes | Callable[[], bytes]
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An error answered to the client as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _bad_request(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, message)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as null (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(data: Any) -> bytes:
    """Strict JSON: dates as ISO-8601 strings, NaN and infinities as null."""
    try:
        text = json.dumps(data, default=_json_default, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN somewhere (a quality result, say)
        text = json.dumps(_finite(data), default=_json_default, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def json_response(data: Any, status: int = HTTPStatus.OK) -> Response:
    return Response(status, to_json(data))


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, to_json({"error": message, "status": int(status)}), headers=dict(headers or {}))


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


# --- query parameters ----------------------------------------------------------------------------------


class Params:
    """The query string of a request, with typed getters that answer 400 on bad values."""

    def __init__(self, query: str) -> None:
        try:
            self._values = parse_qs(query, keep_blank_values=True, strict_parsing=False, errors="strict")
        except (UnicodeDecodeError, ValueError) as exc:
            raise _bad_request(f"the query string cannot be decoded: {exc}") from exc

    def get_str(self, name: str, *, required: bool = False) -> str | None:
        values = self._values.get(name)
        if not values or values[-1] == "":
            if required:
                raise _bad_request(f"the query parameter {name!r} is required")
            return None
        return values[-1]

    def get_int(
        self, name: str, default: int | None, *, minimum: int = 0, maximum: int | None = None
    ) -> int | None:
        raw = self.get_str(name)
        if raw is None:
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise _bad_request(f"the query parameter {name!r} must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise _bad_request(f"the query parameter {name!r} must be {bounds}, got {value}")
        return value

    def get_bool(self, name: str, default: bool = False) -> bool:
        raw = self.get_str(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise _bad_request(f"the query parameter {name!r} must be true or false, got {raw!r}")

    def get_instant(self, name: str) -> dt.datetime | None:
        raw = self.get_str(name)
        if raw is None:
            return None
        return parse_instant(raw, name)

    def get_format(self) -> str:
        fmt = (self.get_str("format") or "json").strip().lower()
        if fmt not in GRAPH_FORMATS:
            raise _bad_request(
                f"the query parameter 'format' must be one of {', '.join(GRAPH_FORMATS)}, got {fmt!r}"
            )
        return fmt


_SPACED_OFFSET = re.compile(r" (\d{2}(?::?\d{2})?)$")


def parse_instant(raw: str, name: str = "asOf") -> dt.datetime:
    """An ISO-8601 instant (naive means UTC). A ``+`` of the UTC offset that arrived as a space, because
    the client did not percent-encode it, is put back."""
    text = raw.strip()
    for candidate in (text, _SPACED_OFFSET.sub(r"+\1", text)):
        try:
            moment = dt.datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    raise _bad_request(f"the query parameter {name!r} must be an ISO-8601 time, got {raw!r}")


def _version_param(params: Params, name: str = "version") -> int | None:
    """A Delta table version: a non-negative integer."""
    return params.get_int(name, None, minimum=0)


def _page(rows: Sequence[Any], params: Params) -> tuple[list[Any], int]:
    limit = params.get_int("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    offset = params.get_int("offset", 0, minimum=0) or 0
    return list(rows[offset : offset + limit]), len(rows)


# --- Marquez shapes ------------------------------------------------------------------------------------


def _dataset_type(namespace: str) -> str:
    return "STREAM" if namespace.startswith("kafka://") else "DB_TABLE"


def _job_type(processing: str | None) -> str:
    return "STREAM" if (processing or "").upper().startswith("STREAM") else "BATCH"


def _fields(facets: Mapping[str, Any]) -> list[dict[str, Any]]:
    schema = facets.get("schema") or {}
    return [
        {"name": f.get("name"), "type": f.get("type"), "tags": [], "description": f.get("description")}
        for f in schema.get("fields") or []
        if isinstance(f, dict)
    ]


def _merge_facets(
    events: Iterable[Mapping[str, Any]], pick: Callable[[Mapping[str, Any]], Any]
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for event in events:
        facets = pick(event)
        if isinstance(facets, dict):
            merged.update(facets)
    return merged


def _output_facets(
    events: Iterable[Mapping[str, Any]], namespace: str, name: str, version: str | None
) -> dict[str, Any]:
    """The dataset facets (plus output facets) of ``namespace:name`` at ``version`` as its run wrote it."""
    found: dict[str, Any] = {}
    for event in events:
        for output in event.get("outputs") or []:
            if output.get("namespace") != namespace or output.get("name") != name:
                continue
            facets = dict(output.get("facets") or {})
            written = (facets.get("version") or {}).get("datasetVersion")
            if version is not None and written is not None and str(written) != version:
                continue
            facets.update(output.get("outputFacets") or {})
            found = facets
    return found


# --- the API -------------------------------------------------------------------------------------------


class LineageApi:
    """Requests to responses over one store. Call :meth:`handle` with the store lock held."""

    def __init__(self, store: LineageStore) -> None:
        self.store = store

    # routing -------------------------------------------------------------------------------------------

    def handle(self, target: str) -> Response:
        parts = urlsplit(target)
        params = Params(parts.query)
        raw = parts.path.split("/")[1:] if parts.path.startswith("/") else parts.path.split("/")
        if raw and raw[-1] == "" and len(raw) > 1:
            raw = raw[:-1]  # a trailing slash
        try:
            segments = [unquote(s, errors="strict") for s in raw]
        except UnicodeDecodeError as exc:
            raise _bad_request(f"the path cannot be decoded as UTF-8: {exc}") from exc
        if segments in ([], [""]):
            return self.index()
        if segments == ["openapi.json"]:
            return json_response(openapi_document())
        if segments[:2] != ["api", "v1"]:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {parts.path}")
        self.store.refresh()  # load events that arrived since the last request (cheap when none did)
        rest, rest_raw = segments[2:], raw[2:]
        match rest:
            case ["namespaces"]:
                return self.namespaces(params)
            case ["namespaces", ns]:
                return self.namespace(ns)
            case ["namespaces", ns, "datasets"]:
                return self.datasets(ns, params)
            case ["namespaces", ns, "datasets", *_]:
                return self._dataset_route(ns, rest[3:], rest_raw[3:], params)
            case ["namespaces", ns, "jobs"]:
                return self.jobs(ns, params)
            case ["namespaces", ns, "jobs", *_]:
                return self._job_route(ns, rest[3:], rest_raw[3:], params)
            case ["runs", run_id] | ["jobs", "runs", run_id]:
                return self.run(run_id)
            case ["lineage"]:
                return self.lineage(params)
            case ["lakebed", name] if name in self._lakebed_routes():
                return self._lakebed_routes()[name](params)
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {parts.path}")

    def _dataset_route(self, ns: str, rest: list[str], raw: list[str], params: Params) -> Response:
        if len(raw) == 1:
            return self.dataset(ns, rest[0])
        if len(raw) == 2 and raw[1] == "versions":
            return self.dataset_versions(ns, rest[0], params)
        if len(raw) == 3 and raw[1] == "versions":
            return self.dataset_version(ns, rest[0], rest[2])
        # An unencoded name with slashes: /datasets//tmp/lake/orders[/versions[/N]]
        if len(raw) >= 3 and raw[-2] == "versions":
            return self.dataset_version(ns, "/".join(rest[:-2]), rest[-1])
        if raw[-1] == "versions":
            return self.dataset_versions(ns, "/".join(rest[:-1]), params)
        return self.dataset(ns, "/".join(rest))

    def _job_route(self, ns: str, rest: list[str], raw: list[str], params: Params) -> Response:
        if len(raw) >= 2 and raw[-1] == "runs":
            return self.job_runs(ns, "/".join(rest[:-1]), params)
        return self.job(ns, "/".join(rest))

    def _lakebed_routes(self) -> dict[str, Callable[[Params], Response]]:
        return {
            "producer": self.producer,
            "upstream": self.upstream,
            "downstream": self.downstream,
            "history": self.history,
            "graph": self.graph,
            "runs": self.runs,
            "events": self.events,
        }

    def index(self) -> Response:
        return json_response(
            {
                "name": "lakebed lineage API",
                "version": __version__,
                "openapi": "/openapi.json",
                "endpoints": sorted(openapi_document()["paths"]),
            }
        )

    # store helpers -------------------------------------------------------------------------------------

    def _known_namespace(self, ns: str) -> None:
        if ns not in self.store.namespaces():
            raise LineageNotFoundError(f"no namespace {ns!r} in the lineage store")

    def _events_by_run(self, run_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The raw events of several runs with one scan of the store's Delta table, each run's in order."""
        wanted = sorted({r for r in run_ids if r})
        if not wanted:
            return {}
        import pyarrow.dataset as pads
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

        try:
            table = DeltaTable(self.store.uri)
        except DeltaTableNotFoundError:
            return {}
        data = table.to_pyarrow_dataset().to_table(
            columns=["run_id", "event_time", "event"], filter=pads.field("run_id").isin(wanted)
        )
        data = data.sort_by([("event_time", "ascending"), ("run_id", "ascending")])
        found: dict[str, list[dict[str, Any]]] = {}
        for run_id, event in zip(
            data.column("run_id").to_pylist(), data.column("event").to_pylist(), strict=True
        ):
            try:
                found.setdefault(run_id, []).append(json.loads(event))
            except ValueError:
                log.warning("skipping an unreadable stored event of run %s", run_id)
        return found

    def _run_json(self, run: RunInfo, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """A run in Marquez's ``Run`` shape, plus lakebed's fields (job, code version, parent, error)."""
        started, ended = run.started_at, run.ended_at
        duration = int((ended - started).total_seconds() * 1000) if started and ended else None
        first_seen = events[0].get("eventTime") if events else None
        last_seen = events[-1].get("eventTime") if events else None
        facets = _merge_facets(events, lambda e: (e.get("run") or {}).get("facets"))
        job_facets = _merge_facets(events, lambda e: (e.get("job") or {}).get("facets"))
        if "parent" not in facets and run.parent_run_id:
            job_ns, _, job_name = (run.parent_job or ":").partition(":")
            facets["parent"] = {
                "run": {"runId": run.parent_run_id},
                "job": {"namespace": job_ns, "name": job_name},
            }
        if "errorMessage" not in facets and run.error:
            facets["errorMessage"] = {"message": run.error}

        def versions(datasets: Iterable[Any]) -> list[dict[str, Any]]:
            return [
                {"namespace": d.namespace, "name": d.name, "version": d.version, "table": d.table}
                for d in datasets
            ]

        return {
            "id": run.run_id,
            "createdAt": _iso(started) or first_seen,
            "updatedAt": _iso(ended or started) or last_seen,
            "nominalStartTime": None,
            "nominalEndTime": None,
            "state": MARQUEZ_STATES.get(run.state, run.state),
            "startedAt": _iso(started),
            "endedAt": _iso(ended),
            "durationMs": duration,
            "args": {},
            "jobVersion": {"namespace": run.job_namespace, "name": run.job_name, "version": run.code_version},
            "inputVersions": versions(run.inputs),
            "outputVersions": versions(run.outputs),
            "context": {},
            "facets": facets,
            # lakebed's additions
            "job": {"namespace": run.job_namespace, "name": run.job_name},
            "jobFacets": job_facets,
            "codeVersion": run.code_version,
            "processing": run.processing,
            "parentRun": {"id": run.parent_run_id, "job": run.parent_job} if run.parent_run_id else None,
            "errorMessage": run.error,
            "dagsterRunId": run.dagster_run_id,
            "quality": run.quality,
        }

    def _runs_json(
        self, run_ids: Sequence[str], events: Mapping[str, list[dict[str, Any]]] | None = None
    ) -> list[dict[str, Any]]:
        if events is None:
            events = self._events_by_run(run_ids)
        return [self._run_json(self.store.run(r), events.get(r, [])) for r in run_ids]

    def _dataset_json(
        self,
        ns: str,
        row: Mapping[str, Any],
        versions: Sequence[Mapping[str, Any]],
        facets: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        name = row["name"]
        all_facets = dict(facets or {})
        lakebed_facet = dict(all_facets.get("lakebed") or {})
        if row.get("table_name"):
            lakebed_facet.setdefault("table", row["table_name"])
        if lakebed_facet:
            all_facets["lakebed"] = lakebed_facet
        created = versions[-1]["created_at"] if versions else None
        modified = versions[0]["created_at"] if versions else None
        return {
            "id": {"namespace": ns, "name": name},
            "type": _dataset_type(ns),
            "name": name,
            "physicalName": name,
            "createdAt": _iso(created),
            "updatedAt": _iso(row.get("updated_at")),
            "namespace": ns,
            "sourceName": ns,
            "fields": _fields(all_facets),
            "tags": [],
            "lastModifiedAt": _iso(modified),
            "lastLifecycleState": None,
            "description": None,
            "facets": all_facets,
            "currentVersion": row.get("current_version"),
            "deleted": False,
            "table": row.get("table_name"),  # lakebed: the table name
        }

    def _datasets_json(self, ns: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        versions = {row["name"]: self.store.dataset_versions(ns, row["name"]) for row in rows}
        current_runs = {
            row["name"]: next(
                (v["run_id"] for v in versions[row["name"]] if v["version"] == row.get("current_version")),
                None,
            )
            for row in rows
        }
        events = self._events_by_run(r for r in current_runs.values() if r)
        result = []
        for row in rows:
            run_id = current_runs[row["name"]]
            facets = (
                _output_facets(events.get(run_id, []), ns, row["name"], row.get("current_version"))
                if run_id
                else None
            )
            result.append(self._dataset_json(ns, row, versions[row["name"]], facets))
        return result

    def _dataset_row(self, ns: str, name: str) -> dict[str, Any]:
        for row in self.store.datasets(ns):
            if row["name"] == name:
                return row
        raise LineageNotFoundError(f"no dataset {ns}:{name} in the lineage store")

    def _version_json(
        self,
        ns: str,
        name: str,
        row: Mapping[str, Any],
        run: dict[str, Any],
        events: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        version = row["version"]
        facets = _output_facets(events, ns, name, version)
        return {
            "id": {"namespace": ns, "name": name, "version": version},
            "type": _dataset_type(ns),
            "name": name,
            "physicalName": name,
            "createdAt": _iso(row["created_at"]),
            "version": version,
            "namespace": ns,
            "sourceName": ns,
            "fields": _fields(facets),
            "tags": [],
            "description": None,
            "createdByRun": run,
            "facets": facets,
            # lakebed's additions
            "rowCount": row.get("rows"),
            "size": row.get("size"),
        }

    def _jobs_json(self, ns: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        graph = self.store.graph(include_system=True)
        all_runs = {row["name"]: self.store.job_runs(ns, row["name"], limit=MAX_LIMIT) for row in rows}
        latest_ids = [runs[0]["run_id"] for runs in all_runs.values() if runs]
        events = self._events_by_run(latest_ids)
        result = []
        for row in rows:
            runs = all_runs[row["name"]]
            latest = self.store.run(runs[0]["run_id"]) if runs else None
            latest_events = events.get(latest.run_id, []) if latest else []
            inputs, outputs = _neighbours(graph, job_id(ns, row["name"]))
            job_facets = _merge_facets(latest_events, lambda e: (e.get("job") or {}).get("facets"))
            starts = [r["started_at"] for r in runs if r.get("started_at") is not None]
            result.append(
                {
                    "id": {"namespace": ns, "name": row["name"]},
                    "type": _job_type(latest.processing if latest else None),
                    "name": row["name"],
                    "simpleName": row["name"],
                    "parentJobName": None,
                    "createdAt": _iso(min(starts)) if starts else None,
                    "updatedAt": _iso(row.get("updated_at")),
                    "namespace": ns,
                    "inputs": inputs,
                    "outputs": outputs,
                    "location": (job_facets.get("sourceCodeLocation") or {}).get("url"),
                    "description": None,
                    "latestRun": self._run_json(latest, latest_events) if latest else None,
                    "facets": job_facets,
                    "currentVersion": latest.code_version if latest else None,
                    # lakebed's additions
                    "runCount": row.get("runs"),
                    "latestState": MARQUEZ_STATES.get(row.get("latest_state") or "", row.get("latest_state")),
                }
            )
        return result

    # Marquez endpoints ---------------------------------------------------------------------------------

    def namespaces(self, params: Params) -> Response:
        names, total = _page(self.store.namespaces(), params)
        return json_response({"namespaces": [self._namespace_json(ns) for ns in names], "totalCount": total})

    def _namespace_json(self, ns: str) -> dict[str, Any]:
        times = [
            r["updated_at"] for r in [*self.store.datasets(ns), *self.store.jobs(ns)] if r.get("updated_at")
        ]
        return {
            "name": ns,
            "createdAt": None,
            "updatedAt": _iso(max(times)) if times else None,
            "ownerName": None,
            "description": "lakebed jobs" if ns == self.store.config.lineage_namespace else None,
        }

    def namespace(self, ns: str) -> Response:
        self._known_namespace(ns)
        return json_response(self._namespace_json(ns))

    def datasets(self, ns: str, params: Params) -> Response:
        self._known_namespace(ns)
        rows, total = _page(self.store.datasets(ns), params)
        return json_response({"totalCount": total, "datasets": self._datasets_json(ns, rows)})

    def dataset(self, ns: str, name: str) -> Response:
        row = self._dataset_row(ns, name)
        return json_response(self._datasets_json(ns, [row])[0])

    def dataset_versions(self, ns: str, name: str, params: Params) -> Response:
        rows, total = _page(self.store.dataset_versions(ns, name), params)
        run_ids = list(dict.fromkeys(v["run_id"] for v in rows))
        events = self._events_by_run(run_ids)
        runs = {r["id"]: r for r in self._runs_json(run_ids, events)}
        versions = [
            self._version_json(ns, name, v, runs[v["run_id"]], events.get(v["run_id"], [])) for v in rows
        ]
        return json_response({"totalCount": total, "versions": versions})

    def dataset_version(self, ns: str, name: str, version: str) -> Response:
        for row in self.store.dataset_versions(ns, name):
            if row["version"] == version:
                events = self._events_by_run([row["run_id"]])
                run = self._runs_json([row["run_id"]], events)[0]
                return json_response(self._version_json(ns, name, row, run, events.get(row["run_id"], [])))
        raise LineageNotFoundError(f"no version {version!r} of dataset {ns}:{name} in the lineage store")

    def jobs(self, ns: str, params: Params) -> Response:
        self._known_namespace(ns)
        rows, total = _page(self.store.jobs(ns), params)
        return json_response({"totalCount": total, "jobs": self._jobs_json(ns, rows)})

    def job(self, ns: str, name: str) -> Response:
        for row in self.store.jobs(ns):
            if row["name"] == name:
                return json_response(self._jobs_json(ns, [row])[0])
        raise LineageNotFoundError(f"no job {ns}:{name} in the lineage store")

    def job_runs(self, ns: str, name: str, params: Params) -> Response:
        limit = params.get_int("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
        offset = params.get_int("offset", 0, minimum=0) or 0
        rows = self.store.job_runs(ns, name, limit=offset + limit)
        ids = [r["run_id"] for r in rows[offset:]]
        return json_response({"runs": self._runs_json(ids)})

    def run(self, run_id: str) -> Response:
        return json_response(self._runs_json([run_id])[0])

    def lineage(self, params: Params) -> Response:
        node_id = params.get_str("nodeId", required=True) or ""
        kind, _, rest = node_id.partition(":")
        if kind not in ("dataset", "job") or ":" not in rest:
            raise _bad_request(
                f"nodeId must be dataset:<namespace>:<name> or job:<namespace>:<name>, got {node_id!r}"
            )
        depth = params.get_int("depth", DEFAULT_DEPTH, minimum=0, maximum=MAX_DEPTH)
        graph = self.store.node_lineage(node_id, depth=DEFAULT_DEPTH if depth is None else depth)
        full = self.store.graph(include_system=True)
        return json_response({"graph": self._marquez_graph(graph, full)})

    def _marquez_graph(self, graph: Graph, full: Graph) -> list[dict[str, Any]]:
        edges = sorted({(e.source, e.target) for e in graph.edges})
        datasets: dict[str, dict[str, dict[str, Any]]] = {}
        jobs: dict[str, dict[str, dict[str, Any]]] = {}
        nodes = []
        for node in sorted(graph.nodes, key=lambda n: n.id):
            if node.kind == "dataset":
                if node.namespace not in datasets:
                    datasets[node.namespace] = {r["name"]: r for r in self.store.datasets(node.namespace)}
                row = datasets[node.namespace].get(node.name) or {"name": node.name, "table_name": None}
                versions = self.store.dataset_versions(node.namespace, node.name)
                data = self._dataset_json(node.namespace, row, versions, None)
                data["table"] = data["table"] or node.label
            else:
                if node.namespace not in jobs:
                    jobs[node.namespace] = {r["name"]: r for r in self.store.jobs(node.namespace)}
                row = jobs[node.namespace].get(node.name) or {}
                latest_rows = self.store.job_runs(node.namespace, node.name, limit=1) if row else []
                latest = self.store.run(latest_rows[0]["run_id"]) if latest_rows else None
                inputs, outputs = _neighbours(full, node.id)
                data = {
                    "id": {"namespace": node.namespace, "name": node.name},
                    "type": _job_type(latest.processing if latest else None),
                    "name": node.name,
                    "simpleName": node.name,
                    "namespace": node.namespace,
                    "updatedAt": _iso(row.get("updated_at")),
                    "inputs": inputs,
                    "outputs": outputs,
                    "latestRun": {
                        "id": latest.run_id,
                        "state": MARQUEZ_STATES.get(latest.state, latest.state),
                        "startedAt": _iso(latest.started_at),
                        "endedAt": _iso(latest.ended_at),
                    }
                    if latest
                    else None,
                    "currentVersion": latest.code_version if latest else None,
                    "runCount": row.get("runs"),
                }
            nodes.append(
                {
                    "id": node.id,
                    "type": "DATASET" if node.kind == "dataset" else "JOB",
                    "data": data,
                    "inEdges": [{"origin": s, "destination": t} for s, t in edges if t == node.id],
                    "outEdges": [{"origin": s, "destination": t} for s, t in edges if s == node.id],
                }
            )
        return nodes

    # lakebed's endpoints -------------------------------------------------------------------------------

    def producer(self, params: Params) -> Response:
        table = params.get_str("table", required=True) or ""
        version = _version_param(params)
        return json_response(self.store.producer(table, version).as_dict())

    def upstream(self, params: Params) -> Response:
        table = params.get_str("table", required=True) or ""
        version = _version_param(params)
        depth = params.get_int("depth", DEFAULT_LINEAGE_DEPTH, minimum=0, maximum=MAX_DEPTH)
        column = params.get_str("column")
        fmt = params.get_format()
        graph = self.store.upstream(table, version, depth=depth or 0, column=column)
        at = f"@{version}" if version is not None else ""
        title = f"upstream of {table}{at}" + (f".{column}" if column else "")
        return graph_response(graph, fmt, title, {"table": table, "version": version, "column": column})

    def downstream(self, params: Params) -> Response:
        table = params.get_str("table", required=True) or ""
        version = _version_param(params)
        depth = params.get_int("depth", DEFAULT_LINEAGE_DEPTH, minimum=0, maximum=MAX_DEPTH)
        fmt = params.get_format()
        graph = self.store.downstream(table, version, depth=depth or 0)
        at = f"@{version}" if version is not None else ""
        return graph_response(graph, fmt, f"downstream of {table}{at}", {"table": table, "version": version})

    def history(self, params: Params) -> Response:
        table = params.get_str("table", required=True) or ""
        namespace, name = self.store.resolve(table)
        versions = self.store.history(table)
        return json_response({"table": table, "namespace": namespace, "name": name, "versions": versions})

    def graph(self, params: Params) -> Response:
        as_of = params.get_instant("asOf")
        include_system = params.get_bool("includeSystem")
        fmt = params.get_format()
        graph = self.store.graph(as_of=as_of, include_system=include_system)
        title = f"lineage as of {as_of.isoformat()}" if as_of else "lineage"
        return graph_response(graph, fmt, title, {"asOf": as_of, "includeSystem": include_system})

    def runs(self, params: Params) -> Response:
        failed = params.get_bool("failed")
        job = params.get_str("job")
        limit = params.get_int("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
        return json_response({"runs": self.store.runs(failed=failed, job=job, limit=limit)})

    def events(self, params: Params) -> Response:
        run_id = params.get_str("runId", required=True) or ""
        self.store.run(run_id)  # 404 for an unknown run
        return json_response({"runId": run_id, "events": self._events_by_run([run_id]).get(run_id, [])})


def _dataset_ref(node: Node) -> dict[str, str]:
    """A graph node as Marquez's ``DatasetId``."""
    return {"namespace": node.namespace, "name": node.name}


def _neighbours(graph: Graph, node_id: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The datasets a job reads and writes in ``graph``, as Marquez's ``DatasetId`` lists."""
    nodes = {n.id: n for n in graph.nodes}
    inputs = sorted({e.source for e in graph.edges if e.target == node_id and e.source in nodes})
    outputs = sorted({e.target for e in graph.edges if e.source == node_id and e.target in nodes})
    return [_dataset_ref(nodes[i]) for i in inputs], [_dataset_ref(nodes[o]) for o in outputs]


def graph_json(graph: Graph) -> dict[str, Any]:
    """A :class:`Graph` as plain data: nodes (id, kind, label, namespace, name, details) and edges."""
    return {
        "nodes": [
            {
                "id": n.id,
                "kind": n.kind,
                "label": n.label,
                "namespace": n.namespace,
                "name": n.name,
                "details": n.details,
            }
            for n in graph.nodes
        ],
        "edges": [{"source": e.source, "target": e.target, "label": e.label} for e in graph.edges],
    }


def graph_response(graph: Graph, fmt: str, title: str, query: Mapping[str, Any]) -> Response:
    """The graph as JSON, or drawn by :mod:`lakebed.lineage.render` (later, outside the store lock)."""
    if fmt == "json":
        return json_response({**query, **graph_json(graph)})

    def draw() -> bytes:
        from lakebed.lineage.render import render

        return render(graph, cast("Format", fmt), title=title)

    return Response(HTTPStatus.OK, draw, content_type=CONTENT_TYPES[fmt])


# --- OpenAPI ---------------------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _param(
    name: str, where: str, kind: str, description: str, *, required: bool = False, **schema: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": {"type": kind, **schema},
    }


_NS = _param("namespace", "path", "string", "The namespace (percent-encoded), e.g. `file` or `lakebed`.")
_DATASET = _param("dataset", "path", "string", "The dataset name, percent-encoded (`%2F` for `/`).")
_JOB = _param("job", "path", "string", "The job name (percent-encoded).")
_LIMIT = _param(
    "limit",
    "query",
    "integer",
    "How many results to return.",
    minimum=1,
    maximum=MAX_LIMIT,
    default=DEFAULT_LIMIT,
)
_OFFSET = _param("offset", "query", "integer", "How many results to skip.", minimum=0, default=0)
_TABLE = _param(
    "table", "query", "string", "A lakebed table name, or a dataset as `<namespace>:<name>`.", required=True
)
_VERSION = _param("version", "query", "integer", "The Delta version (default: the latest).", minimum=0)
_FORMAT = _param(
    "format",
    "query",
    "string",
    "`json` (nodes and edges) or a drawing.",
    enum=list(GRAPH_FORMATS),
    default="json",
)
_GRAPH_CONTENT = {
    "application/json": {"schema": _ref("LakebedGraph")},
    "image/svg+xml": {"schema": {"type": "string"}},
    "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
    "text/vnd.graphviz": {"schema": {"type": "string"}},
    "text/plain": {"schema": {"type": "string", "description": "Mermaid"}},
}


def _get(
    operation: str,
    summary: str,
    schema: str | None,
    *,
    tag: str,
    params: Sequence[dict[str, Any]] = (),
    content: dict[str, Any] | None = None,
    not_found: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": content
            if content is not None
            else {"application/json": {"schema": _ref(schema or "Error")}},
        },
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "405": {"$ref": "#/components/responses/MethodNotAllowed"},
        "500": {"$ref": "#/components/responses/InternalError"},
    }
    if not_found:
        responses["404"] = {"$ref": "#/components/responses/NotFound"}
    op: dict[str, Any] = {
        "operationId": operation,
        "summary": summary,
        "tags": [tag],
        "parameters": list(params),
        "responses": dict(sorted(responses.items())),
    }
    if description:
        op["description"] = description
    return {"get": op}


def _schemas() -> dict[str, Any]:
    string, nstring, ntime = {"type": "string"}, _nullable("string"), _nullable("string", format="date-time")
    facets = {"type": "object", "additionalProperties": True, "description": "OpenLineage facets by name."}
    dataset_id = {
        "type": "object",
        "properties": {"namespace": string, "name": string},
        "required": ["namespace", "name"],
    }
    version_id = {
        "type": "object",
        "properties": {"namespace": string, "name": string, "version": nstring, "table": nstring},
        "required": ["namespace", "name", "version"],
    }
    field_schema = {
        "type": "object",
        "properties": {
            "name": string,
            "type": nstring,
            "tags": {"type": "array", "items": string},
            "description": nstring,
        },
    }
    run = {
        "type": "object",
        "description": "Marquez's Run, plus lakebed's fields (job, codeVersion, parentRun, errorMessage, ...).",
        "properties": {
            "id": string,
            "createdAt": ntime,
            "updatedAt": ntime,
            "nominalStartTime": ntime,
            "nominalEndTime": ntime,
            "state": {"type": "string", "enum": ["RUNNING", "COMPLETED", "FAILED", "ABORTED"]},
            "startedAt": ntime,
            "endedAt": ntime,
            "durationMs": _nullable("integer"),
            "args": {"type": "object"},
            "jobVersion": {
                "type": "object",
                "properties": {"namespace": string, "name": string, "version": nstring},
                "description": "The job and the code version it ran.",
            },
            "inputVersions": {"type": "array", "items": _ref("DatasetVersionId")},
            "outputVersions": {"type": "array", "items": _ref("DatasetVersionId")},
            "context": {"type": "object"},
            "facets": {
                **facets,
                "description": "Run facets: parent, errorMessage, processing_engine, lakebed.",
            },
            "job": _ref("JobId"),
            "jobFacets": facets,
            "codeVersion": nstring,
            "processing": nstring,
            "parentRun": {
                "type": ["object", "null"],
                "properties": {"id": string, "job": nstring},
            },
            "errorMessage": nstring,
            "dagsterRunId": nstring,
            "quality": {"type": "object", "description": "Output table → its data quality assertions."},
        },
        "required": ["id", "state", "inputVersions", "outputVersions", "facets"],
    }
    dataset = {
        "type": "object",
        "description": "Marquez's Dataset; `currentVersion` is the Delta version, `facets.lakebed.table` the table.",
        "properties": {
            "id": _ref("DatasetId"),
            "type": {"type": "string", "enum": ["DB_TABLE", "STREAM"]},
            "name": string,
            "physicalName": string,
            "createdAt": ntime,
            "updatedAt": ntime,
            "namespace": string,
            "sourceName": string,
            "fields": {"type": "array", "items": _ref("Field")},
            "tags": {"type": "array", "items": string},
            "lastModifiedAt": ntime,
            "lastLifecycleState": nstring,
            "description": nstring,
            "facets": facets,
            "currentVersion": nstring,
            "deleted": {"type": "boolean"},
            "table": nstring,
        },
        "required": ["id", "type", "name", "namespace", "facets"],
    }
    dataset_version = {
        "type": "object",
        "properties": {
            "id": _ref("DatasetVersionId"),
            "type": string,
            "name": string,
            "physicalName": string,
            "createdAt": ntime,
            "version": string,
            "namespace": string,
            "sourceName": string,
            "fields": {"type": "array", "items": _ref("Field")},
            "tags": {"type": "array", "items": string},
            "description": nstring,
            "createdByRun": _ref("Run"),
            "facets": facets,
            "rowCount": _nullable("integer"),
            "size": _nullable("integer"),
        },
        "required": ["id", "version", "createdByRun"],
    }
    job = {
        "type": "object",
        "properties": {
            "id": _ref("JobId"),
            "type": {"type": "string", "enum": ["BATCH", "STREAM"]},
            "name": string,
            "simpleName": string,
            "parentJobName": nstring,
            "createdAt": ntime,
            "updatedAt": ntime,
            "namespace": string,
            "inputs": {"type": "array", "items": _ref("DatasetId")},
            "outputs": {"type": "array", "items": _ref("DatasetId")},
            "location": nstring,
            "description": nstring,
            "latestRun": {"oneOf": [_ref("Run"), {"type": "null"}]},
            "facets": facets,
            "currentVersion": {**nstring, "description": "The code version of the latest run."},
            "runCount": _nullable("integer"),
            "latestState": nstring,
        },
        "required": ["id", "name", "namespace", "inputs", "outputs"],
    }
    namespace = {
        "type": "object",
        "properties": {
            "name": string,
            "createdAt": ntime,
            "updatedAt": ntime,
            "ownerName": nstring,
            "description": nstring,
        },
        "required": ["name"],
    }
    edge = {
        "type": "object",
        "properties": {"origin": string, "destination": string},
        "required": ["origin", "destination"],
    }
    graph_node = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "examples": ["dataset:file:/lake/tables/orders", "job:lakebed:ingest"]},
            "type": {"type": "string", "enum": ["DATASET", "JOB"]},
            "data": {"oneOf": [_ref("Dataset"), {"type": "object", "description": "A job (see Job)."}]},
            "inEdges": {"type": "array", "items": _ref("GraphEdge")},
            "outEdges": {"type": "array", "items": _ref("GraphEdge")},
        },
        "required": ["id", "type", "data", "inEdges", "outEdges"],
    }
    dataset_ref = {
        "type": "object",
        "properties": {"namespace": string, "name": string, "version": nstring, "table": nstring},
    }
    run_info = {
        "type": "object",
        "description": "A run as the lineage store knows it: version-exact inputs and outputs.",
        "properties": {
            "run_id": string,
            "job_namespace": string,
            "job_name": string,
            "state": {"type": "string", "enum": ["RUNNING", "COMPLETE", "FAIL", "ABORT"]},
            "started_at": ntime,
            "ended_at": ntime,
            "code_version": nstring,
            "processing": nstring,
            "parent_run_id": nstring,
            "parent_job": nstring,
            "error": nstring,
            "dagster_run_id": nstring,
            "inputs": {"type": "array", "items": _ref("LakebedDatasetVersion")},
            "outputs": {"type": "array", "items": _ref("LakebedDatasetVersion")},
            "quality": {"type": "object"},
        },
        "required": ["run_id", "job_name", "state", "inputs", "outputs"],
    }
    lakebed_graph = {
        "type": "object",
        "properties": {
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": string,
                        "kind": {"type": "string", "enum": ["dataset", "job"]},
                        "label": string,
                        "namespace": string,
                        "name": string,
                        "details": {
                            "type": "object",
                            "description": "versions (datasets), runs (jobs), columns.",
                        },
                    },
                    "required": ["id", "kind", "label", "namespace", "name"],
                },
            },
            "edges": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"source": string, "target": string, "label": nstring},
                    "required": ["source", "target"],
                },
            },
        },
        "required": ["nodes", "edges"],
        "additionalProperties": True,
    }
    run_row = {
        "type": "object",
        "properties": {
            "run_id": string,
            "job": string,
            "state": {"type": "string", "enum": ["RUNNING", "COMPLETE", "FAIL", "ABORT"]},
            "started_at": ntime,
            "ended_at": ntime,
            "code_version": nstring,
            "parent_run_id": nstring,
            "error": nstring,
        },
    }
    history_row = {
        "type": "object",
        "properties": {
            "version": _nullable("integer"),
            "run_id": string,
            "job": string,
            "written_at": ntime,
            "code_version": nstring,
            "rows": _nullable("integer"),
            "size": _nullable("integer"),
            "parent_run_id": nstring,
        },
    }
    count = {"type": "integer", "description": "How many there are in all (before limit and offset)."}
    return {
        "Error": {
            "type": "object",
            "properties": {"error": string, "status": {"type": "integer"}},
            "required": ["error"],
        },
        "Index": {
            "type": "object",
            "properties": {
                "name": string,
                "version": string,
                "openapi": string,
                "endpoints": {"type": "array", "items": string},
            },
        },
        "Namespace": namespace,
        "NamespaceList": {
            "type": "object",
            "properties": {"namespaces": {"type": "array", "items": _ref("Namespace")}, "totalCount": count},
            "required": ["namespaces"],
        },
        "DatasetId": dataset_id,
        "DatasetVersionId": version_id,
        "JobId": dataset_id,
        "Field": field_schema,
        "Dataset": dataset,
        "DatasetList": {
            "type": "object",
            "properties": {"totalCount": count, "datasets": {"type": "array", "items": _ref("Dataset")}},
            "required": ["datasets", "totalCount"],
        },
        "DatasetVersion": dataset_version,
        "DatasetVersionList": {
            "type": "object",
            "properties": {
                "totalCount": count,
                "versions": {"type": "array", "items": _ref("DatasetVersion")},
            },
            "required": ["versions"],
        },
        "Job": job,
        "JobList": {
            "type": "object",
            "properties": {"totalCount": count, "jobs": {"type": "array", "items": _ref("Job")}},
            "required": ["jobs"],
        },
        "Run": run,
        "RunList": {
            "type": "object",
            "properties": {"runs": {"type": "array", "items": _ref("Run")}},
            "required": ["runs"],
        },
        "GraphEdge": edge,
        "GraphNode": graph_node,
        "LineageGraph": {
            "type": "object",
            "properties": {"graph": {"type": "array", "items": _ref("GraphNode")}},
            "required": ["graph"],
        },
        "LakebedDatasetVersion": dataset_ref,
        "RunInfo": run_info,
        "LakebedGraph": lakebed_graph,
        "History": {
            "type": "object",
            "properties": {
                "table": string,
                "namespace": string,
                "name": string,
                "versions": {"type": "array", "items": history_row},
            },
            "required": ["table", "versions"],
        },
        "LakebedRunList": {
            "type": "object",
            "properties": {"runs": {"type": "array", "items": run_row}},
            "required": ["runs"],
        },
        "RunEvents": {
            "type": "object",
            "properties": {
                "runId": string,
                "events": {
                    "type": "array",
                    "items": {"type": "object", "description": "An OpenLineage RunEvent."},
                },
            },
            "required": ["runId", "events"],
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint of this server."""
    depth = _param("depth", "query", "integer", "How many hops to follow.", minimum=0, maximum=MAX_DEPTH)
    paths: dict[str, Any] = {
        "/": _get("getIndex", "Where the API description is", "Index", tag="Meta", not_found=False),
        "/openapi.json": _get(
            "getOpenApi",
            "This OpenAPI document",
            None,
            tag="Meta",
            content={"application/json": {"schema": {"type": "object"}}},
            not_found=False,
        ),
        "/api/v1/namespaces": _get(
            "getNamespaces",
            "List namespaces",
            "NamespaceList",
            tag="Namespaces",
            params=[_LIMIT, _OFFSET],
            not_found=False,
        ),
        "/api/v1/namespaces/{namespace}": _get(
            "getNamespace", "Retrieve a namespace", "Namespace", tag="Namespaces", params=[_NS]
        ),
        "/api/v1/namespaces/{namespace}/datasets": _get(
            "getDatasets",
            "List the datasets of a namespace",
            "DatasetList",
            tag="Datasets",
            params=[_NS, _LIMIT, _OFFSET],
        ),
        "/api/v1/namespaces/{namespace}/datasets/{dataset}": _get(
            "getDataset", "Retrieve a dataset", "Dataset", tag="Datasets", params=[_NS, _DATASET]
        ),
        "/api/v1/namespaces/{namespace}/datasets/{dataset}/versions": _get(
            "getDatasetVersions",
            "List the versions of a dataset, newest first, each with the run that created it",
            "DatasetVersionList",
            tag="Datasets",
            params=[_NS, _DATASET, _LIMIT, _OFFSET],
        ),
        "/api/v1/namespaces/{namespace}/datasets/{dataset}/versions/{version}": _get(
            "getDatasetVersion",
            "Retrieve one version of a dataset",
            "DatasetVersion",
            tag="Datasets",
            params=[
                _NS,
                _DATASET,
                _param("version", "path", "string", "The dataset version (the Delta version)."),
            ],
        ),
        "/api/v1/namespaces/{namespace}/jobs": _get(
            "getJobs", "List the jobs of a namespace", "JobList", tag="Jobs", params=[_NS, _LIMIT, _OFFSET]
        ),
        "/api/v1/namespaces/{namespace}/jobs/{job}": _get(
            "getJob", "Retrieve a job", "Job", tag="Jobs", params=[_NS, _JOB]
        ),
        "/api/v1/namespaces/{namespace}/jobs/{job}/runs": _get(
            "getRuns",
            "List the runs of a job, newest first",
            "RunList",
            tag="Jobs",
            params=[_NS, _JOB, _LIMIT, _OFFSET],
        ),
        "/api/v1/runs/{id}": _get(
            "getRun",
            "Retrieve a run",
            "Run",
            tag="Runs",
            params=[_param("id", "path", "string", "The run id.")],
        ),
        "/api/v1/jobs/runs/{id}": _get(
            "getJobRun",
            "Retrieve a run (Marquez's older path)",
            "Run",
            tag="Runs",
            params=[_param("id", "path", "string", "The run id.")],
        ),
        "/api/v1/lineage": _get(
            "getLineage",
            "The lineage graph around a dataset or job",
            "LineageGraph",
            tag="Lineage",
            params=[
                _param(
                    "nodeId",
                    "query",
                    "string",
                    "`dataset:<namespace>:<name>` or `job:<namespace>:<name>`, percent-encoded.",
                    required=True,
                ),
                {**depth, "schema": {**depth["schema"], "default": DEFAULT_DEPTH}},
            ],
        ),
        "/api/v1/lakebed/producer": _get(
            "getProducer",
            "The run that wrote a table at an exact version, with the versions it read",
            "RunInfo",
            tag="lakebed",
            params=[_TABLE, _VERSION],
        ),
        "/api/v1/lakebed/upstream": _get(
            "getUpstream",
            "What a table version came from, run by run (optionally for one column)",
            None,
            tag="lakebed",
            params=[
                _TABLE,
                _VERSION,
                {**depth, "schema": {**depth["schema"], "default": DEFAULT_LINEAGE_DEPTH}},
                _param("column", "query", "string", "Follow only the columns this column derives from."),
                _FORMAT,
            ],
            content=_GRAPH_CONTENT,
        ),
        "/api/v1/lakebed/downstream": _get(
            "getDownstream",
            "What was made from a table (from a version on)",
            None,
            tag="lakebed",
            params=[
                _TABLE,
                _VERSION,
                {**depth, "schema": {**depth["schema"], "default": DEFAULT_LINEAGE_DEPTH}},
                _FORMAT,
            ],
            content=_GRAPH_CONTENT,
        ),
        "/api/v1/lakebed/history": _get(
            "getHistory",
            "Every version of a table with the run that wrote it",
            "History",
            tag="lakebed",
            params=[_TABLE],
        ),
        "/api/v1/lakebed/graph": _get(
            "getGraph",
            "The whole lineage graph as of a time",
            None,
            tag="lakebed",
            params=[
                _param(
                    "asOf",
                    "query",
                    "string",
                    "An ISO-8601 time (default: now; naive means UTC).",
                    format="date-time",
                ),
                _param(
                    "includeSystem", "query", "boolean", "Include lakebed's own system tables.", default=False
                ),
                _FORMAT,
            ],
            content=_GRAPH_CONTENT,
            not_found=False,
        ),
        "/api/v1/lakebed/runs": _get(
            "getLakebedRuns",
            "Runs, newest first",
            "LakebedRunList",
            tag="lakebed",
            params=[
                _param("failed", "query", "boolean", "Only failed or aborted runs.", default=False),
                _param("job", "query", "string", "Only runs of this job."),
                _LIMIT,
            ],
            not_found=False,
        ),
        "/api/v1/lakebed/events": _get(
            "getRunEvents",
            "The raw OpenLineage events of a run, in order",
            "RunEvents",
            tag="lakebed",
            params=[_param("runId", "query", "string", "The run id.", required=True)],
        ),
    }

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lakebed lineage API",
            "version": __version__,
            "summary": "Read-only lineage of a lakebed home: Marquez-compatible endpoints plus version-exact provenance.",
            "description": (__doc__ or "").strip(),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "Meta"},
            {"name": "Namespaces"},
            {"name": "Datasets"},
            {"name": "Jobs"},
            {"name": "Runs"},
            {"name": "Lineage"},
            {"name": "lakebed", "description": "lakebed's additions to the Marquez API."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "LAKEBED_LINEAGE_API_TOKEN; required on every request when configured.",
                }
            },
            "responses": {
                "BadRequest": error("A parameter is missing or malformed."),
                "Unauthorized": {
                    **error("The bearer token is missing or wrong."),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                },
                "NotFound": error("No such endpoint, namespace, dataset, version, job or run."),
                "MethodNotAllowed": {
                    **error("The API is read-only: only GET and HEAD."),
                    "headers": {"Allow": {"schema": {"type": "string", "const": ALLOW}}},
                },
                "InternalError": error("Something unexpected failed; the server logged it."),
            },
            "schemas": _schemas(),
        },
    }


# --- HTTP ----------------------------------------------------------------------------------------------


class LineageHTTPServer(ThreadingHTTPServer):
    """The server: the store, the expected token, and the lock that serialises store access."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: LineageStore, token: bytes | None) -> None:
        self.api = LineageApi(store)
        self.store_lock = threading.Lock()
        self._token = token
        super().__init__(address, LineageRequestHandler)

    def check_token(self, header: str | None) -> str | None:
        """None when the request may proceed, else why not (``missing`` or ``invalid``)."""
        if self._token is None:
            return None
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "missing"
        if not hmac.compare_digest(credentials.strip().encode("utf-8"), self._token):
            return "invalid"
        return None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}"


class _LineageHTTPServer6(LineageHTTPServer):
    address_family = socket.AF_INET6


class LineageRequestHandler(BaseHTTPRequestHandler):
    """One request: authenticate, refuse writes, answer reads (see the module docstring)."""

    server: LineageHTTPServer
    server_version = f"lakebed-lineage/{__version__}"
    protocol_version = "HTTP/1.0"  # one request per connection: bodies of refused writes need no draining

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<METHOD>: every other method (POST, PUT, PATCH, DELETE,
        # OPTIONS, TRACE, made-up ones) is refused here instead of with 501.
        if name.startswith("do_"):
            return self._refuse_method
        raise AttributeError(name)

    def _refuse_method(self) -> None:
        denied = self._authenticate()
        if denied is not None:
            self._send(denied, head=False)
            return
        self._send(
            error_response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"the lineage API is read-only: {self.command} is not allowed (use {ALLOW})",
                {"Allow": ALLOW},
            ),
            head=False,
        )

    def _authenticate(self) -> Response | None:
        problem = self.server.check_token(self.headers.get("Authorization"))
        if problem is None:
            return None
        challenge = f'Bearer realm="{REALM}"'
        if problem == "invalid":
            challenge += ', error="invalid_token"'
            message = "the bearer token is not valid"
        else:
            message = "a bearer token is required: send 'Authorization: Bearer <token>'"
        log.warning(
            "lineage API: %s token from %s for %s %s",
            problem,
            self.client_address[0],
            self.command,
            self._path_only(),
        )
        return error_response(HTTPStatus.UNAUTHORIZED, message, {"WWW-Authenticate": challenge})

    def _path_only(self) -> str:
        return urlsplit(self.path).path

    def _serve(self, *, head: bool) -> None:
        response = self._authenticate() or self._answer()
        self._send(response, head=head)

    def _answer(self) -> Response:
        try:
            with self.server.store_lock:
                response = self.server.api.handle(self.path)
            if callable(response.body):
                response.body = response.body()
            return response
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except LineageNotFoundError as exc:
            return error_response(HTTPStatus.NOT_FOUND, str(exc))
        except Exception:
            log.exception("lineage API: %s %s failed", self.command, self._path_only())
            return error_response(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; the server log has the details"
            )

    def _send(self, response: Response, *, head: bool) -> None:
        body = response.body if isinstance(response.body, bytes) else b""
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("lineage API: client %s went away", self.client_address[0])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (a malformed request line, oversized headers) as JSON too."""
        self.close_connection = True
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = message or "error"
        head = getattr(self, "command", None) == "HEAD"
        self._send(error_response(code, text), head=head)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        # The request line holds the path and query, never the Authorization header.
        log.info("%s - %s", self.address_string(), format % args)


# --- starting ------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _token_bytes(token: str | SecretStr | None, store: LineageStore) -> bytes | None:
    if token is None:
        token = getattr(getattr(store, "config", None), "lineage_api_token", None)
    if token is None:
        return None
    value = token if isinstance(token, str) else token.get_secret_value()
    return value.encode("utf-8") if value else None


def make_server(
    store: LineageStore,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | SecretStr | None = None,
) -> LineageHTTPServer:
    """A bound, not yet serving, server (``serve_forever()`` it, ``shutdown()`` it from another thread).

    ``token`` defaults to the store config's ``lineage_api_token``. Without any token only a loopback
    ``host`` is allowed (with a warning); another raises :class:`~lakebed.errors.ConfigError`.
    ``port=0`` picks a free port (see ``server.server_address``)."""
    secret = _token_bytes(token, store)
    if secret is None:
        if not is_loopback(host):
            raise ConfigError(
                f"refusing to serve the lineage API on {host!r} without a token: anyone who can reach it "
                "could read the lineage. Set LAKEBED_LINEAGE_API_TOKEN (or pass token=), or bind a "
                "loopback address (127.0.0.1, ::1 or localhost)."
            )
        log.warning(
            "the lineage API on %s has no token: anyone on this machine can read the lineage "
            "(set LAKEBED_LINEAGE_API_TOKEN to require one)",
            host,
        )
    name = host.strip().strip("[]")
    cls = _LineageHTTPServer6 if ":" in name else LineageHTTPServer
    return cls((name, port), store, secret)


def serve(
    store: LineageStore,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | SecretStr | None = None,
) -> None:
    """Serve the lineage API until interrupted (Ctrl-C)."""
    server = make_server(store, host, port, token)
    log.info("lineage API on %s (OpenAPI at %s/openapi.json)", server.url, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("lineage API stopping")
    finally:
        server.server_close()


__all__ = [
    "LineageApi",
    "LineageHTTPServer",
    "Response",
    "graph_json",
    "is_loopback",
    "make_server",
    "openapi_document",
    "serve",
]
