"""The lineage HTTP API: real tables written with lineage, a real uvicorn server process on a free port
(``lakebed lineage serve``), real HTTP, and every JSON answer checked against the server's own OpenAPI
document (the schema of its route and status)."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from jsonschema import Draft202012Validator
from server_process import Reply, ServerProcess, free_port, send

import lakebed
from lakebed.config import reset_config
from lakebed.errors import ConfigError
from lakebed.http import check_binding, is_loopback
from lakebed.lineage.runs import lineage_run
from lakebed.pipelines.delta import RunContext, commit

TOKEN = "auditor-token-3f9c1e"


# --- the server process ----------------------------------------------------------------------------------


class LineageServer(ServerProcess):
    """``lakebed lineage serve`` in its own process."""

    args = ("lineage", "serve")
    token_variable = "LAKEBED_LINEAGE_API_TOKEN"
    lenient = ("dataset", "job")


@pytest.fixture
def server_at(tmp_path: Path) -> Iterator[Any]:
    """Start servers for one test; all are stopped after it."""
    started: list[LineageServer] = []

    def start(home: Path, *, token: str | None) -> LineageServer:
        server = LineageServer(home, tmp_path / f"server-{len(started)}.log", token=token).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- the lake ----------------------------------------------------------------------------------------------


@dataclass
class Lake:
    """What the module's lakebed home holds, and a server over its lineage."""

    server: LineageServer
    raw: str  # the OpenLineage dataset name (absolute path) of table raw
    derived: str
    raw_runs: dict[int, str]  # raw's Delta version → the run id that wrote it
    derive_run: str
    broken_run: str
    before_derive: dt.datetime

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, **options: Any) -> Reply:
        return self.server.request(path, **options)


def _write_lake() -> dict[str, Any]:
    raw_runs: dict[int, str] = {}
    for version, rows in enumerate(([1, 2], [3])):
        run = RunContext(job="load_raw")
        result = commit("raw", pa.table({"id": rows, "amount": [float(r) for r in rows]}), run=run)
        assert result.version == version
        raw_runs[version] = run.run_id
    time.sleep(0.05)
    before_derive = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    derive = RunContext(job="derive")
    with lineage_run(derive):
        data = lakebed.read_table("raw")  # raw@1: an input of this run at that version
        commit("derived", data.append_column("double", pc.multiply(data["amount"], 2.0)), run=derive)
    later = RunContext(job="load_raw")  # raw moves on after derive read it
    commit("raw", pa.table({"id": [4], "amount": [4.0]}), run=later)
    raw_runs[2] = later.run_id
    broken = RunContext(job="broken")
    with pytest.raises(RuntimeError), lineage_run(broken):
        lakebed.read_table("derived")
        raise RuntimeError("upstream feed was empty")
    return {
        "raw_runs": raw_runs,
        "derive_run": derive.run_id,
        "broken_run": broken.run_id,
        "before_derive": before_derive,
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """One lakebed home for the module (writing it is the slow part), served with a token."""
    root = tmp_path_factory.mktemp("lineage-api")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKEBED_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        mp.delenv("LAKEBED_CONFIG", raising=False)
        mp.delenv("LAKEBED_LINEAGE_API_TOKEN", raising=False)
        mp.chdir(root)
        reset_config()
        try:
            written = _write_lake()
        finally:
            reset_config()
    server = LineageServer(home, root / "server.log", token=TOKEN).start()
    try:
        yield Lake(
            server=server,
            raw=str((home / "tables" / "raw").resolve()),
            derived=str((home / "tables" / "derived").resolve()),
            **written,
        )
    finally:
        server.stop()


def enc(name: str) -> str:
    return quote(name, safe="")


# --- security ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/namespaces", "/openapi.json", "/", "/api/v1/lakebed/graph", "/api/v1/nothing"]
)
def test_every_request_needs_the_token(lake: Lake, path: str) -> None:
    missing = send(lake.url + path, token=None)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.headers["Content-Type"].startswith("application/json")
    assert "token" in missing.json()["error"]
    assert lake.server.schemas is not None
    lake.server.schemas.check(missing, path, "GET")

    wrong = lake.get(path, token=TOKEN + "x")
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]

    basic = send(lake.url + path, token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401

    assert lake.get(path).status == (404 if path == "/api/v1/nothing" else 200)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"])
@pytest.mark.parametrize("path", ["/api/v1/namespaces", "/api/v1/nothing"])
def test_the_api_is_read_only(lake: Lake, method: str, path: str) -> None:
    refused = lake.get(path, method=method)
    assert refused.status == 405
    assert refused.headers["Allow"] == "GET, HEAD"
    assert "read-only" in refused.json()["error"]
    # Authentication comes first: without the token a write is a 401, not a 405.
    assert send(lake.url + "/api/v1/lineage", method=method, token=None).status == 401


def test_head_answers_headers_only(lake: Lake) -> None:
    head = lake.get("/api/v1/namespaces", method="HEAD")
    get = lake.get("/api/v1/namespaces")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) == len(get.body) > 0
    assert get.headers["Cache-Control"] == "no-store"
    assert get.headers["X-Content-Type-Options"] == "nosniff"
    assert get.headers["Server"].startswith("lakebed-lineage/")


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.168.10.20", "lineage.example.com", "", "::"):
        with pytest.raises(ConfigError, match="without a token"):
            check_binding(host, False, service="the lineage API", variable="LAKEBED_LINEAGE_API_TOKEN")
        check_binding(host, True, service="the lineage API", variable="LAKEBED_LINEAGE_API_TOKEN")
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.com", ""))

    # The real command refuses too, before binding anything.
    server = LineageServer(tmp_path / "home", tmp_path / "refused.log", token=None, host="0.0.0.0")
    done = subprocess.run(
        server.command(free_port()), env=server.environment(), capture_output=True, timeout=120
    )
    assert done.returncode == 1
    assert b"without a token" in done.stderr


