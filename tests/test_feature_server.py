"""The feature server: a real materialised feature view, ``lakebed serve features`` in its own uvicorn
process, real HTTP. Answers are compared with the in-process ``FeatureStore`` over the same online store,
and every JSON answer is checked against the server's own OpenAPI document."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_process import Reply, ServerProcess, free_port, send

from lakebed.config import reset_config
from lakebed.errors import EntityRowsError, FeatureServerError, OnlineStoreError, UnknownFeatureError
from lakebed.feature_store import FeatureStore
from lakebed.pipelines.delta import commit
from lakebed.pipelines.embeddings.step import embed_documents
from lakebed.pipelines.features.materialize import materialize
from lakebed.pipelines.unstructured import ingest_unstructured
from lakebed.schemas.features import FeatureView
from lakebed.serving.client import FeatureClient
from lakebed.serving.wire import feast_reference, rfc3339

TOKEN = "model-token-8d2b71"
DOCS = {
    "returns.txt": "Customers may return shoes within 30 days of delivery for a full refund.",
    "shipping.txt": "The warehouse ships every order on weekdays before noon.",
    "payments.txt": "We accept credit cards, bank transfers and gift vouchers at checkout.",
    "stores.txt": "Visit our shops in Berlin, Paris and Madrid, open Monday to Saturday.",
}
QUESTION = "can I send my shoes back and get my money back?"
FEATURES = ["orders:v1:n_1d", "orders:v1:spend_1d", "orders:v1:last_channel_1d"]
NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)


class FeatureServer(ServerProcess):
    args = ("serve", "features")
    token_variable = "LAKEBED_FEATURE_SERVER_TOKEN"


@dataclass
class Served:
    server: FeatureServer
    home: Path
    root: Path

    def post(self, body: Any, *, token: str | None = None) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.server.request("/get-online-features", method="POST", body=raw, token=token)

    def store(self) -> FeatureStore:
        with self.home_set():
            from lakebed.config import get_config

            return FeatureStore(get_config())

    @contextlib.contextmanager
    def home_set(self) -> Iterator[None]:
        """This process works in the served home for the duration."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LAKEBED_HOME", str(self.home))
            mp.chdir(self.root)
            reset_config()
            try:
                yield
            finally:
                reset_config()

    def search(self, body: Any) -> Reply:
        return self.server.request("/search", method="POST", body=json.dumps(body).encode())


