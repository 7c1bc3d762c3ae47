"""OpenLineage end to end, with real components only: real Delta tables, a real Kafka broker (Tansu, via
``streaming_fixtures``), real HTTP servers on local sockets and the real lineage store.

* A realistic mix of runs (batch ingest of CSV and JSON with a contract and quarantined rows, a Kafka stream
  ingest with bad records, a feature view materialisation, a quality check, a write blocked by a quality
  rule, a derived table, a Dagster-tagged run) emits only spec-valid events (``openlineage_spec``), in order.
* Every Delta version of every catalog table resolves to its run in the lineage store, and back.
* The auditor's questions (producer, upstream incl. column level, downstream, history, graph as of a time,
  failed runs) answer from the store.
* A lineage backend that is down, flaky or slow never fails or stalls a job; kept events are re-sent in order.
* Malformed lines in the event file are skipped; unknown names raise ``LineageNotFoundError``; no secret
  ever reaches an event.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from openlineage_spec import validate_event

import lakebed
from lakebed.broker import EmbeddedBroker
from lakebed.config import get_config, reset_config
from lakebed.errors import LineageNotFoundError, QualityError
from lakebed.examples import SHOP
from lakebed.lineage import emit
from lakebed.lineage.emit import get_emitter, pending
from lakebed.lineage.graph import dataset_id, job_id
from lakebed.lineage.runs import lineage_run
from lakebed.lineage.store import LineageStore
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, commit
from lakebed.pipelines.features.materialize import MaterializeResult, materialize
from lakebed.pipelines.ingest import IngestResult, ingest_files
from lakebed.pipelines.quality import check_table
from lakebed.pipelines.stream.ingest import StreamResult, ingest_stream
from lakebed.pipelines.stream.kafka import create_topic, produce_records
from lakebed.samples import STREAM, STRUCTURED
from lakebed.schemas.contract import TableContract
from lakebed.schemas.features import FeatureView

pytest_plugins = ["streaming_fixtures"]

ORDERS_CSV = STRUCTURED / "orders" / "orders-2025-01.csv"
PRODUCTS_JSON = STRUCTURED / "products.jsonl"
SHOP_EVENTS = STREAM / "shop_events.jsonl"
ORDERS_HEADER = '"order_id","customer_id","sku","quantity","unit_price","currency","status","ordered_at"'
# dataSource.uri of local (namespace "file") datasets is "file", not a URI: see test_datasource_uri_is_a_uri.


# --- helpers --------------------------------------------------------------------------------------


def read_events(home: Path, name: str = "events.jsonl") -> list[dict[str, Any]]:
    path = home / "lineage" / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def read_events_of(action: Callable[[], Any]) -> list[dict[str, Any]]:
    """The events ``action`` appended to the event file."""
    home = get_config().home
    before = len(read_events(home))
    action()
    return read_events(home)[before:]


def small_table(n: int = 3, offset: int = 0) -> pa.Table:
    return pa.table(
        {"id": list(range(offset, offset + n)), "value": [f"v{i}" for i in range(offset, offset + n)]}
    )


def delta_history(uri: str) -> dict[int, dict[str, Any]]:
    return {int(e["version"]): e for e in DeltaTable(uri).history()}


def output_refs(event: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    """(namespace, name, version, lakebed table) of every output of an event."""
    refs = []
    for out in event.get("outputs") or []:
        facets = out.get("facets") or {}
        refs.append(
            (
                out["namespace"],
                out["name"],
                (facets.get("version") or {}).get("datasetVersion"),
                (facets.get("lakebed") or {}).get("table"),
            )
        )
    return refs


def free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LineageBackend:
    """A real HTTP server on 127.0.0.1 that takes OpenLineage events POSTed to ``/api/v1/lineage``.

    ``status`` is what it answers (201 = accepted, the event is collected); ``stall`` makes every request
    wait that long (or until :meth:`close`) before answering."""

    def __init__(self, *, status: int = 201, stall: float = 0.0) -> None:
        self.status = status
        self.stall = stall
        self.events: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.attempts = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with backend.lock:
                    backend.attempts += 1
                if backend.stall:
                    backend.release.wait(backend.stall)
                status = backend.status
                if status < 300:
                    with backend.lock:
                        backend.paths.append(self.path)
                        backend.events.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend() -> Iterator[Callable[..., LineageBackend]]:
    started: list[LineageBackend] = []

    def start(**options: Any) -> LineageBackend:
        server = LineageBackend(**options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``remote(url)`` points lineage at an OpenLineage HTTP backend (fresh config and emitters)."""
    monkeypatch.setattr(emit, "_EMITTERS", {})
    before = {k for k in os.environ if k.startswith("OPENLINEAGE")}

    def point(url: str) -> None:
        monkeypatch.setenv("OPENLINEAGE_URL", url)
        reset_config()
        emit._EMITTERS.clear()

    yield point
    # openlineage-python aliases OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__... variables: drop them.
    for key in [k for k in os.environ if k.startswith("OPENLINEAGE") and k not in before]:
        del os.environ[key]