def test_loopback_without_a_token_is_open_with_a_warning(lake: Lake, server_at: Any) -> None:
    server = server_at(lake.server.home, token=None)
    assert "no token" in server.log()
    assert server.request("/api/v1/namespaces").status == 200
    assert server.request("/api/v1/namespaces", method="DELETE").status == 405


def test_the_token_is_never_logged(lake: Lake) -> None:
    lake.get("/api/v1/namespaces")
    lake.get("/api/v1/namespaces", token=TOKEN + "-wrong")
    send(lake.url + "/api/v1/namespaces", token=None)
    lake.get("/api/v1/namespaces", method="POST")
    lake.get("/api/v1/lakebed/producer?table=nope")
    time.sleep(0.2)  # the server writes its log lines after answering
    log = lake.server.log()
    assert "GET /api/v1/namespaces HTTP/1.1" in log and "401" in log  # requests and refusals are logged...
    assert "invalid token" in log and "missing token" in log
    assert TOKEN not in log  # ...without the token, right or wrong


# --- Marquez-compatible endpoints ----------------------------------------------------------------------


def test_namespaces(lake: Lake) -> None:
    reply = lake.get("/api/v1/namespaces")
    assert reply.status == 200
    names = [n["name"] for n in reply.json()["namespaces"]]
    assert "lakebed" in names  # the jobs
    assert "file" in names  # the tables, named by path
    assert lake.get("/api/v1/namespaces/lakebed").json()["name"] == "lakebed"


def test_datasets_of_a_namespace(lake: Lake) -> None:
    body = lake.get("/api/v1/namespaces/file/datasets").json()
    by_name = {d["name"]: d for d in body["datasets"]}
    assert body["totalCount"] == len(body["datasets"]) == 2
    raw = by_name[lake.raw]
    assert raw["id"] == {"namespace": "file", "name": lake.raw}
    assert raw["namespace"] == "file" and raw["type"] == "DB_TABLE"
    assert raw["currentVersion"] == "2"
    assert raw["facets"]["lakebed"]["table"] == "raw"
    assert [f["name"] for f in raw["fields"]] == ["id", "amount"]
    assert dt.datetime.fromisoformat(raw["updatedAt"]).tzinfo is not None
    assert by_name[lake.derived]["facets"]["lakebed"]["table"] == "derived"

    page = lake.get("/api/v1/namespaces/file/datasets?limit=1&offset=1").json()
    assert page["totalCount"] == 2 and len(page["datasets"]) == 1