def _view() -> FeatureView:
    return FeatureView.model_validate(
        {
            "name": "orders",
            "version": 1,
            "entities": ["customer_id"],
            "source": {"table": "orders"},
            "event_time": "ordered_at",
            "hop": "1h",
            "ttl": "3d",
            "aggregations": [
                {"name": "n_1d", "function": "count", "window": "1d"},
                {"name": "spend_1d", "function": "sum", "column": "amount", "window": "1d"},
                {"name": "last_channel_1d", "function": "last", "column": "channel", "window": "1d"},
                {"name": "basket_vector", "function": "last", "column": "basket", "window": "1d"},
            ],
        }
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Customer 7 ordered in the last hours (fresh), 8 ordered 20 days ago (older than the 3d ttl), 9 once
    without a channel; 404 never ordered. 11's order a minute ago closes the windows before it."""
    root = tmp_path_factory.mktemp("feature-server")
    home = root / "home"
    times = [NOW - dt.timedelta(hours=h) for h in (5, 3, 3)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKEBED_HOME", str(home))
        mp.delenv("LAKEBED_CONFIG", raising=False)
        mp.delenv("LAKEBED_PROJECT", raising=False)
        mp.chdir(root)
        reset_config()
        try:
            orders = pa.table(
                {
                    "customer_id": pa.array([7, 7, 9, 8, 11], pa.int64()),
                    "ordered_at": pa.array(
                        [*times, NOW - dt.timedelta(days=20), NOW - dt.timedelta(minutes=1)],
                        pa.timestamp("us", tz="UTC"),
                    ),
                    "amount": [10.5, 4.25, 3.0, 99.0, 1.0],
                    "channel": ["web", "app", None, "web", "web"],
                    "basket": pa.array(
                        [[0.25, -1.5, 3.0], [0.125, 2.0, -0.1], None, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
                        pa.list_(pa.float32()),
                    ),
                }
            )
            commit("orders", orders)
            materialize(_view())
            docs = root / "docs"
            docs.mkdir()
            for name, text in DOCS.items():
                (docs / name).write_text(text)
            ingest_unstructured(docs)
            embed_documents("documents")
        finally:
            reset_config()
    server = FeatureServer(home, root / "server.log", token=TOKEN).start()
    try:
        yield Served(server, home, root)
    finally:
        server.stop()


def test_a_feast_request_gets_a_feast_answer_with_the_stores_values(served: Served) -> None:
    reply = served.post({"features": FEATURES, "entities": {"customer_id": [7, 8, 9, 404, 7]}})
    assert reply.status == 200, reply.body
    answer = reply.json()
    names = answer["metadata"]["feature_names"]
    assert names == ["customer_id", "n_1d", "spend_1d", "last_channel_1d"]
    columns = {name: result for name, result in zip(names, answer["results"], strict=True)}
    assert columns["customer_id"]["values"] == [7, 8, 9, 404, 7]
    assert columns["customer_id"]["statuses"] == ["PRESENT"] * 5

    expected = served.store().get_online_features(FEATURES, {"customer_id": [7, 8, 9, 404, 7]})
    for feature in ("n_1d", "spend_1d", "last_channel_1d"):
        assert columns[feature]["values"] == expected.column(f"orders__{feature}").to_pylist()
    assert columns["n_1d"]["values"][0] == 2 and columns["spend_1d"]["values"][0] == pytest.approx(14.75)
    assert columns["last_channel_1d"]["values"][0] == "app"
    # 8's row is 20 days old (ttl 3d), 9 has no channel, 404 has no row.
    assert [columns["spend_1d"]["statuses"][i] for i in range(5)] == [
        "PRESENT",
        "OUTSIDE_MAX_AGE",
        "PRESENT",
        "NOT_FOUND",
        "PRESENT",
    ]
    assert columns["last_channel_1d"]["statuses"][2] == "NULL_VALUE"
    assert columns["spend_1d"]["values"][1] is None and columns["spend_1d"]["values"][3] is None

    # event_timestamps: the stored rows' feature_ts, as the offline store holds them.
    stamps = columns["n_1d"]["event_timestamps"]
    assert stamps[3] == "1970-01-01T00:00:00Z"
    fresh = dt.datetime.fromisoformat(stamps[0].replace("Z", "+00:00"))
    assert NOW - dt.timedelta(hours=5) < fresh <= NOW + dt.timedelta(days=1)
    assert stamps[0] == stamps[4]


def test_vector_features_are_served_online_like_any_feature(served: Served) -> None:
    """``last`` of an embedding column: the online store keeps the whole vector, and HTTP, the client
    and the in-process store give the same float32 values as the offline table."""
    vector = ["orders:v1:basket_vector"]
    answer = served.post({"features": vector, "entities": {"customer_id": [7, 9, 404]}}).json()
    served_values = answer["results"][1]["values"]
    assert answer["results"][1]["statuses"] == ["PRESENT", "NULL_VALUE", "NOT_FOUND"]
    expected = pa.array([[0.125, 2.0, -0.1]], pa.list_(pa.float32())).to_pylist()[0]
    assert served_values == [expected, None, None]
    store = served.store()
    assert store.get_online_feature_dict(vector, {"customer_id": 7})["orders__basket_vector"] == expected
    table = store.get_online_features(vector, {"customer_id": [7, 9]})
    assert table.column("orders__basket_vector").to_pylist() == [expected, None]
    assert table.schema.field("orders__basket_vector").type.value_type == pa.float32()
    with FeatureClient(served.server.url, token=TOKEN) as client:
        assert client.get_online_feature_dict(vector, {"customer_id": 7})["orders__basket_vector"] == expected
    offline = store.get_historical_features(
        pa.table({"customer_id": [7], "event_timestamp": pa.array([NOW], pa.timestamp("us", tz="UTC"))}),
        vector,
    )
    assert offline.column("orders__basket_vector").to_pylist() == [expected]


def test_vectors_with_null_elements_are_refused_by_the_online_store(tmp_path: Path) -> None:
    from lakebed.pipelines.features.online import SQLiteOnlineStore

    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    rows = pa.table(
        {
            "k": [1],
            "feature_ts": pa.array([NOW], pa.timestamp("us", tz="UTC")),
            "v": pa.array([[1.0, None]], pa.list_(pa.float32())),
        }
    )
    with pytest.raises(OnlineStoreError, match="null elements"):
        store.write("fv_t_v1", rows, ["k"])
    store.close()


def test_full_feature_names_and_feast_versioned_references(served: Served) -> None:
    full = served.post(
        {"features": ["orders@v1:n_1d"], "entities": {"customer_id": [7]}, "full_feature_names": True}
    ).json()
    assert full["metadata"]["feature_names"] == ["customer_id", "orders__n_1d"]
    assert full["results"][1]["values"] == [2]
    assert feast_reference("orders@v12:n_1d") == "orders:v12:n_1d"
    assert feast_reference("orders:v1:n_1d") == "orders:v1:n_1d"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_700_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert rfc3339(1_700_000_000_250_000) == "2023-11-14T22:13:20.250Z"
    assert rfc3339(1_700_000_000_000_007) == "2023-11-14T22:13:20.000007Z"


def test_unknown_features_are_404_naming_them(served: Served) -> None:
    for reference, named in (
        ("orders:v1:nope", "nope"),
        ("orders:v9:n_1d", "v9"),
        ("ghost:v1:n_1d", "ghost"),
    ):
        reply = served.post({"features": [reference], "entities": {"customer_id": [7]}})
        assert reply.status == 404, reply.body
        assert named in reply.json()["error"]


def test_tokens_are_required_and_compared(served: Served) -> None:
    body = json.dumps({"features": FEATURES, "entities": {"customer_id": [7]}}).encode()
    for path, method in (
        ("/get-online-features", "POST"),
        ("/feature-views", "GET"),
        ("/openapi.json", "GET"),
    ):
        missing = send(
            served.server.url + path, token=None, method=method, body=body if method == "POST" else None
        )
        assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = served.server.request(
            path, token=TOKEN + "x", method=method, body=body if method == "POST" else None
        )
        assert wrong.status == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert TOKEN not in served.server.log()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "body"),
        ({"entities": {"customer_id": [7]}}, "features"),
        ({"features": [], "entities": {"customer_id": [7]}}, "features"),
        ({"features": FEATURES, "entities": {"customer_id": 7}}, "entities"),
        ({"features": FEATURES, "entities": {"customer_id": [7], "shop": [1, 2]}}, "lengths"),
        ({"features": FEATURES, "entities": {"shop": [1]}}, "customer_id"),
        (
            {"features": FEATURES, "entities": {"customer_id": [7]}, "feature_service": "svc"},
            "feature services",
        ),
    ],
)
def test_malformed_bodies_are_422_naming_the_problem(served: Served, body: Any, named: str) -> None:
    reply = served.post(body)
    assert reply.status == 422, reply.body
    assert named in reply.json()["error"]


