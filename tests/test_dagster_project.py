"""Dagster from a project: `lakebed.dagster.definitions(project)` on a project written by the test, with
real Dagster runs, real Delta tables and a real broker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox

import lakebed
from lakebed.assets.resources import LakebedResource
from lakebed.config import project_config, reset_config
from lakebed.dagster import definitions
from lakebed.errors import ProjectError
from lakebed.examples import SHOP
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.stream.kafka import produce_records
from lakebed.samples import shop_events

pytest_plugins = ["streaming_fixtures"]

DAGSTER = Path(sys.executable).with_name("dagster")

SALES_CONTRACT = """\
name: sales
description: One row per sale.
columns:
  - {name: id, type: int64, nullable: false, description: the sale}
  - {name: amount, type: float64, min: 0}
rules:
  - {name: amount_set, sql: "amount IS NOT NULL", description: every sale has an amount}
"""

FILES_SOURCES = """\
sources:
  - table: sales
    kind: files
    path: data/sales
    format: csv
    contract: sales.yaml
    description: Daily sales exports (CSV folder).
    owners: [team:finance]
    tags: [revenue]
  - table: signups
    kind: files
    path: data/signups
    format: json
    description: Sign-ups as JSON lines, picked up as they land.
    owners: [ops@example.com]
    run: {sensor: true}
  - table: prices
    kind: files
    path: data/prices.csv
    description: Price list, refreshed every night.
    run: {schedule: "0 4 * * *"}
"""

STREAM_SOURCES = """\
sources:
  - table: clicks
    kind: stream
    topic: {topic}
    contract: clicks.yaml
    description: Clickstream from Kafka.
    owners: [team:web]
"""

FEATURE_VIEW = """\
name: click_activity
version: 1
description: Events and spend per customer over the last hour.
entities: [customer_id]
source: {{topic: {topic}, table: clicks}}
event_time: event_time
hop: 5m
ttl: 2d
aggregations:
  - {{name: events_1h, function: count, window: 1h}}
  - {{name: spend_1h, function: sum, column: amount, window: 1h}}
"""


def write_project(
    root: Path,
    *,
    name: str = "alpha",
    topic: str = "clicks",
    sales_rows: int = 2,
    bootstrap: str | None = None,
) -> Path:
    """A project with a CSV-folder source under a contract with rules, a JSON-lines source watched by a
    sensor, a cron source, a stream source and a feature view over it."""
    root.mkdir(parents=True)
    kafka = f'\n[kafka]\nbootstrap = "{bootstrap}"\n' if bootstrap else ""
    (root / "lakebed.toml").write_text(f'[project]\nname = "{name}"\n{kafka}')
    (root / "contracts").mkdir()
    (root / "contracts" / "sales.yaml").write_text(SALES_CONTRACT)
    clicks = (
        (SHOP / "contracts" / "shop_events.yaml").read_text().replace("name: shop_events", "name: clicks")
    )
    (root / "contracts" / "clicks.yaml").write_text(clicks)
    (root / "sources").mkdir()
    (root / "sources" / "files.yaml").write_text(FILES_SOURCES)
    (root / "sources" / "stream.yaml").write_text(STREAM_SOURCES.format(topic=topic))
    (root / "feature_views").mkdir()
    (root / "feature_views" / "click_activity.yaml").write_text(FEATURE_VIEW.format(topic=topic))
    data = root / "data"
    (data / "sales").mkdir(parents=True)
    lines = "".join(f"{i},{i * 10.5}\n" for i in range(1, sales_rows + 1))
    (data / "sales" / "2025-01-01.csv").write_text("id,amount\n" + lines)
    (data / "signups").mkdir()
    (data / "signups" / "day1.jsonl").write_text('{"id": 1, "email": "a@example.com"}\n')
    (data / "prices.csv").write_text("sku,price\nA,1.5\nB,2.5\nC,3.0\n")
    return root


@pytest.fixture
def project_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """State in each project's own .lakebed folder (no LAKEBED_HOME override)."""
    monkeypatch.delenv("LAKEBED_HOME", raising=False)
    reset_config()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


