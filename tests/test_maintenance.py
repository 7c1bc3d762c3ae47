from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, Transaction

import lakebed
from lakebed.pipelines.maintenance import maintain


def test_compaction_keeps_rows_and_exactly_once_offsets() -> None:
    for offset in range(12):
        result = lakebed.commit(
            "events",
            pa.table({"x": [offset]}),
            app_transactions=[Transaction(app_id="events:t:0", version=offset)],
        )
    before = lakebed.read_table("events").sort_by("x")
    outcome = maintain("events", retention=dt.timedelta(days=7))
    delta = DeltaTable(result.uri)
    assert outcome.files_removed == 12 and outcome.files_added == 1
    assert len(delta.file_uris()) == 1
    assert delta.transaction_version("events:t:0") == 11
    assert lakebed.read_table("events").sort_by("x").equals(before)
    # Within the retention window nothing is vacuumed: time travel still works.
    assert outcome.vacuumed_files == 0
    assert lakebed.read_table("events", version=3).num_rows == 4
    log = Path(result.uri) / "_delta_log"
    assert any(p.name.endswith(".checkpoint.parquet") for p in log.iterdir())
