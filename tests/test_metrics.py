"""Prometheus metrics scraped from real processes: a stream worker on the embedded broker, the feature
server, `lakebed metrics serve`; the names of lakebed's metrics. No mocks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

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