ASSETS = {
    "sales",
    "signups",
    "prices",
    "clicks",
    "fv_click_activity_v1",
    "online_click_activity_v1",
}


def _keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys()}


def test_definitions_hold_every_asset_check_sensor_schedule_and_job(tmp_path: Path) -> None:
    project = write_project(tmp_path / "alpha")
    defs = definitions(project)
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    assert _keys(defs) == ASSETS

    groups = {key: graph.get(dg.AssetKey(key)).group_name for key in ASSETS}
    assert groups == {
        "sales": "sources",
        "signups": "sources",
        "prices": "sources",
        "clicks": "streams",
        "fv_click_activity_v1": "features",
        "online_click_activity_v1": "features",
    }
    sales = graph.get(dg.AssetKey("sales"))
    assert sales.owners == ["team:finance"]
    assert sales.description == "Daily sales exports (CSV folder)."
    assert graph.get(dg.AssetKey("signups")).owners == ["ops@example.com"]
    assert graph.get(dg.AssetKey("clicks")).owners == ["team:web"]
    assert graph.get(dg.AssetKey("clicks")).description == "Clickstream from Kafka."
    assert sales.metadata["dagster/table_name"] == "sales"
    schema = sales.metadata["dagster/column_schema"]
    assert [(c.name, c.type, c.constraints.nullable) for c in schema.columns] == [
        ("id", "int64", False),
        ("amount", "float64", True),
    ]
    assert sales.metadata["lakebed/tags"] == ["revenue"]

    # Feature views: the offline asset depends on the raw stream asset, the online one on the offline one,
    # and the offline columns' lineage names the source columns.
    offline = graph.get(dg.AssetKey("fv_click_activity_v1"))
    assert offline.parent_keys == {dg.AssetKey("clicks")}
    assert graph.get(dg.AssetKey("online_click_activity_v1")).parent_keys == {offline.key}
    lineage = offline.metadata["dagster/column_lineage"].deps_by_column
    assert [(d.asset_key, d.column_name) for d in lineage["spend_1h"]] == [(dg.AssetKey("clicks"), "amount")]
    assert [d.column_name for d in lineage["customer_id"]] == ["customer_id"]

    # A blocking contract check per contract with rules.
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {("sales", "contract"), ("clicks", "contract")}
    assert [graph.get_check_spec(key).blocking for key in graph.asset_check_keys] == [True, True]

    sensors = {s.name: s for s in repository.sensor_defs}
    assert set(sensors) == {
        "signups_files_sensor",
        "kafka_offsets_sensor",
        "landing_sensor",
        "hot_tier_quota_sensor",
    }
    assert sensors["signups_files_sensor"].asset_selection is not None
    schedules = {s.name: s for s in repository.schedule_defs}
    assert set(schedules) == {"prices_schedule", "stream_maintenance_schedule", "tier_move_schedule"}
    assert schedules["prices_schedule"].cron_schedule == "0 4 * * *"
    assert schedules["prices_schedule"].job_name == "prices_job"
    assert {
        "prices_job",
        "features_job",
        "stream_maintenance_job",
        "tier_move_job",
        "landing_ingest_job",
    } <= set(repository.job_names)
    prices_job = repository.get_job("prices_job")
    assert {k.to_user_string() for k in prices_job.asset_layer.executable_asset_keys} == {"prices"}

    # The resource points lakebed at this project.
    resource = (defs.resources or {})["lakebed"]
    assert isinstance(resource, LakebedResource)
    assert resource.project == str(project.resolve())


