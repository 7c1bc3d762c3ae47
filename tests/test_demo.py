"""The demo is the first thing a user runs: it must finish and say where to look."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from deltalake import DeltaTable
from openlineage_spec import validate_event

import lakebed
from lakebed.cli import main
from lakebed.lineage.store import LineageStore
from lakebed.pipelines.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_shop_example_project_and_prints_where_to_look(
    lakebed_home: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    # The shop example was copied into ./shop and applied, as `lakebed init --example shop` + `lakebed apply`.
    project = tmp_path / "shop"
    assert (project / "lakebed.toml").is_file() and (project / "definitions.py").is_file()
    assert "lakebed apply:" in result.output and str(project) in result.output
    assert Catalog().get("orders").contract is not None
    tables = {e.name for e in Catalog().list()}
    assert {"customers", "orders", "products", "web_events", "documents", "ingested_files"} <= tables
    # The example's models and the feature view reading one of them.
    assert {"orders_clean", "daily_revenue", "fv_customer_orders_v1"} <= tables
    clean = lakebed.read_table("orders_clean")
    assert (
        clean.num_rows
        == lakebed.sql("SELECT count(*) AS n FROM orders WHERE status <> 'returned'")["n"][0].as_py()
    )
    assert "http://127.0.0.1:3000" in result.output
    assert "Revenue by category" in result.output
    assert lakebed.read_table("customers").num_rows == 2_000
    # The stream part: every sample event exactly once, poison messages dead-lettered, features served.
    assert lakebed.read_table("shop_events").num_rows == 6_000
    assert lakebed.read_table("shop_events__dead_letter").num_rows == 2
    assert "Point-in-time features" in result.output and "Online features" in result.output
    # The documents' embeddings and a top-3 search for a question about them.
    assert "Top 3 chunks for 'How long are old versions of a table kept?'" in result.output
    assert lakebed.read_table("documents__chunks").num_rows > 0
    # The runs are in the demo's Dagster instance, so the UI shows them.
    runs = list((lakebed_home / "dagster").rglob("*"))
    assert runs, "the demo's Dagster runs were not persisted under DAGSTER_HOME"
    # Quality: the sample orders that break the contract are quarantined with their file and line.
    quarantined = lakebed.read_table("orders__quarantine").to_pylist()
    assert len(quarantined) == 4 and all(r["_source_line"] > 1 for r in quarantined)
    assert lakebed.read_table("shop_events__quarantine").num_rows == 1
    # Lineage: every event the demo emitted is a valid OpenLineage RunEvent, every run started and ended,
    # and every Delta version of every table resolves to a run in the lineage store.
    events = [
        json.loads(line) for line in (lakebed_home / "lineage" / "events.jsonl").read_text().splitlines()
    ]
    assert {i: p for i, e in enumerate(events) if (p := validate_event(e))} == {}
    states: dict[str, list[str]] = {}
    for event in events:
        states.setdefault(event["run"]["runId"], []).append(event["eventType"])
    assert all(s[0] == "START" and s[-1] in ("COMPLETE", "FAIL") for s in states.values())
    store = LineageStore()
    for entry in Catalog().list():
        for commit_info in DeltaTable(entry.uri).history():
            run_id = commit_info.get("lakebed.run_id")
            assert run_id in states, (entry.name, commit_info["version"], commit_info.get("operation"))
    assert "<svg" in (lakebed_home / "lineage" / "graph.svg").read_text()
    assert store.producer("orders").job_name == "dagster:orders"


def test_dagster_loads_the_code_location(lakebed_home: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(lakebed_home / "dagster")}
    (lakebed_home / "dagster").mkdir(parents=True, exist_ok=True)
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "definitions", "validate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
