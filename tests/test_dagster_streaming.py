"""Dagster wiring of the stream: the offsets sensor and real materialisations over a real broker."""

from __future__ import annotations

import json

import dagster as dg
import pytest

import lakebed
from lakebed.assets.features import feature_assets
from lakebed.assets.resources import LakebedResource
from lakebed.assets.streaming import kafka_offsets_sensor, stream_assets
from lakebed.config import reset_config
from lakebed.examples import SHOP
from lakebed.pipelines.stream.kafka import create_topic, produce_records
from lakebed.samples import shop_events
from lakebed.schemas.project import load_project

pytest_plugins = ["streaming_fixtures"]

TOPIC = "shop_events"  # the topic of the shop example's stream source, which its feature views read
PROJECT = load_project(SHOP)
offsets_sensor = kafka_offsets_sensor(PROJECT)


@pytest.fixture
def shop_topic(kafka_env: str) -> str:
    reset_config()
    # The shipped feature views name this topic; each test has its own lakebed home, so the raw table
    # starts empty whatever the session broker's topic already holds.
    create_topic(kafka_env, TOPIC, partitions=2)
    return kafka_env


def test_offsets_sensor_and_available_now_materialisation(shop_topic: str) -> None:
    resources = {"lakebed": LakebedResource()}
    with dg.instance_for_test() as instance:
        first = offsets_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        before = json.loads(first.cursor)[TOPIC]

        produce_records(shop_topic, TOPIC, shop_events(400), key="customer_id")
        moved = offsets_sensor(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
        )
        assert len(moved.run_requests) == 1
        assert moved.run_requests[0].asset_selection == [dg.AssetKey(TOPIC)]
        after = json.loads(moved.cursor)[TOPIC]
        assert sum(after.values()) - sum(before.values()) == 400
        # Nothing new: no run.
        idle = offsets_sensor(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=moved.cursor)
        )
        assert idle.run_requests == []

        on_stream = {k for k, v in PROJECT.feature_views.items() if v.source.table == TOPIC}
        features = [
            a for a in feature_assets(PROJECT) if a.metadata_by_key[a.key]["lakebed/view"] in on_stream
        ]
        assets = [*stream_assets(PROJECT), *features]
        result = dg.materialize(assets, instance=instance, resources=resources)
        assert result.success
        events = lakebed.read_table(TOPIC)
        assert events.num_rows == sum(after.values())  # every record on the topic, exactly once
        raw = next(
            e.materialization
            for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey(TOPIC)
        )
        assert raw.metadata["dagster/row_count"].value == events.num_rows
        offline = lakebed.read_table("fv_customer_activity_v1")
        assert offline.num_rows > 0
        assert set(offline.column("customer_id").to_pylist()) <= set(events.column("customer_id").to_pylist())