def test_feature_views_health_and_openapi(served: Served) -> None:
    views = served.server.request("/feature-views").json()["feature_views"]
    assert [(v["name"], v["version"]) for v in views] == [("orders", 1)]
    view = views[0]
    assert view["entities"] == ["customer_id"] and view["ttl"] == "3d"
    assert [f["reference"] for f in view["features"]] == [*FEATURES, "orders:v1:basket_vector"]
    assert view["online_rows"] == 3  # customers 7, 8 and 9
    assert dt.datetime.fromisoformat(view["latest_feature_ts"]) > NOW - dt.timedelta(hours=5)
    assert served.server.request("/health").json()["status"] == "ok"
    document = served.server.request("/openapi.json").json()
    assert {"/get-online-features", "/feature-views", "/health"} <= set(document["paths"])
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert served.server.request("/nothing").status == 404


def test_the_client_mirrors_the_feature_store(served: Served) -> None:
    store = served.store()
    with FeatureClient(served.server.url, token=TOKEN) as client:
        for customer in (7, 8, 9, 404):
            assert client.get_online_feature_dict(FEATURES, {"customer_id": customer}) == (
                store.get_online_feature_dict(FEATURES, {"customer_id": customer})
            )
        rows = {"customer_id": [9, 7, 404]}
        assert client.get_online_features(FEATURES, rows).to_pylist() == (
            store.get_online_features(FEATURES, rows).to_pylist()
        )
        assert [v["name"] for v in client.list_feature_views()] == ["orders"]
        with pytest.raises(UnknownFeatureError, match="nope"):
            client.get_online_feature_dict(["orders:v1:nope"], {"customer_id": 7})
        with pytest.raises(EntityRowsError, match="customer_id"):
            client.get_online_feature_dict(FEATURES, {"shop": 7})
        # One connection per thread, kept alive: 16 threads, 400 requests, every answer right.
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(lambda i: client.get_online_feature_dict(FEATURES, {"customer_id": 7}), range(400))
            )
        assert all(a == answers[0] for a in answers) and answers[0]["orders__n_1d"] == 2
    with pytest.raises(FeatureServerError, match="401"):
        FeatureClient(served.server.url, token="wrong").health()
    assert "wrong" not in repr(FeatureClient(served.server.url, token="wrong"))


