"""Roles, tokens and the access log: a real project with an access.yaml, both servers in their own uvicorn
processes, real HTTP. Every role × action on both servers, masked lineage for auditors, the access_log table,
and a scan of everything the servers wrote for the tokens."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from server_process import Reply, ServerProcess, free_port

from lakebed.access import token_digest
from lakebed.config import reset_config
from lakebed.errors import ProjectError
from lakebed.schemas.access import load_access

TOKENS = {"engineer": "eng-token-51c0ffee", "model": "model-token-7ab1e5", "auditor": "audit-token-0d1e9a"}
NAMES = {"engineer": "platform", "model": "churn-model", "auditor": "sox-audit"}
SECRET_COLUMN = "order_margin_secret"  # a column of orders, which auditors may not read
NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)

ACCESS_YAML = f"""
roles:
  auditor:
    description: Reads all lineage; table details only of public tables.
    allow:
      - actions: [read_lineage]
      - actions: [read_table]
        resources: ["tag:public"]
  model:
    allow:
      - actions: [read_features_online]
        resources: ["orders_fv"]
      - actions: [search]
        resources: ["tag:docs"]
tokens:
{chr(10).join(f"  - {{name: {NAMES[r]}, role: {r}, sha256: {token_digest(t)}}}" for r, t in TOKENS.items())}
"""


class FeatureServer(ServerProcess):
    args = ("serve", "features")
    token_variable = "LAKEBED_FEATURE_SERVER_TOKEN"


class LineageServer(ServerProcess):
    args = ("lineage", "serve")
    token_variable = "LAKEBED_LINEAGE_API_TOKEN"
    lenient = ("dataset", "job")


@dataclass
class Lake:
    project: Path
    features: FeatureServer
    lineage: LineageServer
    sent: Counter[tuple[str, str | None, int]]  # (server realm, principal, status) of every request sent

    def request(
        self, server: ServerProcess, path: str, *, role: str | None, method: str = "GET", body: Any = None
    ) -> Reply:
        token = TOKENS.get(role or "", role)  # a role's token, or a literal (unknown) token
        data = None if body is None else json.dumps(body).encode()
        if token is None:
            from server_process import send

            reply = send(server.url + path, token=None, method=method, body=data)
        else:
            reply = server.request(path, token=token, method=method, body=data)
        realm = "lakebed-features" if server is self.features else "lakebed-lineage"
        self.sent[(realm, NAMES.get(role or "") if role in TOKENS else None, reply.status)] += 1
        return reply


def _project(root: Path) -> Path:
    project = root / "shop"
    (project / "data" / "docs").mkdir(parents=True)
    (project / "sources").mkdir()
    (project / "feature_views").mkdir()
    (project / "lakebed.toml").write_text('[project]\nname = "shop"\n')
    (project / "data" / "products.csv").write_text("product_id,title\n1,grinder\n2,kettle\n")
    (project / "data" / "orders.csv").write_text(
        f"customer_id,ordered_at,amount,{SECRET_COLUMN}\n"
        + "".join(
            f"{c},{(NOW - dt.timedelta(hours=h)).isoformat()},{10 + h},0.{h}\n"
            for c, h in ((7, 3), (8, 2), (9, 1))
        )
    )
    (project / "data" / "docs" / "returns.txt").write_text(
        "Shoes may be returned within 30 days for a refund."
    )
    (project / "data" / "docs" / "shipping.txt").write_text("Orders ship on weekdays before noon.")
    (project / "sources" / "shop.yaml").write_text(
        "sources:\n"
        "  - {table: products, kind: files, path: data/products.csv, tags: [public]}\n"
        "  - {table: orders, kind: files, path: data/orders.csv}\n"
        "  - {table: documents, kind: unstructured, paths: [data/docs], tags: [docs]}\n"
    )
    (project / "feature_views" / "orders_fv.yaml").write_text(
        "name: orders_fv\nversion: 1\nentities: [customer_id]\nsource: {table: orders}\nevent_time: ordered_at\n"
        "hop: 1h\nttl: 3d\naggregations:\n  - {name: spend_1d, function: sum, column: amount, window: 1d}\n"
    )
    (project / "access.yaml").write_text(ACCESS_YAML)
    return project


def _fill(project: Path) -> None:
    import lakebed
    from lakebed.lineage.runs import lineage_run
    from lakebed.pipelines.delta import RunContext, commit
    from lakebed.pipelines.embeddings.step import embed_documents
    from lakebed.pipelines.features.materialize import materialize
    from lakebed.schemas.project import load_project

    lakebed.ingest_files(str(project / "data" / "products.csv"), table="products")
    lakebed.ingest_files(str(project / "data" / "orders.csv"), table="orders")
    lakebed.ingest_unstructured(str(project / "data" / "docs"), table="documents")
    embed_documents("documents")
    run = RunContext(job="margins")
    with lineage_run(run):
        orders = lakebed.read_table("orders")
        commit("order_margins", orders.select(["customer_id", SECRET_COLUMN]), run=run)
    materialize(load_project(project).feature_views["orders_fv:v1"])
    from lakebed.lineage.store import LineageStore

    LineageStore().sync()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    root = tmp_path_factory.mktemp("access")
    project = _project(root)
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "LAKEBED_HOME",
            "LAKEBED_CONFIG",
            "LAKEBED_FEATURE_SERVER_TOKEN",
            "LAKEBED_LINEAGE_API_TOKEN",
        ):
            mp.delenv(name, raising=False)
        mp.setenv("LAKEBED_PROJECT", str(project))
        mp.chdir(project)
        reset_config()
        try:
            _fill(project)
        finally:
            reset_config()
    home = project / ".lakebed"
    env = {"LAKEBED_PROJECT": str(project)}
    engineer = TOKENS["engineer"]
    features = FeatureServer(
        home, root / "features.log", token=None, environment=env, request_token=engineer
    ).start()
    lineage = LineageServer(
        home, root / "lineage.log", token=None, environment=env, request_token=engineer
    ).start()
    try:
        yield Lake(project, features, lineage, Counter())
    finally:
        features.stop()
        lineage.stop()


ONLINE = {"features": ["orders_fv:v1:spend_1d"], "entities": {"customer_id": [7]}}
SEARCH = {"table": "documents", "query": "can I return my shoes?", "k": 1}


def _calls(lake: Lake) -> dict[str, tuple[ServerProcess, str, str, Any]]:
    return {
        "read_features_online": (lake.features, "/get-online-features", "POST", ONLINE),
        "search": (lake.features, "/search", "POST", SEARCH),
        "read_lineage": (lake.lineage, "/api/v1/namespaces", "GET", None),
    }


ALLOWED = {
    "engineer": {"read_features_online", "search", "read_lineage"},
    "model": {"read_features_online", "search"},
    "auditor": {"read_lineage"},
}


@pytest.mark.parametrize("role", ["engineer", "model", "auditor", None, "not-a-known-token"])
@pytest.mark.parametrize("action", ["read_features_online", "search", "read_lineage"])
def test_every_role_and_action_on_both_servers(lake: Lake, role: str | None, action: str) -> None:
    server, path, method, body = _calls(lake)[action]
    reply = lake.request(server, path, role=role, method=method, body=body)
    if role not in TOKENS:
        assert reply.status == 401, reply.body
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    elif action in ALLOWED[role]:
        assert reply.status == 200, reply.body
    else:
        assert reply.status == 403, reply.body
        message = reply.json()["error"]
        assert action in message and NAMES[role] in message


def test_auditors_see_the_graph_but_not_restricted_schemas(lake: Lake) -> None:
    paths = [
        "/api/v1/namespaces/file/datasets?limit=100",
        "/api/v1/lakebed/graph",
        "/api/v1/lakebed/graph?format=svg",
        "/api/v1/lakebed/upstream?table=order_margins",
    ]
    runs = lake.request(lake.lineage, "/api/v1/lakebed/runs?job=margins", role="engineer").json()["runs"]
    paths.append(f"/api/v1/lakebed/events?runId={runs[0]['run_id']}")
    detailed = set()
    for path in paths:
        engineer = lake.request(lake.lineage, path, role="engineer")
        auditor = lake.request(lake.lineage, path, role="auditor")
        assert engineer.status == auditor.status == 200, (path, auditor.body[:300])
        if SECRET_COLUMN in engineer.body.decode():
            detailed.add(path)  # the detail is there for engineers ...
        assert SECRET_COLUMN not in auditor.body.decode(), path  # ... and auditors never see it
        assert "order_margins" in auditor.body.decode(), path  # the graph itself is whole
    assert {paths[0], paths[-1]} <= detailed, detailed
    # A public table's schema stays visible to auditors.
    datasets = lake.request(lake.lineage, "/api/v1/namespaces/file/datasets?limit=100", role="auditor").json()
    products = next(d for d in datasets["datasets"] if d["table"] == "products")
    assert {f["name"] for f in products["fields"]} >= {"product_id", "title"}
    orders = next(d for d in datasets["datasets"] if d["table"] == "orders")
    assert orders["fields"] == [] and "schema" not in orders["facets"]


def test_feature_views_list_only_what_the_role_may_read(lake: Lake) -> None:
    model = lake.request(lake.features, "/feature-views", role="model").json()["feature_views"]
    assert [v["name"] for v in model] == ["orders_fv"]
    auditor = lake.request(lake.features, "/feature-views", role="auditor").json()["feature_views"]
    assert auditor == []


def test_every_request_is_in_the_access_log_and_no_token_is_anywhere(lake: Lake) -> None:
    from lakebed.pipelines.read import read_table

    for role in ("engineer", "model", "auditor", None):  # at least one request of each kind
        for action in ("read_features_online", "read_lineage"):
            server, path, method, body = _calls(lake)[action]
            lake.request(server, path, role=role, method=method, body=body)
    lake.features.stop()  # shutting down appends what is left
    lake.lineage.stop()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKEBED_PROJECT", str(lake.project))
        mp.delenv("LAKEBED_HOME", raising=False)
        mp.chdir(lake.project)
        reset_config()
        try:
            log = read_table("access_log")
        finally:
            reset_config()
    rows = log.to_pylist()
    logged = Counter((r["server"], r["principal"], r["status"]) for r in rows)
    for key, count in lake.sent.items():
        assert logged[key] >= count, (key, count, logged[key])
    denied = [r for r in rows if r["status"] == 403]
    assert denied and all(not r["allowed"] and r["action"] and r["role"] for r in denied)
    assert {r["role"] for r in rows if r["principal"] == "sox-audit"} == {"auditor"}

    # Tokens appear nowhere: server logs, the lake home (tables, lineage events, metadata), the project.
    files = [lake.features.log_path, lake.lineage.log_path, *lake.project.rglob("*")]
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            for value in TOKENS.values():
                assert value.encode() not in data, path


def test_access_yaml_problems_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "access.yaml"
    bad.write_text("tokens:\n  - {name: x, role: ghost, sha256: " + "a" * 64 + "}\n")
    with pytest.raises(ProjectError, match=r"access.yaml.*tokens.0 \(x\): unknown role 'ghost'"):
        load_access(bad)
    bad.write_text("tokens:\n  - {name: x, role: model, sha256: my-token-in-clear}\n")
    with pytest.raises(ProjectError, match=r"access.yaml: tokens.0.sha256: .*SHA-256"):
        load_access(bad)
    bad.write_text("roles:\n  model:\n    allow:\n      - actions: [fly]\n")
    with pytest.raises(ProjectError, match=r"access.yaml: roles.model.allow.0.actions.0"):
        load_access(bad)


def test_a_server_with_a_broken_policy_refuses_to_start(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "lakebed.toml").write_text('[project]\nname = "p"\n')
    (project / "access.yaml").write_text("tokens:\n  - {name: x, role: ghost, sha256: " + "b" * 64 + "}\n")
    server = FeatureServer(
        project / ".lakebed", tmp_path / "s.log", token=None, environment={"LAKEBED_PROJECT": str(project)}
    )
    done = subprocess.run(
        server.command(free_port()), env=server.environment(), capture_output=True, timeout=120
    )
    assert done.returncode != 0
    assert b"access.yaml" in done.stderr and b"ghost" in done.stderr


def test_token_create_prints_the_token_once_and_only_its_hash_for_the_policy(lake: Lake) -> None:
    from lakebed.cli import main

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKEBED_PROJECT", str(lake.project))
        mp.delenv("LAKEBED_HOME", raising=False)
        reset_config()
        try:
            made = runner.invoke(main, ["access", "token", "create", "ranker", "--role", "model"])
            assert made.exit_code == 0, made.output
            token = made.stdout.strip()
            assert len(token) >= 40
            assert f"sha256: {token_digest(token)}" in made.stderr and token not in made.stderr
            refused = runner.invoke(main, ["access", "token", "create", "x", "--role", "ghost"])
            assert refused.exit_code == 2 and "unknown role 'ghost'" in refused.output
            roles = runner.invoke(main, ["access", "roles", "--format", "json"])
            listed = json.loads(roles.stdout)
            assert {r["role"] for r in listed} >= {"engineer", "model", "auditor"}
            assert any(r["role"] == "model" and r["tokens"] == "churn-model" for r in listed)
            assert token_digest(TOKENS["model"]) not in roles.stdout
        finally:
            reset_config()
