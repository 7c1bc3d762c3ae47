"""Pytest fixtures for streaming tests: a real Tansu Kafka broker and topics on it.

Test modules load it with ``pytest_plugins = ["streaming_fixtures"]`` (``tests/`` has no ``__init__.py``, so pytest puts the folder on ``sys.path`` and the module imports by
its bare name.) One broker serves the whole session (it starts in well under a second, but topics are
cheap and unique per test); it is stopped at the end of the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lakebed.broker import EmbeddedBroker
from lakebed.config import reset_config


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu, in-memory storage) on a free port, for the session."""
    log_path = Path(tmp_path_factory.mktemp("kafka-broker")) / "broker.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield running


@pytest.fixture
def bootstrap(broker: EmbeddedBroker) -> str:
    """The broker's ``host:port``; also restarts it if a fault test killed it."""
    if not broker.running:
        broker.start()
    return broker.bootstrap


@pytest.fixture
def kafka_env(bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point lakebed at the test broker (``LAKEBED_KAFKA_BOOTSTRAP``) for code that resolves it itself
    (CLI, child processes, ``lakebed.broker.ensure_bootstrap``)."""
    monkeypatch.setenv("LAKEBED_KAFKA_BOOTSTRAP", bootstrap)
    reset_config()
    return bootstrap


@pytest.fixture
def new_topic(bootstrap: str) -> Callable[..., str]:
    """``new_topic(partitions=1, prefix="t")`` creates a uniquely named topic and returns its name."""
    from lakebed.pipelines.stream.kafka import create_topic

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topic(bootstrap, name, partitions, exist_ok=False)
        return name

    return make


__all__ = ["bootstrap", "broker", "kafka_env", "new_topic"]