def samples(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's /metrics: (name, sorted labels) → value."""
    reply = server.request("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.body.decode())
        for s in family.samples
    }


def requests_seen(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], route: str, status: str
) -> float:
    labels = (("method", "POST" if route == "/get-online-features" else "GET"), ("route", route))
    key = (*labels, ("server", "features"), ("status", status))
    return found.get(("lakebed_http_request_duration_seconds_count", key), 0.0)


def test_metrics_show_request_latency_and_ready_checks(served: Served) -> None:
    before = samples(served.server)
    for customer in (7, 8, 404):
        assert served.post({"features": FEATURES, "entities": {"customer_id": [customer]}}).status == 200
    assert served.post({"features": ["orders:v1:nope"], "entities": {"customer_id": [7]}}).status == 404
    assert served.server.request("/feature-views").status == 200
    after = samples(served.server)
    # The fast path and the routed requests alike, by route template and status.
    assert (
        requests_seen(after, "/get-online-features", "200")
        - requests_seen(before, "/get-online-features", "200")
        == 3
    )
    assert (
        requests_seen(after, "/get-online-features", "404")
        - requests_seen(before, "/get-online-features", "404")
        == 1
    )
    assert requests_seen(after, "/feature-views", "200") - requests_seen(before, "/feature-views", "200") == 1
    lookups = ("lakebed_online_lookup_duration_seconds_count", ())
    assert after[lookups] - before.get(lookups, 0.0) == 3
    assert not any(TOKEN in str(labels) for _, labels in after)
    # Freshness, computed at the scrape: now minus the newest feature_ts of the online rows.
    latest = dt.datetime.fromisoformat(
        served.server.request("/feature-views").json()["feature_views"][0]["latest_feature_ts"]
    )
    fresh = samples(served.server)[
        ("lakebed_feature_freshness_seconds", (("version", "1"), ("view", "orders")))
    ]
    assert abs(fresh - (dt.datetime.now(dt.UTC) - latest).total_seconds()) < 1.0
    ready = served.server.request("/ready")
    assert ready.status == 200, ready.body
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {
        "home": True,
        "broker": True,
        "object_store": True,
    }
    assert {"/ready", "/metrics"} <= set(served.server.request("/openapi.json").json()["paths"])