def test_one_dataset_by_its_encoded_name(lake: Lake) -> None:
    reply = lake.get(f"/api/v1/namespaces/file/datasets/{enc(lake.derived)}")
    assert reply.status == 200
    dataset = reply.json()
    assert dataset["name"] == lake.derived and dataset["currentVersion"] == "0"
    assert [f["name"] for f in dataset["fields"]] == ["id", "amount", "double"]
    # An unencoded path works too.
    assert lake.get(f"/api/v1/namespaces/file/datasets/{lake.derived}").json() == dataset


def test_dataset_versions_name_the_run_that_created_each(lake: Lake) -> None:
    reply = lake.get(f"/api/v1/namespaces/file/datasets/{enc(lake.raw)}/versions")
    assert reply.status == 200
    versions = reply.json()["versions"]
    assert [v["version"] for v in versions] == ["2", "1", "0"]  # every Delta version, newest first
    for v in versions:
        run = v["createdByRun"]
        assert run["id"] == lake.raw_runs[int(v["version"])]
        assert run["state"] == "COMPLETED"
        assert run["jobVersion"]["name"] == "load_raw"
        assert {"namespace": "file", "name": lake.raw, "version": v["version"], "table": "raw"} in run[
            "outputVersions"
        ]
        assert v["id"] == {"namespace": "file", "name": lake.raw, "version": v["version"]}
        assert dt.datetime.fromisoformat(v["createdAt"])
    assert versions[-1]["rowCount"] == 2

    one = lake.get(f"/api/v1/namespaces/file/datasets/{enc(lake.raw)}/versions/1").json()
    assert one["createdByRun"]["id"] == lake.raw_runs[1]
    unencoded = lake.get(f"/api/v1/namespaces/file/datasets/{lake.raw}/versions").json()
    assert [v["version"] for v in unencoded["versions"]] == ["2", "1", "0"]


def test_jobs_and_their_runs(lake: Lake) -> None:
    jobs = {j["name"]: j for j in lake.get("/api/v1/namespaces/lakebed/jobs").json()["jobs"]}
    assert {"load_raw", "derive", "broken"} <= set(jobs)
    derive = lake.get("/api/v1/namespaces/lakebed/jobs/derive").json()
    assert derive["id"] == {"namespace": "lakebed", "name": "derive"}
    assert derive["inputs"] == [{"namespace": "file", "name": lake.raw}]
    assert derive["outputs"] == [{"namespace": "file", "name": lake.derived}]
    assert derive["latestRun"]["id"] == lake.derive_run

    runs = lake.get("/api/v1/namespaces/lakebed/jobs/load_raw/runs").json()["runs"]
    assert {r["id"] for r in runs} == set(lake.raw_runs.values())


def test_a_run_with_its_versions(lake: Lake) -> None:
    for path in (f"/api/v1/runs/{lake.derive_run}", f"/api/v1/jobs/runs/{lake.derive_run}"):
        run = lake.get(path).json()
        assert run["id"] == lake.derive_run and run["state"] == "COMPLETED"
        assert run["job"] == {"namespace": "lakebed", "name": "derive"}
        assert run["inputVersions"] == [
            {"namespace": "file", "name": lake.raw, "version": "1", "table": "raw"}
        ]
        assert run["outputVersions"] == [
            {"namespace": "file", "name": lake.derived, "version": "0", "table": "derived"}
        ]
        started, ended = (
            dt.datetime.fromisoformat(run["startedAt"]),
            dt.datetime.fromisoformat(run["endedAt"]),
        )
        assert started <= ended and run["durationMs"] >= 0
        assert run["codeVersion"] and run["jobFacets"]["sourceCodeLocation"]["version"] == run["codeVersion"]