def test_materialize_every_asset_into_the_project(
    tmp_path: Path,
    project_home: None,
    new_topic: Callable[..., str],
    bootstrap: str,
    instance: dg.DagsterInstance,
) -> None:
    topic = new_topic(partitions=2, prefix="clicks")
    project = write_project(tmp_path / "alpha", topic=topic, bootstrap=bootstrap)
    produce_records(bootstrap, topic, shop_events(300), key="customer_id")
    defs = definitions(project)
    result = dg.materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        instance=instance,
        resources=defs.resources,
    )
    assert result.success
    materialized = {
        e.asset_key.to_user_string(): e.materialization for e in result.get_asset_materialization_events()
    }
    assert set(materialized) == ASSETS
    assert {
        (e.asset_check_key.asset_key.to_user_string(), e.passed) for e in result.get_asset_check_evaluations()
    } == {
        ("sales", True),
        ("clicks", True),
    }

    config = project_config(project)
    assert config.home == project.resolve() / ".lakebed"
    sales = lakebed.read_table("sales", config=config)
    assert sales.num_rows == 2 and sales.column("amount").to_pylist() == [10.5, 21.0]
    assert lakebed.read_table("signups", config=config).num_rows == 1
    assert lakebed.read_table("prices", config=config).num_rows == 3
    clicks = lakebed.read_table("clicks", config=config)
    assert clicks.num_rows == 300
    features = lakebed.read_table("fv_click_activity_v1", config=config)
    assert features.num_rows > 0
    assert set(features.column("customer_id").to_pylist()) <= set(clicks.column("customer_id").to_pylist())
    online_rows = materialized["online_click_activity_v1"].metadata["dagster/row_count"].value
    assert 0 < online_rows <= len(set(features.column("customer_id").to_pylist()))  # latest per live entity

    metadata = materialized["sales"].metadata
    assert metadata["dagster/row_count"].value == 2
    assert metadata["dagster/table_name"].value == "sales"
    assert metadata["dagster/uri"].value == Catalog(config).get("sales").uri
    assert Catalog(config).get("sales").uri.startswith(str(project.resolve()))
    assert {c.name for c in metadata["dagster/column_schema"].value.columns} >= {"id", "amount"}
    lineage = materialized["fv_click_activity_v1"].metadata["dagster/column_lineage"].value
    assert [d.column_name for d in lineage.deps_by_column["events_1h"]] == ["event_time"]


def test_sensor_requests_a_run_when_a_file_lands(
    tmp_path: Path, project_home: None, instance: dg.DagsterInstance
) -> None:
    project = write_project(tmp_path / "alpha")
    defs = definitions(project)
    sensor = defs.get_sensor_def("signups_files_sensor")
    resources = defs.resources

    first = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert [r.asset_selection for r in first.run_requests] == [[dg.AssetKey("signups")]]
    idle = sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor))
    assert idle.run_requests == []

    (project / "data" / "signups" / "day2.jsonl").write_text(
        '{"id": 2, "email": "b@example.com"}\n{"id": 3, "email": "c@example.com"}\n'
    )
    second = sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor))
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert request.asset_selection == [dg.AssetKey("signups")]
    assert request.run_key != first.run_requests[0].run_key

    # The requested run ingests both files into the project's table.
    job = defs.get_implicit_global_asset_job_def()
    run = job.execute_in_process(instance=instance, asset_selection=request.asset_selection)
    assert run.success
    assert lakebed.read_table("signups", config=project_config(project)).num_rows == 3


def test_a_new_yaml_file_is_a_new_asset_on_reload(tmp_path: Path) -> None:
    project = write_project(tmp_path / "alpha")
    assert "refunds" not in _keys(definitions(project))
    (project / "data" / "refunds.csv").write_text("id,amount\n1,5.0\n")
    (project / "sources" / "refunds.yaml").write_text(
        "sources:\n  - {table: refunds, kind: files, path: data/refunds.csv, description: Refunds., owners: [team:finance]}\n"
    )
    defs = definitions(project / "definitions.py")  # a file inside the project names it too
    assert _keys(defs) == ASSETS | {"refunds"}
    assert defs.get_repository_def().asset_graph.get(dg.AssetKey("refunds")).owners == ["team:finance"]

    # An owner Dagster cannot show is an error naming the file.
    (project / "sources" / "refunds.yaml").write_text(
        "sources:\n  - {table: refunds, kind: files, path: data/refunds.csv, owners: [finance]}\n"
    )
    with pytest.raises(ProjectError, match=r"refunds\.yaml: source refunds: owners: 'finance'"):
        definitions(project)