# --- the run mix (built once, in its own lakebed home) --------------------------------------------


@dataclass
class Mix:
    home: Path
    bootstrap: str
    topic: str
    orders: IngestResult
    products: IngestResult
    stream: StreamResult
    features: MaterializeResult
    view: FeatureView
    failed_run: RunContext
    failed_error: str
    derive_run: RunContext
    raw_versions: tuple[int, int]
    dagster_run: RunContext
    before_derive: dt.datetime
    check_run_id: str


def _bad_orders(folder: Path) -> Path:
    """Orders in the sample's CSV layout: two break an ``error`` rule (quarantined), two are fine."""
    path = folder / "orders-bad.csv"
    rows = [
        '900001,5,"SKU-00197",0,12.95,"EUR","paid",2025-02-01 10:00:00.000000Z',  # quantity < 1
        '900002,8,"BAD-SKU",1,4.17,"EUR","paid",2025-02-01 10:05:00.000000Z',  # sku regex
        '900003,9,"SKU-00001",2,451.35,"EUR","placed",2025-02-01 10:10:00.000000Z',
        '900004,9,"SKU-00002",1,835.68,"EUR","shipped",2025-02-01 10:15:00.000000Z',
    ]
    path.write_text("\n".join([ORDERS_HEADER, *rows]) + "\n")
    return path


def _duplicate_order(contract: TableContract) -> pa.Table:
    """One order whose id (1) is already in the table: the ``unique_keys`` table rule blocks the write."""
    row = {
        "order_id": 1,
        "customer_id": 5,
        "sku": "SKU-00197",
        "quantity": 1,
        "unit_price": decimal.Decimal("12.95"),
        "currency": "EUR",
        "status": "paid",
        "ordered_at": dt.datetime(2025, 1, 1, 0, 16, 56, tzinfo=dt.UTC),
        "_source_file": None,
        "_source_line": None,
    }
    return pa.Table.from_pylist([row], schema=contract.arrow_schema())


def _build_mix(home: Path, inputs: Path, bootstrap: str) -> Mix:
    orders_contract = TableContract.from_yaml(SHOP / "contracts" / "orders.yaml")
    events_contract = TableContract.from_yaml(SHOP / "contracts" / "shop_events.yaml")
    view = FeatureView.from_yaml(SHOP / "feature_views" / "customer_spend_fast.yaml")

    # Batch ingest: a sample CSV plus one with bad rows (quarantined), and the JSON-lines sample.
    orders = ingest_files([ORDERS_CSV, _bad_orders(inputs)], table="orders", contract=orders_contract)
    assert orders.files[-1].quarantined == 2 and orders.rows + orders.quarantined == 2088 + 4
    products = ingest_files(PRODUCTS_JSON, table="products")

    # A write blocked by a quality rule (duplicate key): FAIL with the error.
    failed_run = RunContext(job="orders_correction")
    with pytest.raises(QualityError) as blocked:
        commit("orders", _duplicate_order(orders_contract), run=failed_run)

    # Kafka → Delta with a few bad records, in several micro-batches.
    topic = f"shop-events-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1, exist_ok=False)
    records: list[str | None] = SHOP_EVENTS.read_text().splitlines()[:240]
    records[30:30] = ["{not json"]
    records[120:120] = [None]  # a tombstone
    records[200:200] = ['{"event_id": "se-bad", "customer_id": "not a number", "event_type": "purchase"}']
    produce_records(bootstrap, topic, records, key=lambda record: "k")  # a tombstone needs a key
    stream = ingest_stream(
        topic,
        "shop_events",
        bootstrap=bootstrap,
        contract=events_contract,
        until_caught_up=True,
        max_records=100,
    )
    assert stream.dead_letters == 3 and stream.records + stream.quarantined == 240 and stream.rounds >= 3

    # A feature view over the stream's table, and a quality check of the orders.
    features = materialize(view)
    checked = check_table("orders")

    # A derived table (read raw, write derived in one run) and a run belonging to a Dagster run.
    raw0 = commit("raw", small_table(3)).version
    raw1 = commit("raw", small_table(2, offset=3)).version
    assert (raw0, raw1) == (0, 1)
    time.sleep(0.05)
    before_derive = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    derive_run = RunContext(job="derive")
    with lineage_run(derive_run):
        raw = lakebed.read_table("raw")
        commit("derived", raw.append_column("double", pc.multiply(raw.column("id"), 2)), run=derive_run)
    dagster_run = RunContext(
        job="dagster_step", tags={"dagster.run_id": str(uuid.uuid4()), "dagster.job": "x"}
    )
    commit("dagster_out", small_table(1), run=dagster_run)
    return Mix(
        home=home,
        bootstrap=bootstrap,
        topic=topic,
        orders=orders,
        products=products,
        stream=stream,
        features=features,
        view=view,
        failed_run=failed_run,
        failed_error=str(blocked.value),
        derive_run=derive_run,
        raw_versions=(raw0, raw1),
        dagster_run=dagster_run,
        before_derive=before_derive,
        check_run_id=checked.run_id,
    )