def test_a_failed_run_carries_its_error(lake: Lake) -> None:
    run = lake.get(f"/api/v1/runs/{lake.broken_run}").json()
    assert run["state"] == "FAILED"
    assert "upstream feed was empty" in run["facets"]["errorMessage"]["message"]
    assert "upstream feed was empty" in run["errorMessage"]
    failed = lake.get("/api/v1/lakebed/runs?failed=true").json()["runs"]
    assert [r["run_id"] for r in failed] == [lake.broken_run]
    assert failed[0]["state"] == "FAIL" and failed[0]["job"] == "broken"
    assert len(lake.get("/api/v1/lakebed/runs").json()["runs"]) == 5


def test_marquez_lineage_graph(lake: Lake) -> None:
    node_id = f"dataset:file:{lake.raw}"
    reply = lake.get(f"/api/v1/lineage?nodeId={enc(node_id)}&depth=2")
    assert reply.status == 200
    graph = reply.json()["graph"]
    nodes = {n["id"]: n for n in graph}
    derive, derived = "job:lakebed:derive", f"dataset:file:{lake.derived}"
    assert {node_id, derive, derived, "job:lakebed:load_raw"} <= set(nodes)
    assert nodes[derive]["type"] == "JOB" and nodes[node_id]["type"] == "DATASET"
    assert nodes[derive]["data"]["id"] == {"namespace": "lakebed", "name": "derive"}
    assert nodes[node_id]["data"]["facets"]["lakebed"]["table"] == "raw"
    for node in graph:
        assert set(node) == {"id", "type", "data", "inEdges", "outEdges"}
        for edge in node["inEdges"]:
            assert edge["destination"] == node["id"]
            assert edge in nodes[edge["origin"]]["outEdges"]
        for edge in node["outEdges"]:
            assert edge["origin"] == node["id"]
            assert edge in nodes[edge["destination"]]["inEdges"]
    assert {"origin": node_id, "destination": derive} in nodes[derive]["inEdges"]
    assert {"origin": derive, "destination": derived} in nodes[derive]["outEdges"]

    near = lake.get(f"/api/v1/lineage?nodeId={enc(derive)}&depth=1").json()["graph"]
    assert {n["id"] for n in near} == {derive, node_id, derived}


# --- lakebed's endpoints -------------------------------------------------------------------------------


def test_producer_names_the_job_and_the_exact_input_version(lake: Lake) -> None:
    reply = lake.get("/api/v1/lakebed/producer?table=derived&version=0")
    assert reply.status == 200
    run = reply.json()
    assert run["job_name"] == "derive" and run["run_id"] == lake.derive_run and run["state"] == "COMPLETE"
    # derive read raw at version 1; raw is at version 2 by now.
    assert run["inputs"] == [{"namespace": "file", "name": lake.raw, "version": "1", "table": "raw"}]
    assert run["outputs"] == [{"namespace": "file", "name": lake.derived, "version": "0", "table": "derived"}]
    raw0 = lake.get("/api/v1/lakebed/producer?table=raw&version=0").json()
    assert raw0["run_id"] == lake.raw_runs[0]


def test_upstream_downstream_and_history(lake: Lake) -> None:
    upstream = lake.get("/api/v1/lakebed/upstream?table=derived&version=0&depth=3").json()
    ids = {n["id"] for n in upstream["nodes"]}
    assert {f"dataset:file:{lake.raw}", "job:lakebed:derive", "job:lakebed:load_raw"} <= ids
    assert {"source": f"dataset:file:{lake.raw}", "target": "job:lakebed:derive", "label": "v1"} in upstream[
        "edges"
    ]

    downstream = lake.get("/api/v1/lakebed/downstream?table=raw&version=1").json()
    assert {"job:lakebed:derive", f"dataset:file:{lake.derived}"} <= {n["id"] for n in downstream["nodes"]}

    history = lake.get("/api/v1/lakebed/history?table=raw").json()
    assert history["table"] == "raw" and history["name"] == lake.raw
    assert [(v["version"], v["run_id"]) for v in history["versions"]] == [
        (2, lake.raw_runs[2]),
        (1, lake.raw_runs[1]),
        (0, lake.raw_runs[0]),
    ]