def test_two_projects_in_one_process_keep_their_own_tables(
    tmp_path: Path, project_home: None, instance: dg.DagsterInstance
) -> None:
    alpha = write_project(tmp_path / "alpha", name="alpha", sales_rows=2)
    beta = write_project(tmp_path / "beta", name="beta", sales_rows=5)
    (beta / "sources" / "files.yaml").write_text(FILES_SOURCES.split("  - table: signups")[0])  # only sales
    alpha_defs, beta_defs = definitions(alpha), definitions(beta)
    for defs in (alpha_defs, beta_defs):
        run = defs.get_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("sales")]
        )
        assert run.success
    alpha_run = alpha_defs.get_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("prices")]
    )
    assert alpha_run.success

    alpha_config, beta_config = project_config(alpha), project_config(beta)
    assert lakebed.read_table("sales", config=alpha_config).num_rows == 2
    assert lakebed.read_table("sales", config=beta_config).num_rows == 5
    assert Catalog(alpha_config).find("prices") is not None
    assert Catalog(beta_config).find("prices") is None
    # Nothing went to the process's own home (the current directory's, or the test's LAKEBED_HOME).
    assert not (Path.cwd() / ".lakebed").exists() and not (tmp_path / "lakebed-home").exists()


def test_component_gives_the_same_definitions(tmp_path: Path) -> None:
    project = write_project(tmp_path / "alpha")
    expected = definitions(project)
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "lake"
        folder.mkdir(parents=True)
        relative = os.path.relpath(project, folder)
        (folder / "defs.yaml").write_text(
            f"type: lakebed.dagster.LakebedProject\nattributes:\n  project: {relative}\n"
        )
        with sandbox.build_all_defs() as defs:
            assert _keys(defs) == _keys(expected) == ASSETS
            repository = defs.get_repository_def()
            assert {s.name for s in repository.sensor_defs} == {
                s.name for s in expected.get_repository_def().sensor_defs
            }
            assert repository.get_schedule_def("prices_schedule").cron_schedule == "0 4 * * *"
            resource = (defs.resources or {})["lakebed"]
            assert resource.project == str(project.resolve())


def _validate(folder: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LAKEBED_HOME"}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster-home")
    (tmp_path / "dagster-home").mkdir(exist_ok=True)
    return subprocess.run(
        [str(DAGSTER), "definitions", "validate", *(args or ("-f", "definitions.py"))],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


DEFINITIONS_PY = "import lakebed.dagster\n\ndefs = lakebed.dagster.definitions(__file__)\n"


def test_dagster_validates_a_project_definitions_file(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(SHOP, shop)
    (shop / "definitions.py").write_text(DEFINITIONS_PY)
    fresh = write_project(tmp_path / "fresh")
    (fresh / "definitions.py").write_text(DEFINITIONS_PY)
    for folder in (shop, fresh):
        out = _validate(folder, tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Validation successful" in out.stdout + out.stderr

    # The same through [tool.dagster] in the project's pyproject.toml (what `dagster dev` reads there).
    (fresh / "pyproject.toml").write_text('[tool.dagster]\npython_file = "definitions.py"\n')
    out = _validate(fresh, tmp_path, "--log-level", "info")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed validation" in out.stdout + out.stderr

    # A broken project fails validation, naming the file.
    (fresh / "sources" / "files.yaml").write_text("sources:\n  - {table: sales, kind: files}\n")
    out = _validate(fresh, tmp_path)
    assert out.returncode != 0
    assert "files.yaml" in out.stdout + out.stderr
