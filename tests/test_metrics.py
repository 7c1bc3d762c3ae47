"""Prometheus metrics scraped from real processes: a stream worker on the embedded broker, the feature
server, `lakebed metrics serve`; the names of lakebed's metrics. No mocks."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from server_process import free_port

from lakebed.pipelines.stream.kafka import end_offsets, produce_records

pytest_plugins = ["streaming_fixtures"]

ROOT = Path(__file__).resolve().parents[1]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer: (name, sorted labels) → value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_partition(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[int, float]:
    return {int(dict(labels)["partition"]): v for (n, labels), v in samples.items() if n == name}


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def worker(
    bootstrap: str, lakebed_home: Path, tmp_path: Path
) -> Iterator[Callable[[str, int], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(topic: str, port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "LAKEBED_HOME": str(lakebed_home), "LAKEBED_KAFKA_BOOTSTRAP": bootstrap}
        command = [sys.executable, "-m", "lakebed.cli", "stream", "run", "--topic", topic, "--table"]
        # A batch waits 6 s for more records: long enough to scrape the backlog while it is buffered.
        command += ["events", "--max-seconds", "6", "--metrics-port", str(port), "--quiet"]
        log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(command, env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


def test_stream_worker_reports_the_backlog_then_zero(
    bootstrap: str, new_topic: Callable[..., str], worker: Callable[[str, int], subprocess.Popen[bytes]]
) -> None:
    topic = new_topic(2)
    produce_records(bootstrap, topic, ({"id": i, "user": f"u{i % 7}"} for i in range(240)), key="user")
    backlog = {p: end for p, end in end_offsets(bootstrap, topic).items()}
    assert sum(backlog.values()) == 240 and all(backlog.values())
    port = free_port()
    process = worker(topic, port)
    url = f"http://127.0.0.1:{port}/metrics"

    def buffered_all() -> bool:
        try:
            return by_partition(scrape(url), "lakebed_stream_buffered_records") == backlog
        except OSError:
            return False

    # Fetched, not yet committed: both stages equal the backlog of each partition.
    wait_for(buffered_all, 20, "the backlog to be buffered")
    samples = scrape(url)
    assert by_partition(samples, "lakebed_stream_lag_records") == backlog
    # Once the batch is committed: nothing buffered, no lag, and every record counted once.
    wait_for(
        lambda: set(by_partition(scrape(url), "lakebed_stream_lag_records").values()) == {0}, 20, "lag 0"
    )
    samples = scrape(url)
    assert set(by_partition(samples, "lakebed_stream_buffered_records").values()) == {0}
    assert by_partition(samples, "lakebed_stream_records_total") == backlog
    labels = {dict(labels)["table"] for (n, labels) in samples if n == "lakebed_stream_records_total"}
    assert labels == {"events"}
    assert process.poll() is None


def test_a_busy_metrics_port_stops_the_worker_before_it_consumes(
    kafka_env: str, new_topic: Callable[..., str], lakebed_home: Path
) -> None:
    from lakebed.cli import main as cli

    topic = new_topic(1)
    produce_records(kafka_env, topic, [{"id": 1}])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["stream", "run", "--topic", topic, "-t", "events", "--metrics-port", str(port)]
        )
    assert result.exit_code != 0
    assert f"127.0.0.1:{port}" in result.output and "--metrics-port" in result.output
    assert not (lakebed_home / "tables" / "events").exists()  # nothing consumed, nothing written


def _lake(now: dt.datetime) -> dt.datetime:
    """A home with a materialised view, a tiered table moved once and a quality check; returns the newest
    feature_ts the online store holds."""
    from lakebed.pipelines import tiering
    from lakebed.pipelines.delta import commit
    from lakebed.pipelines.features.materialize import materialize
    from lakebed.pipelines.features.online import default_online_store
    from lakebed.schemas.contract import TableContract
    from lakebed.schemas.features import FeatureView

    times = pa.array(
        [now - dt.timedelta(hours=3), now - dt.timedelta(minutes=30)], pa.timestamp("us", tz="UTC")
    )
    contract = TableContract.from_dict(
        {
            "name": "orders",
            "columns": [
                {"name": "customer_id", "type": "int64"},
                {"name": "ordered_at", "type": "timestamp"},
                {"name": "amount", "type": "float64"},
            ],
            "rules": [{"name": "small", "sql": "amount < 100", "severity": "warn"}],
            "tiering": {"column": "ordered_at", "hot_for": "1h"},
        }
    )
    commit(
        "orders",
        pa.table({"customer_id": [7, 8], "ordered_at": times, "amount": [5.0, 500.0]}),
        contract=contract,
    )
    view = FeatureView.model_validate(
        {
            "name": "spend",
            "version": 2,
            "entities": ["customer_id"],
            "source": {"table": "orders"},
            "event_time": "ordered_at",
            "hop": "1h",
            "ttl": "3d",
            "aggregations": [{"name": "total_1d", "function": "sum", "column": "amount", "window": "1d"}],
        }
    )
    materialize(view)
    tiering.move("orders", before=now - dt.timedelta(hours=1))
    latest = default_online_store().latest_feature_ts(view.offline_table)
    assert latest is not None
    return latest


def test_metrics_serve_exports_the_table_gauges(lakebed_home: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    latest = _lake(now)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEBED_")}
    env["LAKEBED_HOME"] = str(lakebed_home)
    log = open(tmp_path / "metrics.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "lakebed.cli", "metrics", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def up() -> bool:
            try:
                scrape(url)
                return True
            except OSError:
                return False

        wait_for(up, 30, "lakebed metrics serve")
        samples = scrape(url)
        scraped_at = dt.datetime.now(dt.UTC)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    freshness = samples[("lakebed_feature_freshness_seconds", (("version", "2"), ("view", "spend")))]
    assert abs(freshness - (scraped_at - latest).total_seconds()) < 1.0
    assert samples[("lakebed_tier_rows", (("table", "orders"), ("tier", "cold")))] == 1
    assert samples[("lakebed_tier_rows", (("table", "orders"), ("tier", "hot")))] == 1
    assert samples[("lakebed_tier_bytes", (("table", "orders"), ("tier", "cold")))] > 0
    assert samples[("lakebed_quality_last_failed_rows", (("rule", "small"), ("table", "orders")))] == 1
    assert samples[("lakebed_lineage_unsent_events", ())] == 0


def test_status_json_reports_readiness_streams_views_and_runs(
    kafka_env: str, new_topic: Callable[..., str], lakebed_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakebed.cli import main as cli
    from lakebed.pipelines.stream.ingest import ingest_stream

    topic = new_topic(2)
    produce_records(kafka_env, topic, ({"id": i, "user": f"u{i}"} for i in range(10)), key="user")
    ingest_stream(topic, "events", bootstrap=kafka_env, until_caught_up=True)
    produce_records(kafka_env, topic, ({"id": i, "user": f"u{i}"} for i in range(10, 14)), key="user")
    latest = _lake(dt.datetime.now(dt.UTC))
    result = CliRunner().invoke(cli, ["status", "--format", "json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["ready"] is True and answer["broker"] == kafka_env
    assert {c["name"] for c in answer["checks"]} == {"home", "broker", "object_store"}
    streams = [s for s in answer["streams"] if s["topic"] == topic]
    ends = end_offsets(kafka_env, topic)
    assert {s["partition"]: s["end_offset"] for s in streams} == ends
    assert sum(s["lag"] for s in streams) == 4  # produced after the ingest caught up
    view = next(v for v in answer["views"] if v["view"] == "spend")
    age = (dt.datetime.now(dt.UTC) - latest).total_seconds()
    assert view["version"] == 2 and abs(view["freshness_seconds"] - age) < 5
    jobs = {r["job"]: r for r in answer["runs"]}
    assert jobs["features.materialize.spend.v2"]["state"] == "COMPLETE"
    assert answer["lineage_unsent"] == 0
    # Not ready: the broker stops answering → exit status 1, the broker check failing.
    from lakebed.config import reset_config

    monkeypatch.setenv("LAKEBED_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    reset_config()
    failed = CliRunner().invoke(cli, ["status", "--format", "json"])
    assert failed.exit_code == 1
    assert [c["name"] for c in json.loads(failed.output)["checks"] if not c["ok"]] == ["broker"]


def test_readiness_names_a_missing_home_and_status_creates_nothing(tmp_path: Path) -> None:
    from lakebed.cli_ops import project_status
    from lakebed.config import LakebedConfig

    missing = tmp_path / "no-lake"
    answer = project_status(LakebedConfig(home=missing))
    assert answer["ready"] is False
    home = next(c for c in answer["checks"] if c["name"] == "home")
    assert not home["ok"] and "does not exist" in home["detail"]
    assert not missing.exists()


def test_buffered_observations_fold_into_the_buckets_observe_would_fill() -> None:
    """A hot path's buffered histogram, once folded, holds exactly what observing each value would."""
    from prometheus_client import CollectorRegistry, Histogram

    from lakebed.metrics import Buffered

    registry = CollectorRegistry()
    bounds = (0.001, 0.01, 0.1)
    direct = Histogram("direct_seconds", "observed one by one", buckets=bounds, registry=registry)
    folded = Histogram("folded_seconds", "observed through Buffered", buckets=bounds, registry=registry)
    buffered = Buffered(folded)
    values = [0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.2, 7.0] * 700  # over Buffered.LIMIT: folds itself
    for value in values:
        direct.observe(value)
        buffered.observe(value)
    assert registry.get_sample_value("folded_seconds_count") < len(values)  # the rest still pending
    buffered.fold()

    def buckets(name: str) -> list[tuple[str, float]]:
        return [
            (s.labels["le"], s.value)
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if s.name.endswith("_bucket")
        ]

    assert buckets("folded_seconds") == buckets("direct_seconds")
    assert registry.get_sample_value("folded_seconds_count") == len(values)
    assert registry.get_sample_value("folded_seconds_sum") == pytest.approx(
        registry.get_sample_value("direct_seconds_sum")
    )