def test_graph_as_of_a_time(lake: Lake) -> None:
    now = lake.get("/api/v1/lakebed/graph").json()
    assert "job:lakebed:derive" in {n["id"] for n in now["nodes"]}
    before = lake.get(f"/api/v1/lakebed/graph?asOf={enc(lake.before_derive.isoformat())}").json()
    ids = {n["id"] for n in before["nodes"]}
    assert "job:lakebed:derive" not in ids and f"dataset:file:{lake.derived}" not in ids
    assert {"job:lakebed:load_raw", f"dataset:file:{lake.raw}"} <= ids
    # A '+' of the offset sent unencoded arrives as a space: still understood.
    plain = lake.get(f"/api/v1/lakebed/graph?asOf={lake.before_derive.isoformat()}").json()
    assert {n["id"] for n in plain["nodes"]} == ids


def test_graph_drawings(lake: Lake) -> None:
    svg = lake.get("/api/v1/lakebed/graph?format=svg")
    assert svg.status == 200
    assert svg.headers["Content-Type"] == "image/svg+xml"
    assert ET.fromstring(svg.body).tag == "{http://www.w3.org/2000/svg}svg"
    assert b"derive" in svg.body
    dot = lake.get("/api/v1/lakebed/upstream?table=derived&format=dot")
    assert dot.status == 200 and dot.headers["Content-Type"].startswith("text/vnd.graphviz")
    assert b"digraph" in dot.body


def test_raw_events_of_a_run(lake: Lake) -> None:
    events = lake.get(f"/api/v1/lakebed/events?runId={lake.derive_run}").json()["events"]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert all(e["run"]["runId"] == lake.derive_run for e in events)


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/lakebed/producer?table=nope",
        "/api/v1/lakebed/producer?table=raw&version=99",
        "/api/v1/lakebed/history?table=nope",
        "/api/v1/lakebed/upstream?table=nope",
        "/api/v1/namespaces/nowhere",
        "/api/v1/namespaces/nowhere/datasets",
        "/api/v1/namespaces/file/datasets/%2Fno%2Fsuch%2Ftable",
        "/api/v1/namespaces/file/datasets/%2Fno%2Fsuch%2Ftable/versions",
        "/api/v1/namespaces/lakebed/jobs/nope",
        "/api/v1/namespaces/lakebed/jobs/nope/runs",
        "/api/v1/runs/00000000-0000-0000-0000-000000000000",
        "/api/v1/lineage?nodeId=dataset%3Afile%3A%2Fno%2Fsuch",
        "/api/v1/lakebed/events?runId=nope",
        "/api/v1/nothing",
        "/favicon.ico",
    ],
)
def test_unknown_things_are_404(lake: Lake, path: str) -> None:
    reply = lake.get(path)
    assert reply.status == 404, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json()["error"]


def test_unknown_table_names_it(lake: Lake) -> None:
    error = lake.get("/api/v1/lakebed/producer?table=nope").json()["error"]
    assert "nope" in error
    versions = lake.get("/api/v1/lakebed/producer?table=raw&version=99").json()["error"]
    assert "99" in versions and "known versions" in versions


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/lakebed/upstream?table=derived&depth=two",
        "/api/v1/lakebed/upstream?table=derived&depth=-1",
        "/api/v1/lakebed/upstream?table=derived&depth=100000",
        "/api/v1/lakebed/producer?table=derived&version=latest",
        "/api/v1/lakebed/producer?table=derived&version=1.5",
        "/api/v1/lakebed/producer",
        "/api/v1/lakebed/producer?table=",
        "/api/v1/lakebed/graph?asOf=yesterday",
        "/api/v1/lakebed/graph?format=gif",
        "/api/v1/lakebed/runs?failed=maybe",
        "/api/v1/lakebed/runs?limit=0",
        "/api/v1/lineage",
        "/api/v1/lineage?nodeId=table%3Araw",
        "/api/v1/lineage?nodeId=job%3Alakebed%3Aderive&depth=x",
        "/api/v1/namespaces?limit=abc",
        "/api/v1/namespaces/file/datasets?offset=-3",
    ],
)
def test_bad_parameters_are_422(lake: Lake, path: str) -> None:
    reply = lake.get(path)
    assert reply.status == 422, reply.body
    body = reply.json()
    assert body["status"] == 422 and body["detail"]
    name = body["detail"][0]["loc"][-1]
    assert repr(name) in body["error"]  # the message names the parameter


