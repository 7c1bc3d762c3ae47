"""The Dagster layer on the shop example: the Definitions object, real materialisations and the landing
sensor (tests/test_dagster_project.py builds definitions from a project written in the test)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

import lakebed
from lakebed.assets.definitions import defs
from lakebed.assets.ingest import landing_sensor
from lakebed.assets.resources import LakebedResource
from lakebed.config import get_config
from lakebed.dagster import project_assets
from lakebed.examples import SHOP
from lakebed.pipelines.catalog import Catalog
from lakebed.schemas.project import load_project

SOURCE_ASSETS = [a for a in project_assets(load_project(SHOP)) if a.group_names_by_key[a.key] == "sources"]


def test_definitions_hold_every_asset_sensor_and_job() -> None:
    repository = defs.get_repository_def()
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert keys == {
        "customers",
        "orders",
        "products",
        "web_events",
        "documents",  # the shop's files and unstructured sources
        "documents__chunks",  # the documents' text, embedded
        "shop_events",  # raw events from Kafka
        "fv_customer_activity_v1",
        "online_customer_activity_v1",  # feature views, offline and online
        "fv_customer_spend_fast_v1",
        "online_customer_spend_fast_v1",
        "orders_clean",
        "daily_revenue",  # models
        "fv_customer_orders_v1",
        "online_customer_orders_v1",  # a feature view reading a model's table
    }
    upstream = repository.asset_graph.get(dg.AssetKey("daily_revenue")).parent_keys
    assert {k.to_user_string() for k in upstream} == {"orders_clean", "products"}
    assert {s.name for s in repository.sensor_defs} == {
        "orders_files_sensor",  # orders: run.sensor
        "landing_sensor",
        "kafka_offsets_sensor",
        "hot_tier_quota_sensor",
    }
    assert {s.name for s in repository.schedule_defs} == {
        "web_events_schedule",  # web_events: run.schedule
        "stream_maintenance_schedule",
        "tier_move_schedule",
    }
    assert {
        "web_events_job",
        "features_job",
        "landing_ingest_job",
        "stream_maintenance_job",
        "tier_move_job",
    } <= set(repository.job_names)
    for asset in SOURCE_ASSETS:
        assert asset.code_versions_by_key[asset.key] == "1"
    assert [a.key.to_user_string() for a in SOURCE_ASSETS] == [
        "customers",
        "products",
        "orders",
        "web_events",
        "documents",
    ]


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def test_materialize_sample_assets(instance: dg.DagsterInstance) -> None:
    result = dg.materialize(SOURCE_ASSETS, instance=instance, resources={"lakebed": LakebedResource()})
    assert result.success
    materializations = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert set(materializations) == {"customers", "orders", "products", "web_events", "documents"}

    orders = materializations["orders"].materialization
    metadata = orders.metadata
    assert metadata["dagster/row_count"].value == lakebed.read_table("orders").num_rows > 10_000
    assert metadata["dagster/table_name"].value == "orders"
    assert metadata["dagster/uri"].value == Catalog().get("orders").uri
    columns = {c.name: c.type for c in metadata["dagster/column_schema"].value.columns}
    assert columns["unit_price"] == "decimal(10,2)" and columns["ordered_at"] == "timestamp"
    assert orders.tags["dagster/data_version"] == str(metadata["lakebed/delta_version"].value)

    # Every Delta commit names the Dagster run that made it.
    history = DeltaTable(Catalog().get("orders").uri).history(1)[0]
    assert history["lakebed.tag.dagster.run_id"] == result.run_id

    # A second materialisation ingests nothing new: same data version.
    again = dg.materialize(
        SOURCE_ASSETS, selection=["orders"], instance=instance, resources={"lakebed": LakebedResource()}
    )
    event = again.get_asset_materialization_events()[0].materialization
    assert event.tags["dagster/data_version"] == orders.tags["dagster/data_version"]


def test_landing_sensor_requests_runs_for_new_files(instance: dg.DagsterInstance) -> None:
    landing = get_config().landing_root / "signups"
    landing.mkdir(parents=True)
    (landing / "day1.csv").write_text("id,email\n1,a@example.com\n2,b@example.com\n")
    resources = {"lakebed": LakebedResource()}

    context = dg.build_sensor_context(instance=instance, resources=resources)
    first = landing_sensor(context)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.run_config["ops"]["ingest_landed_files"]["config"]["table"] == "signups"

    # Nothing new: no run. A new file: a run for that file only.
    context = dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
    assert landing_sensor(context).run_requests == []
    (landing / "day2.csv").write_text("id,email\n3,c@example.com\n")
    context = dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
    second = landing_sensor(context)
    files = second.run_requests[0].run_config["ops"]["ingest_landed_files"]["config"]["files"]
    assert [Path(f).name for f in files] == ["day2.csv"]

    # The launched job really ingests.
    job = defs.get_job_def("landing_ingest_job")
    outcome = job.execute_in_process(run_config=request.run_config, instance=instance, resources=resources)
    assert outcome.success
    assert lakebed.read_table("signups").num_rows == 2
    assert json.loads(first.cursor)
