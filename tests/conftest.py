"""Shared fixtures: every test runs against its own lakebed home with real Delta tables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakebed.config import LakebedConfig, get_config, reset_config


@pytest.fixture(autouse=True)
def lakebed_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated lakebed home (``LAKEBED_HOME``) for each test."""
    home = tmp_path / "lakebed-home"
    monkeypatch.setenv("LAKEBED_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("LAKEBED_CONFIG", raising=False)
    monkeypatch.delenv("LAKEBED_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    reset_config()
    yield home
    os.environ.pop("LAKEBED_PROJECT", None)  # entered by `lakebed --project` or the demo in this process
    reset_config()


@pytest.fixture
def config(lakebed_home: Path) -> LakebedConfig:
    return get_config()