def test_a_parameter_error_says_what_is_wrong(lake: Lake) -> None:
    body = lake.get("/api/v1/lakebed/upstream?table=derived&depth=two").json()
    assert body["detail"] == [
        {"loc": ["query", "depth"], "msg": body["detail"][0]["msg"], "type": "int_parsing"}
    ]
    assert body["error"].startswith("the query parameter 'depth': ")


def test_unexpected_failures_are_500_without_details(server_at: Any, lakebed_home: Path) -> None:
    """A server over a home whose event file cannot be read (a directory stands in its place)."""
    (lakebed_home / "lineage" / "events.jsonl").mkdir(parents=True)
    server = server_at(lakebed_home, token=TOKEN)
    reply = server.request("/api/v1/namespaces")
    assert reply.status == 500
    assert reply.json() == {"error": "internal error; the server log has the details", "status": 500}
    assert "events.jsonl" not in reply.body.decode() and "Traceback" not in reply.body.decode()
    time.sleep(0.2)
    log = server.log()
    assert "IsADirectoryError" in log and "events.jsonl" in log  # the server log has it
    assert server.request("/openapi.json").status == 200  # and goes on answering


# --- OpenAPI -------------------------------------------------------------------------------------------


def test_openapi_describes_every_endpoint(lake: Lake) -> None:
    reply = lake.get("/openapi.json")
    assert reply.status == 200
    doc = reply.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in (
        "/api/v1/namespaces",
        "/api/v1/namespaces/{namespace}",
        "/api/v1/namespaces/{namespace}/datasets",
        "/api/v1/namespaces/{namespace}/datasets/{dataset}",
        "/api/v1/namespaces/{namespace}/datasets/{dataset}/versions",
        "/api/v1/namespaces/{namespace}/datasets/{dataset}/versions/{version}",
        "/api/v1/namespaces/{namespace}/jobs",
        "/api/v1/namespaces/{namespace}/jobs/{job}",
        "/api/v1/namespaces/{namespace}/jobs/{job}/runs",
        "/api/v1/runs/{id}",
        "/api/v1/jobs/runs/{id}",
        "/api/v1/lineage",
        "/api/v1/lakebed/producer",
        "/api/v1/lakebed/upstream",
        "/api/v1/lakebed/downstream",
        "/api/v1/lakebed/history",
        "/api/v1/lakebed/graph",
        "/api/v1/lakebed/runs",
        "/api/v1/lakebed/events",
    ):
        assert set(paths[path]) == {"get"}, path  # read-only
        responses = paths[path]["get"]["responses"]
        assert {"200", "401", "404", "405", "422", "500"} <= set(responses)
        for status in ("401", "404", "405", "422", "500"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert doc["security"] == [{"bearerAuth": []}]
    lineage_params = {p["name"] for p in paths["/api/v1/lineage"]["get"]["parameters"]}
    assert lineage_params == {"nodeId", "depth"}
    formats = {p["name"]: p for p in paths["/api/v1/lakebed/graph"]["get"]["parameters"]}["format"]
    assert set(formats["schema"]["enum"]) == {"json", "svg", "dot", "mermaid", "png"}
    Draft202012Validator.check_schema({"components": doc["components"]})

    # Every $ref points at something that exists.
    def refs(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "$ref":
                    yield item
                else:
                    yield from refs(item)
        elif isinstance(value, list):
            for item in value:
                yield from refs(item)

    for ref in refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]

    index = lake.get("/").json()
    assert index["openapi"] == "/openapi.json"
    assert set(index["endpoints"]) == set(paths)


def test_every_route_answers_as_its_schema_says(lake: Lake) -> None:
    """One successful request per route, each answer validated against its route's 200 schema."""
    raw, derived = enc(lake.raw), enc(lake.derived)
    for path in (
        "/",
        "/api/v1/namespaces",
        "/api/v1/namespaces/file",
        "/api/v1/namespaces/file/datasets",
        f"/api/v1/namespaces/file/datasets/{raw}",
        f"/api/v1/namespaces/file/datasets/{raw}/versions",
        f"/api/v1/namespaces/file/datasets/{raw}/versions/0",
        "/api/v1/namespaces/lakebed/jobs",
        "/api/v1/namespaces/lakebed/jobs/derive",
        "/api/v1/namespaces/lakebed/jobs/derive/runs",
        f"/api/v1/runs/{lake.broken_run}",
        f"/api/v1/jobs/runs/{lake.derive_run}",
        f"/api/v1/lineage?nodeId={enc('job:lakebed:derive')}",
        "/api/v1/lakebed/producer?table=derived",
        "/api/v1/lakebed/upstream?table=derived&column=double&format=JSON",
        f"/api/v1/lakebed/downstream?table={enc('file:' + lake.raw)}",
        "/api/v1/lakebed/history?table=derived",
        "/api/v1/lakebed/graph?includeSystem=true",
        "/api/v1/lakebed/runs?job=derive&limit=1",
        f"/api/v1/lakebed/events?runId={lake.broken_run}",
        f"/api/v1/namespaces/file/datasets/{derived}/",  # a trailing slash is dropped
        "/health",
        "/ready",
        "/metrics",
    ):
        assert lake.get(path).status == 200, path
    schemas = lake.server.schemas
    assert schemas is not None
    assert {template for template, status in schemas.checked if status == 200} == set(schemas.doc["paths"])


# --- names with slashes ----------------------------------------------------------------------------------


def test_encoded_slashes_stay_inside_a_name(lake: Lake) -> None:
    # A namespace with slashes is one segment once encoded: the namespace route answers, not "no such endpoint".
    kafka = lake.get(f"/api/v1/namespaces/{enc('kafka://broker:9092')}/datasets")
    assert kafka.status == 404 and "no namespace 'kafka://broker:9092'" in kafka.json()["error"]
    # An encoded name whose last part is "versions" is a dataset, not the versions of another one.
    named = lake.get(f"/api/v1/namespaces/file/datasets/{enc('/lake/versions')}")
    assert named.status == 404 and "file:/lake/versions" in named.json()["error"]
    versions = lake.get(f"/api/v1/namespaces/file/datasets/{enc(lake.raw)}/versions/2").json()
    assert versions["id"] == {"namespace": "file", "name": lake.raw, "version": "2"}
    unencoded = lake.get(f"/api/v1/namespaces/file/datasets/{lake.raw}/versions/2").json()
    assert unencoded == versions


def test_the_store_is_refreshed_per_request(server_at: Any, lakebed_home: Path) -> None:
    """A server over this test's own home sees runs that finish while it is up."""
    commit("first", pa.table({"id": [1]}), run=RunContext(job="first_job"))
    server = server_at(lakebed_home, token=TOKEN)
    before = server.request("/api/v1/namespaces/lakebed/jobs").json()["jobs"]
    assert [j["name"] for j in before] == ["first_job"]
    commit("second", pa.table({"id": [1]}), run=RunContext(job="second_job"))
    after = server.request("/api/v1/namespaces/lakebed/jobs").json()["jobs"]
    assert [j["name"] for j in after] == ["first_job", "second_job"]


def test_metrics_count_requests_by_route_template_never_by_path(lake: Lake) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def count(route: str, status: str) -> float:
        text = lake.get("/metrics").body.decode()
        assert TOKEN not in text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "lakebed_http_request_duration_seconds_count"
            and s.labels == {"server": "lineage", "route": route, "method": "GET", "status": status}
        )

    route = "/api/v1/namespaces/{namespace}"
    before = count(route, "200"), count(route, "404")
    assert lake.get("/api/v1/namespaces/file").status == 200
    assert lake.get("/api/v1/namespaces/file").status == 200
    assert lake.get("/api/v1/namespaces/nowhere").status == 404
    assert (count(route, "200") - before[0], count(route, "404") - before[1]) == (2, 1)
    assert lake.get("/ready").json()["ready"] is True
