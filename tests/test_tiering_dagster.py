"""Tiering in Dagster: the quota sensor asks for a move, the job moves, asset metadata shows the tiers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

import lakebed
from lakebed.assets.definitions import defs
from lakebed.assets.metadata import table_metadata
from lakebed.assets.resources import LakebedResource
from lakebed.assets.tiering import hot_tier_quota_sensor, tier_move_job
from lakebed.config import get_config
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import commit
from lakebed.pipelines.tiering import status
from lakebed.schemas.contract import TableContract

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _events(days: int) -> pa.Table:
    return pa.table(
        {
            "id": list(range(days * 50)),
            "ts": pa.array(
                [T0 + dt.timedelta(days=i // 50, minutes=i % 50) for i in range(days * 50)],
                pa.timestamp("us", tz="UTC"),
            ),
            "v": [float(i) for i in range(days * 50)],
        }
    )


def test_quota_sensor_and_move_job_and_tier_metadata() -> None:
    contract = TableContract.from_dict(
        {
            "name": "clicks",
            "columns": [
                {"name": "id", "type": "int64"},
                {"name": "ts", "type": "timestamp"},
                {"name": "v", "type": "float64"},
            ],
            "tiering": {"column": "ts", "hot_bytes": 1, "grace": "0s"},  # any data is over this quota
        }
    )
    for day in range(4):  # one file per day, so the quota can move the oldest files
        commit(
            "clicks",
            _events(1).set_column(
                1, "ts", pa.array([T0 + dt.timedelta(days=day)] * 50, pa.timestamp("us", tz="UTC"))
            ),
            contract=contract,
        )
    before = lakebed.read_table("clicks").num_rows
    instance = dg.DagsterInstance.ephemeral()
    resource = LakebedResource()
    with dg.build_sensor_context(instance=instance, resources={"lakebed": resource}) as context:
        result = hot_tier_quota_sensor(context)
    assert isinstance(result, dg.SensorResult) and len(result.run_requests or []) == 1
    request = (result.run_requests or [])[0]
    assert request.tags["lakebed/table"] == "clicks"
    run = tier_move_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources={"lakebed": resource}
    )
    assert run.success
    state = status("clicks")
    assert state.cold_rows > 0 and state.hot_rows + state.cold_rows == before == 200
    assert lakebed.read_table("clicks").num_rows == before
    # The job vacuumed after the move (a grace of 0s): the hot folder holds only the current files.
    hot = DeltaTable(Catalog(get_config()).get("clicks").uri)
    root = Path(hot.table_uri.removeprefix("file://"))
    on_disk = {p.relative_to(root) for p in root.rglob("*.parquet")}
    assert on_disk == {Path(uri.removeprefix("file://")).relative_to(root) for uri in hot.file_uris()}
    assert len(on_disk) < 4
    metadata, _ = table_metadata("clicks", get_config())
    assert metadata["lakebed/tier/cold_rows"] == state.cold_rows
    assert metadata["lakebed/tier/watermark"] == str(state.watermark)


def test_definitions_schedule_the_tier_moves() -> None:
    repository = defs.get_repository_def()
    assert repository.get_schedule_def("tier_move_schedule").job_name == "tier_move_job"
    assert repository.get_sensor_def("hot_tier_quota_sensor").job_name == "tier_move_job"