def test_ready_is_503_naming_an_unreachable_broker(served: Served, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    server = FeatureServer(
        served.home, tmp_path / "dead.log", token=TOKEN, environment={"LAKEBED_KAFKA_BOOTSTRAP": dead}
    )
    server.start()
    try:
        reply = server.request("/ready")
        assert reply.status == 503 and reply.json()["failing"] == ["broker"]
        assert dead in next(c["detail"] for c in reply.json()["checks"] if c["name"] == "broker")
    finally:
        server.stop()


def test_several_workers_serve_one_port(served: Served, tmp_path: Path) -> None:
    server = FeatureServer(served.home, tmp_path / "workers.log", token=TOKEN, extra_args=("--workers", "2"))
    server.start()
    try:
        with FeatureClient(server.url, token=TOKEN) as client, ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda i: client.get_online_feature_dict(FEATURES, {"customer_id": 7}), range(200))
            )
        assert {a["orders__n_1d"] for a in answers} == {2}
        # Multiprocess metrics: /metrics (answered by either worker) counts the requests of both, once
        # each worker has folded its buffered observations (every second).
        deadline = time.monotonic() + 5.0
        while (
            requests_seen(samples(server), "/get-online-features", "200") < 200
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert requests_seen(samples(server), "/get-online-features", "200") == 200
        assert (served.home / "metrics").is_dir()
    finally:
        server.stop()


def test_search_over_http_is_the_stores_search_at_a_pinned_version(served: Served) -> None:
    store = served.store()
    expected = store.search("documents", QUESTION, 3, exact=True)
    answer = served.search({"table": "documents", "query": QUESTION, "k": 3, "exact": True})
    assert answer.status == 200, answer.body
    found = answer.json()
    assert found["table"] == "documents__chunks" and found["search"] == "exact"
    assert found["embedder"]["dimension"] == 256
    assert [r["chunk_id"] for r in found["results"]] == expected.column("chunk_id").to_pylist()
    assert found["results"][0]["source_path"].endswith("returns.txt")
    assert [r["score"] for r in found["results"]] == pytest.approx(expected.column("score").to_pylist())
    pinned = found["version"]

    # New documents arrive: the latest version changes, the pinned one answers as before.
    with served.home_set():
        (served.root / "docs" / "refunds.txt").write_text(
            "Refunds for returned shoes reach your card in five days."
        )
        ingest_unstructured(served.root / "docs")
        embed_documents("documents")
    latest = served.search({"table": "documents", "query": QUESTION, "k": 3, "exact": True}).json()
    assert latest["version"] > pinned
    again = served.search(
        {"table": "documents", "query": QUESTION, "k": 3, "exact": True, "version": pinned}
    ).json()
    assert again["results"] == found["results"]
    with FeatureClient(served.server.url, token=TOKEN) as client:
        table = client.search("documents", QUESTION, 3, exact=True, version=pinned)
        assert table.column("chunk_id").to_pylist() == expected.column("chunk_id").to_pylist()
        assert table.schema.metadata[b"lakebed.version"] == str(pinned).encode()
        approximate = client.search("documents", QUESTION, 3)
        assert approximate.schema.metadata[b"lakebed.search"] == b"approximate"


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"table": "documents", "query": [0.1, 0.2], "k": 3}, 400, "256"),
        ({"table": "documents", "query": QUESTION, "k": 0}, 422, "k"),
        ({"table": "documents", "query": QUESTION, "k": 1001}, 422, "k"),
        ({"table": "documents", "query": "   ", "k": 3}, 422, "empty"),
        ({"table": "documents", "query": QUESTION, "filter": {"nope": 1}}, 422, "nope"),
        ({"table": "ghost", "query": QUESTION}, 404, "ghost"),
        ({"table": "orders", "query": QUESTION}, 404, "no embeddings"),
    ],
)
def test_bad_searches_are_refused_naming_the_problem(
    served: Served, body: Any, status: int, named: str
) -> None:
    reply = served.search(body)
    assert reply.status == status, reply.body
    assert named in reply.json()["error"]


def test_the_servers_largest_k_is_the_searchs() -> None:
    from lakebed.pipelines.embeddings.search import MAX_K
    from lakebed.serving.models import MAX_K as SERVED_MAX_K

    assert SERVED_MAX_K == MAX_K


def test_binding_beyond_loopback_needs_a_token(served: Served, tmp_path: Path) -> None:
    server = FeatureServer(served.home, tmp_path / "refused.log", token=None, host="0.0.0.0")
    refused = subprocess.run(
        server.command(free_port()), env=server.environment(), capture_output=True, timeout=120
    )
    assert refused.returncode != 0
    assert b"LAKEBED_FEATURE_SERVER_TOKEN" in refused.stderr + refused.stdout