@pytest.fixture(scope="module")
def mix(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mix]:
    """The run mix, once per module (``bootstrap``/``new_topic`` are per test, so this uses the session's
    broker as ``bootstrap`` does)."""
    if not broker.running:
        broker.start()
    root = tmp_path_factory.mktemp("lineage-mix")
    home = root / "lakebed-home"
    (root / "inputs").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEBED_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(home / "dagster"))
        patch.delenv("LAKEBED_CONFIG", raising=False)
        patch.delenv("OPENLINEAGE_URL", raising=False)
        patch.delenv("OPENLINEAGE_CONFIG", raising=False)
        patch.chdir(root)
        reset_config()
        try:
            yield _build_mix(home, root / "inputs", broker.bootstrap)
        finally:
            reset_config()


@pytest.fixture
def in_mix(mix: Mix, monkeypatch: pytest.MonkeyPatch) -> Mix:
    """Run the test against the mix's lakebed home."""
    monkeypatch.setenv("LAKEBED_HOME", str(mix.home))
    reset_config()
    return mix


# --- the spec -------------------------------------------------------------------------------------


def test_validator_rejects_what_the_spec_forbids() -> None:
    good = read_events_of(lambda: commit("t", small_table()))[-1]
    assert validate_event(good) == []

    broken = json.loads(json.dumps(good))
    del broken["schemaURL"]
    broken["eventTime"] = "yesterday"
    broken["eventType"] = "DONE"
    broken["run"]["runId"] = "run-1"
    del broken["run"]["facets"]["processing_engine"]["_producer"]
    del broken["job"]["facets"]["jobType"]["integration"]
    broken["outputs"][0]["facets"]["version"]["datasetVersion"] = 3
    broken["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] = "3"
    broken["outputs"][0]["facets"]["lakebed"].pop("_schemaURL")
    del broken["outputs"][0]["name"]
    problems = "\n".join(validate_event(broken))
    for expected in (
        "<event>: 'schemaURL' is a required property",
        "eventTime: 'yesterday' is not a 'date-time'",
        "eventType: 'DONE' is not one of",
        "run/runId: 'run-1' is not a 'uuid'",
        "run/facets/processing_engine: '_producer' is a required property",
        "job/facets/jobType: 'integration' is a required property",
        "outputs/0/facets/version/datasetVersion: 3 is not of type 'string'",
        "outputs/0/outputFacets/outputStatistics/rowCount: '3' is not of type 'integer'",
        "outputs/0/facets/lakebed: '_schemaURL' is a required property",
        "outputs/0: 'name' is a required property",
    ):
        assert expected in problems, problems


def test_datasource_uri_is_a_uri() -> None:
    events = read_events_of(lambda: commit("t", small_table()))
    assert [validate_event(e) for e in events] == [[], []]


def test_run_mix_emits_spec_valid_events_in_order(in_mix: Mix) -> None:
    mix = in_mix
    events = read_events(mix.home)
    assert len(events) >= 20

    # Every event is a valid OpenLineage RunEvent.
    problems = {i: validate_event(e) for i, e in enumerate(events)}
    assert {i: p for i, p in problems.items() if p} == {}

    # One START, then exactly one of COMPLETE / FAIL, per run id, in file order and time order.
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_run.setdefault(event["run"]["runId"], []).append(event)
    for run_id, run_events in by_run.items():
        types = [e["eventType"] for e in run_events]
        assert types[0] == "START" and types.count("START") == 1, (run_id, types)
        assert len(types) == 2 and types[1] in ("COMPLETE", "FAIL"), (run_id, types)
        assert run_events[0]["eventTime"] <= run_events[1]["eventTime"]
        assert run_events[0]["job"] == run_events[1]["job"]

    # The blocked write failed with its error message.
    failed = by_run[mix.failed_run.run_id]
    assert failed[1]["eventType"] == "FAIL"
    message = failed[1]["run"]["facets"]["errorMessage"]["message"]
    assert message.startswith("QualityError: ") and "unique" in message and "'orders'" in message
    assert failed[1]["run"]["facets"]["errorMessage"]["programmingLanguage"] == "python"
    assert not any(ref[3] == "orders" for ref in output_refs(failed[1]))  # nothing written to orders
    assert [e["eventType"] for e in by_run[mix.orders.run_id]] == ["START", "COMPLETE"]

    # The stream worker is a STREAMING job; each micro-batch is its child, reading the topic's offsets.
    worker = by_run[mix.stream.run_id]
    assert worker[1]["eventType"] == "COMPLETE"
    assert worker[0]["job"]["facets"]["jobType"]["processingType"] == "STREAMING"
    children = [
        evs
        for evs in by_run.values()
        if (evs[0]["run"]["facets"].get("parent") or {}).get("run", {}).get("runId") == mix.stream.run_id
    ]
    assert len(children) == mix.stream.rounds
    ranges = []
    catalog = Catalog()
    table_uri = catalog.get("shop_events").uri
    history = delta_history(table_uri)
    for start, end in children:
        parent = start["run"]["facets"]["parent"]
        assert (parent["job"]["namespace"], parent["job"]["name"]) == (
            worker[0]["job"]["namespace"],
            worker[0]["job"]["name"],
        )
        assert (
            end["eventType"] == "COMPLETE" and end["job"]["name"] == f"{worker[0]['job']['name']}.micro_batch"
        )
        (source,) = end["inputs"]
        assert (source["namespace"], source["name"]) == (f"kafka://{mix.bootstrap}", mix.topic)
        version = source["facets"]["version"]["datasetVersion"]
        match = re.fullmatch(r"0:(\d+)-(\d+)", version)
        assert match, version
        first, last = int(match[1]), int(match[2])
        ranges.append((first, last))
        assert source["facets"]["lakebed"]["offsets"] == {"0": [first, last]}
        (data_version,) = [v for _, _, v, table in output_refs(end) if table == "shop_events"]
        commit_info = history[int(data_version)]  # the batch's data commit carries the same offsets
        assert json.loads(commit_info["lakebed.kafka.offsets"]) == {"0": [first, last]}
        assert commit_info["lakebed.run_id"] == mix.stream.run_id
    ranges.sort()
    assert ranges[0][0] == 0 and ranges[-1][1] == 240 + 3 - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False)), ranges

    # Outputs are Delta tables: namespace file, the table's absolute path, the Delta version written.
    uris = {entry.name: entry.uri for entry in catalog.list()}
    outputs = [
        ref for evs in by_run.values() if evs[1]["eventType"] == "COMPLETE" for ref in output_refs(evs[1])
    ]
    assert {ref[3] for ref in outputs} >= {
        "orders",
        "orders__quarantine",
        "quality_results",
        "ingested_files",
        "products",
        "shop_events",
        "shop_events__dead_letter",
        mix.view.offline_table,
        "raw",
        "derived",
        "dagster_out",
    }
    for namespace, name, version, table in outputs:
        assert table is not None and namespace == "file", (namespace, name)
        assert os.path.isabs(name) and name == str(Path(uris[table]).resolve())
        assert version is not None and version.isdigit(), (table, version)
        assert int(version) in delta_history(uris[table])

    # Inputs name their versions too: a table at its Delta version, a file at its sha256.
    inputs = [i for evs in by_run.values() for i in evs[1]["inputs"]]
    for source in inputs:
        version = ((source.get("facets") or {}).get("version") or {}).get("datasetVersion")
        table = ((source.get("facets") or {}).get("lakebed") or {}).get("table")
        if source["namespace"] == "file":
            assert os.path.isabs(source["name"]) and version is not None, source["name"]
            if table is not None:
                assert source["name"] == str(Path(uris[table]).resolve()) and version.isdigit()
            else:
                assert re.fullmatch(r"[0-9a-f]{64}", version) and Path(source["name"]).is_file()
        else:
            assert source["namespace"] == f"kafka://{mix.bootstrap}", source
    assert {str(ORDERS_CSV.resolve()), str(PRODUCTS_JSON.resolve())} <= {i["name"] for i in inputs}

    # Column lineage: each feature derives from its source column of shop_events.
    (materialized,) = [
        evs[1]
        for evs in by_run.values()
        if evs[0]["job"]["name"] == f"features.materialize.{mix.view.name}.v1"
    ]
    offline = [
        o for o in materialized["outputs"] if o["facets"]["lakebed"]["table"] == mix.view.offline_table
    ]
    assert offline
    lineage = offline[0]["facets"]["columnLineage"]["fields"]
    (spend,) = lineage["spend_5m"]["inputFields"]
    assert (spend["name"], spend["field"]) == (str(Path(uris["shop_events"]).resolve()), "amount")
    assert spend["transformations"][0]["type"] == "DIRECT"
    assert spend["transformations"][0]["subtype"] == "AGGREGATION"

    # The quality check reports the checked version's assertions; the ingest's writes carry theirs.
    (check,) = [evs[1] for evs in by_run.values() if evs[0]["run"]["runId"] == mix.check_run_id]
    # (dataQualityAssertions is an input facet in the spec.)
    checked = [i for i in check["inputs"] if "dataQualityAssertions" in i.get("inputFacets", {})]
    assert len(checked) == 1 and checked[0]["facets"]["lakebed"]["table"] == "orders"
    assertions = checked[0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert {a["assertion"] for a in assertions} >= {"row_count", "unique_keys"}
    assert all(isinstance(a["success"], bool) for a in assertions)


def test_every_delta_version_resolves_to_its_run_and_back(in_mix: Mix) -> None:
    store = LineageStore()
    runs = {r["run_id"]: r for r in store.runs(limit=100_000)}
    children: dict[str, list[str]] = {}
    for run in runs.values():
        if run["parent_run_id"]:
            children.setdefault(run["parent_run_id"], []).append(run["run_id"])
    tables = Catalog().list()
    assert len(tables) >= 10
    versions = 0
    for entry in tables:
        history = delta_history(entry.uri)
        assert history, entry.name
        for version, info in history.items():
            run_id = info.get("lakebed.run_id")
            assert run_id, f"{entry.name}@{version} has no lakebed.run_id"
            run = store.run(run_id)  # the version's run is in the store ...
            # ... and it (or one of its micro-batches) names this very version as an output.
            written = {
                (o.table, o.version)
                for rid in [run_id, *children.get(run_id, [])]
                for o in store.run(rid).outputs
            }
            assert (entry.name, str(version)) in written, (entry.name, version, run.job_name)
            versions += 1
        # Back: every version the store says a run completed was committed by that run (or its parent).
        for row in store.history(entry.name):
            commit_run = history[int(row["version"])]["lakebed.run_id"]
            assert commit_run in (row["run_id"], row["parent_run_id"]), (entry.name, row)
    assert versions >= 20


def test_producer_answers_for_every_delta_version(in_mix: Mix) -> None:
    store = LineageStore()
    unanswered = []
    for entry in Catalog().list():
        for version, info in delta_history(entry.uri).items():
            try:
                run = store.producer(entry.name, version)
            except LineageNotFoundError as exc:
                unanswered.append((entry.name, version, info.get("lakebed.job"), str(exc)))
                continue
            assert info["lakebed.run_id"] in (run.run_id, run.parent_run_id), (entry.name, version)
    assert unanswered == []


# --- the auditor's questions ----------------------------------------------------------------------


def test_auditor_questions(in_mix: Mix) -> None:
    mix = in_mix
    store = LineageStore()
    uris = {e.name: str(Path(e.uri).resolve()) for e in Catalog().list()}

    # Who made derived@0: the derive job, its code version, raw at the version it read.
    derived = store.producer("derived", 0)
    assert (derived.run_id, derived.job_name, derived.state) == (mix.derive_run.run_id, "derive", "COMPLETE")
    assert derived.code_version == mix.derive_run.code_version
    assert [(i.table, i.version, i.namespace, i.name) for i in derived.inputs] == [
        ("raw", str(mix.raw_versions[1]), "file", uris["raw"])
    ]
    assert [(o.table, o.version) for o in derived.outputs] == [("derived", "0")]
    assert store.producer("raw", 0).run_id != store.producer("raw", 1).run_id

    # orders: the ingest run, the sample files at their hashes, and the write's quality results.
    orders = store.producer("orders")
    assert orders.run_id == mix.orders.run_id and orders.job_name == "ingest:orders"
    files = {i.name: i.version for i in orders.inputs if i.namespace == "file" and i.table is None}
    assert str(ORDERS_CSV.resolve()) in files and len(files[str(ORDERS_CSV.resolve())]) == 64  # sha256
    rules = {a["assertion"]: a["success"] for a in orders.quality["orders"]}
    assert rules["unique_keys"] is True and rules["row_count"] is True
    assert any(not ok for ok in rules.values())  # the quarantined rows broke row rules

    # A run made for a Dagster run names it.
    dagster = store.producer("dagster_out")
    assert dagster.dagster_run_id == mix.dagster_run.tags["dagster.run_id"]
    assert dagster.parent_job == "dagster:x"

    # Upstream, column level: a feature column comes from its source column, at the versions read.
    feature_table = mix.view.offline_table
    up = store.upstream(feature_table, column="spend_5m", depth=3)
    source = up.node(dataset_id("file", uris["shop_events"]))
    assert source.details["columns"] == ["amount"]
    assert sorted(source.details["versions"], key=int) == [str(v) for v in mix.features.raw_versions]
    assert job_id("lakebed", f"features.materialize.{mix.view.name}.v1") in up.ids("job")
    # Without a column, depth decides how far back: the topic is two runs back.
    kafka = dataset_id(f"kafka://{mix.bootstrap}", mix.topic)
    assert kafka not in store.upstream(feature_table, depth=1).ids()
    deep = store.upstream(feature_table, depth=2)
    assert kafka in deep.ids()
    assert job_id("lakebed", f"stream_ingest:{mix.topic}.micro_batch") in deep.ids("job")

    # Downstream of the stream's table: the feature view.
    down = store.downstream("shop_events")
    assert dataset_id("file", uris[feature_table]) in down.ids("dataset")

    # History: every version of raw with its run.
    history = store.history("raw")
    assert [h["version"] for h in history] == [1, 0]
    assert all(h["job"] == "lakebed" for h in history)

    # The graph as of a time before the derive run has neither that job nor its table; now it has both.
    derived_node = dataset_id("file", uris["derived"])
    before = store.graph(as_of=mix.before_derive)
    assert job_id("lakebed", "derive") not in before.ids() and derived_node not in before.ids()
    assert dataset_id("file", uris["raw"]) in before.ids()
    now = store.graph()
    assert job_id("lakebed", "derive") in now.ids() and derived_node in now.ids()

    # Failed runs: the write the quality rule blocked.
    failed = store.runs(failed=True)
    assert [r["run_id"] for r in failed] == [mix.failed_run.run_id]
    assert failed[0]["state"] == "FAIL" and failed[0]["job"] == "orders_correction"
    assert "unique" in failed[0]["error"]


# --- lineage backends: down, flaky, slow ----------------------------------------------------------


def test_backend_down_keeps_events_and_resends_them_in_order(
    remote: Callable[[str], None],
    backend: Callable[..., LineageBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="lakebed.lineage")
    remote(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    first = commit("t", small_table())
    second = commit("t", small_table(offset=3))
    assert (first.version, second.version) == (0, 1)  # the jobs succeeded
    warnings = [r for r in caplog.records if r.name == "lakebed.lineage" and r.levelno == logging.WARNING]
    assert warnings and "lineage backend unavailable" in warnings[0].getMessage()
    config = get_config()
    written = read_events(config.home)
    kept = read_events(config.home, "unsent.jsonl")
    assert len(written) == 4 and kept == written  # every event kept, in order
    assert pending(config) == 4

    # The backend comes up: flush re-sends the kept events in order and empties the file.
    server = backend()
    remote(server.url)
    assert get_emitter(get_config()).flush() == 0
    assert server.events == kept and set(server.paths) == {"/api/v1/lineage"}
    unsent = config.home / "lineage" / "unsent.jsonl"
    assert not unsent.exists() or not unsent.read_bytes().strip()
    # ... and new events go straight through.
    commit("t", small_table(offset=6))
    assert server.events == read_events(config.home)


def test_flaky_backend_gets_kept_events_before_the_next_one(
    remote: Callable[[str], None],
    backend: Callable[..., LineageBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(emit, "RETRY_AFTER_SECONDS", 0.0)
    server = backend(status=400)  # refuses everything (no retries for a 4xx)
    remote(server.url)
    for i in range(3):
        assert commit("t", small_table(offset=i)).version == i
    home = get_config().home
    assert server.events == [] and len(read_events(home, "unsent.jsonl")) == 6
    server.status = 201
    commit("t", small_table(offset=9))  # the next event: the kept ones first, in order, then it
    assert server.events == read_events(home) and len(server.events) == 8
    assert pending(get_config()) == 0


def test_slow_backend_costs_at_most_one_timeout(
    remote: Callable[[str], None],
    backend: Callable[..., LineageBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stall = 3.0
    monkeypatch.setenv("LAKEBED_LINEAGE_TIMEOUT", "0.5")
    server = backend(stall=stall)
    remote(server.url)
    started = time.perf_counter()
    versions = [commit("t", small_table(offset=i)).version for i in range(5)]
    elapsed = time.perf_counter() - started
    assert versions == [0, 1, 2, 3, 4]
    home = get_config().home
    assert read_events(home, "unsent.jsonl") == read_events(home)  # all 10 events kept
    # Waiting for the stalled backend at most about once (documented: a slow backend costs one timeout).
    assert elapsed < 2 * stall, f"5 commits took {elapsed:.1f} s against a backend stalling {stall} s"


# --- the event file and the store -----------------------------------------------------------------


def test_malformed_event_lines_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lakebed.lineage")
    first = RunContext(job="before_garbage")
    commit("a", small_table(), run=first)
    path = get_config().home / "lineage" / "events.jsonl"
    good = json.loads(path.read_bytes().splitlines()[-1])
    no_run = {k: v for k, v in good.items() if k != "run"}
    with open(path, "ab") as handle:
        handle.write(b"this is not JSON\n")
        handle.write(json.dumps(good)[:80].encode() + b"\n")  # truncated
        handle.write(json.dumps(no_run).encode() + b"\n")  # an object without `run`
        handle.write(b"\xff\xfe\x00 not UTF-8\n")
        handle.write(b"[1, 2, 3]\n")
        handle.write(b"\n")
    second = RunContext(job="after_garbage")
    commit("b", small_table(), run=second)

    store = LineageStore()
    assert store.sync() == 4
    skipped = [r.getMessage() for r in caplog.records if "skipping malformed lineage event" in r.getMessage()]
    assert len(skipped) == 5, skipped
    assert {r["run_id"] for r in store.runs()} == {first.run_id, second.run_id}
    assert store.producer("a").job_name == "before_garbage"
    assert store.producer("b").job_name == "after_garbage"
    assert store.sync() == 0  # loaded exactly once


def test_unknown_names_raise_lineage_not_found() -> None:
    commit("raw", small_table())
    store = LineageStore()
    for question in (store.producer, store.history, store.upstream, store.downstream):
        with pytest.raises(LineageNotFoundError, match="'no_such_table'"):
            question("no_such_table")
    with pytest.raises(LineageNotFoundError, match=r"version 7 of 'raw' \(known versions: 0\)"):
        store.producer("raw", 7)
    missing = str(uuid.uuid4())
    with pytest.raises(LineageNotFoundError, match=f"no run '{missing}'"):
        store.run(missing)


def test_upstream_of_an_unknown_version_raises() -> None:
    commit("raw", small_table())
    with pytest.raises(LineageNotFoundError, match="7"):
        LineageStore().upstream("raw", 7)


# --- secrets --------------------------------------------------------------------------------------


def test_no_secret_reaches_any_event(
    remote: Callable[[str], None],
    backend: Callable[..., LineageBackend],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIALAKEBEDSECRET042",
        "AWS_SECRET_ACCESS_KEY": "wJalr-lakebed-secret-access-key-9f8e",
        "AWS_SESSION_TOKEN": "FwoG-lakebed-session-token-77aa",
        "LAKEBED_LINEAGE_API_TOKEN": "lb-api-token-5150-secret",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    password = "hunter2secret"
    server = backend(status=400)  # keep the events in unsent.jsonl
    remote(server.url)  # (resets the config: the secrets are in it)
    assert set(get_config().secret_values()) == set(secrets.values())

    source = tmp_path / "inputs" / "customers.csv"
    source.parent.mkdir()
    source.write_bytes((STRUCTURED / "customers.csv").read_bytes())
    assert ingest_files(source, table="customers").rows == 2000

    message = (
        f"upload to https://user:{password}@host/x failed (password={password}); "
        f"key {secrets['AWS_ACCESS_KEY_ID']} / {secrets['AWS_SECRET_ACCESS_KEY']}, "
        f"session {secrets['AWS_SESSION_TOKEN']}, api {secrets['LAKEBED_LINEAGE_API_TOKEN']}"
    )

    def failing() -> Iterator[pa.RecordBatch]:
        yield small_table().to_batches()[0]
        raise RuntimeError(message)

    run = RunContext(job="leaky", tags={"source": f"s3://{secrets['AWS_ACCESS_KEY_ID']}:{password}@bucket/k"})
    with pytest.raises(RuntimeError):
        commit("leaky", pa.RecordBatchReader.from_batches(small_table().schema, failing()), run=run)

    home = get_config().home
    events = read_events(home)
    fail = [e for e in events if e["run"]["runId"] == run.run_id and e["eventType"] == "FAIL"]
    assert len(fail) == 1 and "***@host/x" in fail[0]["run"]["facets"]["errorMessage"]["message"]
    assert len(read_events(home, "unsent.jsonl")) == len(events)
    store = LineageStore()
    store.sync()
    stored = DeltaTable(store.uri).to_pyarrow_table(columns=["event"]).column("event").to_pylist()
    assert len(stored) == len(events)

    kept = (home / "lineage" / "unsent.jsonl").read_text().splitlines()
    server.status = 201  # the backend accepts again: what it receives is scanned too
    assert get_emitter(get_config()).flush() == 0 and len(server.events) == len(events)

    lines = {
        "events.jsonl": (home / "lineage" / "events.jsonl").read_text().splitlines(),
        "unsent.jsonl": kept,
        "store": stored,
        "backend": [json.dumps(e) for e in server.events],
        "log": caplog.text.splitlines(),
    }
    for where, texts in lines.items():
        for value in [*secrets.values(), password]:
            leaks = [t for t in texts if value in t]
            assert not leaks, f"{value!r} found in {where}: {leaks[0][:300]}"


def test_run_event_dicts_equal_what_the_openlineage_client_classes_serialise() -> None:
    """The directly built event is the client's own serialisation of the same event (the reference)."""
    import datetime as dt

    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import column_lineage_dataset as cl
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        datasource_dataset,
        error_message_run,
        job_type_job,
        output_statistics_output_dataset,
        parent_run,
        processing_engine_run,
        schema_dataset,
        source_code_location_job,
    )
    from openlineage.client.serde import Serde

    from lakebed.lineage.events import (
        LAKEBED_FACET_SCHEMA,
        JobInfo,
        ParentRef,
        file_dataset,
        run_event,
        table_dataset,
    )
    from lakebed.version import PRODUCER, __version__

    src = file_dataset("/tmp/in.csv", sha256="abc")
    out = table_dataset(
        "orders",
        "/tmp/lake/orders",
        3,
        schema=pa.schema([("id", pa.int64())]),
        rows=10,
        size=100,
        column_lineage={"id": [(src, "id", "DIRECT:AGGREGATION:sum over 1h")]},
    )
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    mine = run_event(
        "FAIL",
        run_id="0190a1b2-0000-7000-8000-000000000000",
        job=JobInfo("lakebed", "ingest:orders", code_version="abc"),
        inputs=[src],
        outputs=[out],
        parent=ParentRef("0190a1b2-0000-7000-8000-000000000001", "dagster", "daily"),
        error="boom",
        event_time=when,
    )
    p = PRODUCER
    ds = datasource_dataset.DatasourceDatasetFacet(name="file", uri="file://", producer=p)
    reference = RunEvent(
        eventType=RunState.FAIL,
        eventTime=when.isoformat(),
        run=Run(
            runId="0190a1b2-0000-7000-8000-000000000000",
            facets={
                "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                    version=__version__, name="lakebed", producer=p
                ),
                "parent": parent_run.ParentRunFacet(
                    run=parent_run.Run(runId="0190a1b2-0000-7000-8000-000000000001"),
                    job=parent_run.Job(namespace="dagster", name="daily"),
                    producer=p,
                ),
                "errorMessage": error_message_run.ErrorMessageRunFacet(
                    message="boom", programmingLanguage="python", producer=p
                ),
            },
        ),
        job=Job(
            namespace="lakebed",
            name="ingest:orders",
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="LAKEBED", jobType="JOB", producer=p
                ),
                "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                    type="git", url=p, version="abc", producer=p
                ),
            },
        ),
        inputs=[
            InputDataset(
                namespace="file",
                name=src.name,
                facets={
                    "dataSource": ds,
                    "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                        datasetVersion="abc", producer=p
                    ),
                },
                inputFacets={},
            )
        ],
        outputs=[
            OutputDataset(
                namespace="file",
                name=out.name,
                facets={
                    "dataSource": ds,
                    "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                        datasetVersion="3", producer=p
                    ),
                    "schema": schema_dataset.SchemaDatasetFacet(
                        fields=[schema_dataset.SchemaDatasetFacetFields(name="id", type="int64")],
                        producer=p,
                    ),
                    "columnLineage": cl.ColumnLineageDatasetFacet(
                        fields={
                            "id": cl.Fields(
                                inputFields=[
                                    cl.InputField(
                                        namespace="file",
                                        name=src.name,
                                        field="id",
                                        transformations=[
                                            cl.Transformation(
                                                type="DIRECT",
                                                subtype="AGGREGATION",
                                                description="sum over 1h",
                                            )
                                        ],
                                    )
                                ]
                            )
                        },
                        producer=p,
                    ),
                    "lakebed": {"_producer": p, "_schemaURL": LAKEBED_FACET_SCHEMA, "table": "orders"},
                },
                outputFacets={
                    "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                        rowCount=10, size=100, producer=p
                    )
                },
            )
        ],
        producer=p,
    )
    assert mine == json.loads(Serde.to_json(reference))
