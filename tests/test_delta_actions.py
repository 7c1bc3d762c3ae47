"""The Delta actions lakebed encodes (``pipelines/tiering/actions.py``) against what delta-rs records.

For the same rows, ``write_deltalake`` writes a table (the reference) and lakebed commits the same data
files into a second one, as a move does: copied byte for byte with the statistics delta-rs recorded
(``stats_of``), or written anew from the rows with statistics computed from them (``stats_for``). The two
logs are then compared: record counts, minimum and maximum values, null counts, partition values, sizes
and paths, both as the log's JSON and as delta-rs reads them back (``get_add_actions(flatten=True)``).
Where lakebed's rule differs from delta-rs's (timestamp maxima rounded up, strings whole, no decimal
bounds), the rule itself is asserted.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import AddAction, create_table_with_add_actions
from polars.testing import assert_frame_equal

from lakebed.config import LakebedConfig
from lakebed.pipelines.tiering.actions import (
    add_action,
    file_path,
    new_path,
    partition_columns,
    remove_action,
    stats_for,
    stats_of,
)
from lakebed.pipelines.tiering.files import parquet_bytes
from lakebed.pipelines.tiering.store import cold_files

UTC = dt.UTC
NEW_YORK = "America/New_York"
BASE = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TIMESTAMPS = ("ts_ms", "ts_us", "ts_ns", "ts_ntz", "ts_ny")
LONG = "x" * 70  # longer than the 64 bytes delta-rs keeps of a string statistic
REGIONS = ["a b", "x/y", "k=v", "50%", "plain", None]


def batch(seed: int, size: int = 40) -> pa.Table:
    """``size`` rows of every type the statistics handle, with nulls, NaN, infinities and sub-millisecond
    timestamps; ``seed`` shifts the values so each batch (each file) has its own bounds."""
    ids = [seed * 1000 + i for i in range(size)]

    def nulled(values: list[Any], every: int = 7) -> list[Any]:
        return [None if i % every == 3 else v for i, v in enumerate(values)]

    moments = [BASE + dt.timedelta(days=seed, minutes=i, microseconds=(i * 7919) % 1_000_000) for i in ids]
    nanos = [int(m.timestamp()) * 1_000_000_000 + m.microsecond * 1000 + 789 for m in moments]
    floats: list[Any] = [i / 8 for i in ids]
    floats[5] = math.nan
    floats[6] = None
    if seed == 2:
        floats[7] = math.inf  # a file whose largest value is not JSON
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "small": pa.array(nulled([i % 100 - 50 for i in ids]), pa.int8()),
            "count": pa.array(nulled([i * 3 for i in ids], 5), pa.int32()),
            "ratio": pa.array(floats, pa.float64()),
            "ratio32": pa.array(nulled([i / 4 for i in ids]), pa.float32()),
            "all_nan": pa.array([math.nan] * size, pa.float64()),
            "name": pa.array(nulled([f"name-{i:06d}" for i in ids])),
            "long_name": pa.array(nulled([f"{LONG}{i}" for i in ids])),
            "unicode": pa.array(nulled([f"é{i}😀" * 12 for i in ids])),
            "ts_ms": pa.array(nulled(moments), pa.timestamp("us", tz="UTC")).cast(
                pa.timestamp("ms", tz="UTC"), safe=False
            ),
            "ts_us": pa.array(nulled(moments), pa.timestamp("us", tz="UTC")),
            "ts_ns": pa.array(nulled(nanos), pa.timestamp("ns", tz="UTC")),
            "ts_ntz": pa.array(nulled([m.replace(tzinfo=None) for m in moments]), pa.timestamp("us")),
            "ts_ny": pa.array(nulled(moments), pa.timestamp("us", tz=NEW_YORK)),
            "day": pa.array(nulled([m.date() for m in moments]), pa.date32()),
            "amount": pa.array(nulled([decimal.Decimal(i) / 100 for i in ids]), pa.decimal128(12, 2)),
            "flag": pa.array(nulled([i % 3 == 0 for i in ids], 4)),
        }
    )


def partitioned_batch(seed: int, size: int = 36) -> pa.Table:
    """Rows spread over partitions whose values need escaping (spaces, slashes, ``=``, ``%``) or are null."""
    ids = [seed * 1000 + i for i in range(size)]
    hours = [BASE + dt.timedelta(hours=i % 2, microseconds=123_456 * (i % 2)) for i in ids]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "region": pa.array([REGIONS[i % len(REGIONS)] for i in ids]),
            "day": pa.array([None if i % 5 == 4 else dt.date(2025, 1, 1 + i % 3) for i in ids], pa.date32()),
            "hour": pa.array(
                [None if i % 9 == 8 else h for i, h in zip(ids, hours, strict=True)],
                pa.timestamp("us", tz="UTC"),
            ),
            "flag": pa.array([None if i % 4 == 2 else i % 2 == 0 for i in ids]),
            "value": pa.array([i / 3 for i in ids], pa.float64()),
        }
    )


PARTITIONS = ["region", "day", "hour", "flag"]


def reference(root: Path, batches: list[pa.Table], partition_by: list[str] | None = None) -> DeltaTable:
    """The rows as ``write_deltalake`` writes them: one append per batch."""
    for rows in batches:
        write_deltalake(str(root), rows, mode="append", partition_by=partition_by)
    return DeltaTable(str(root))


def file_actions(table: DeltaTable) -> list[dict[str, Any]]:
    """The table's files as ``get_add_actions(flatten=False)`` gives them (what a move reads)."""
    return list(pa.table(table.get_add_actions(flatten=False)).to_pylist())


def copied(source: DeltaTable, root: Path, config: LakebedConfig) -> tuple[DeltaTable, dict[str, str]]:
    """The source's files copied byte for byte into a new table by lakebed's store, committed with add
    actions lakebed encodes from delta-rs's statistics (a move's whole files); also which file each one
    copies (as :func:`rewritten`)."""
    store = cold_files(str(root), config)
    source_root = Path(source.table_uri.removeprefix("file://"))
    adds, origin = [], {}
    for action in file_actions(source):
        path = file_path(action["path"])
        done = store.copy(source_root / path, path, int(action["num_records"]))
        adds.append(add_action(path, done.size, action, stats_of(action)))
        origin[path] = action["path"]
    return commit(source, root, adds), origin


def rewritten(source: DeltaTable, root: Path, config: LakebedConfig) -> tuple[DeltaTable, dict[str, str]]:
    """The source's rows written anew, file by file, into a new table by lakebed, with statistics computed
    from the rows (a move's straddling files); also which new file holds which source file's rows."""
    store = cold_files(str(root), config)
    source_root = Path(source.table_uri.removeprefix("file://"))
    adds, origin = [], {}
    for action in file_actions(source):
        rows = pq.read_table(source_root / file_path(action["path"]))
        for name in partition_columns(source):  # data files hold no partition columns
            rows = rows.drop_columns([name]) if name in rows.column_names else rows
        path = new_path(action)
        done = store.write(parquet_bytes(rows), path, rows.num_rows)
        adds.append(add_action(path, done.size, action, stats_for(rows)))
        origin[path] = action["path"]
    return commit(source, root, adds), origin


def commit(source: DeltaTable, root: Path, adds: list[AddAction]) -> DeltaTable:
    create_table_with_add_actions(
        str(root), source.schema(), adds, mode="error", partition_by=partition_columns(source) or None
    )
    return DeltaTable(str(root))


def log_adds(root: Path) -> dict[str, dict[str, Any]]:
    """The add actions in a table's log by path (as the log has it), with their statistics parsed."""
    adds = {}
    for commit_file in sorted((root / "_delta_log").glob("*.json")):
        for line in commit_file.read_text().splitlines():
            entry = json.loads(line)
            if "add" in entry:
                add = entry["add"]
                add["stats"] = json.loads(add["stats"]) if add.get("stats") else None
                adds[add["path"]] = add
    return adds


def flattened(table: DeltaTable) -> dict[str, dict[str, Any]]:
    """What delta-rs reads back from a table's log, per file (path as in the log)."""
    rows = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    return {row["path"]: row for row in rows}


def bounds(rows: pa.Table, column: str) -> tuple[Any, Any]:
    values = pc.min_max(rows.column(column)).as_py()
    return values["min"], values["max"]


def millis_down(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def millis_up(value: dt.datetime) -> dt.datetime:
    down = millis_down(value)
    return down if down == value else down + dt.timedelta(milliseconds=1)


def instant(text: str) -> dt.datetime:
    """A timestamp statistic from the log as a UTC time without zone (ISO, ``Z`` or none)."""
    return as_utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00"))).replace(tzinfo=None)


def same_rows(ours: DeltaTable, theirs: DeltaTable) -> None:
    """Both tables hold the same rows (NaN equal to NaN)."""
    assert_frame_equal(
        pl.from_arrow(ours.to_pyarrow_table().sort_by("id")),
        pl.from_arrow(theirs.to_pyarrow_table().sort_by("id")),
    )


def as_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC) if value.tzinfo else value


# --- files copied byte for byte: delta-rs's statistics, re-encoded --------------------------------


@pytest.fixture
def source(tmp_path: Path) -> DeltaTable:
    return reference(tmp_path / "reference", [batch(seed) for seed in range(3)])


@pytest.fixture
def partitioned(tmp_path: Path) -> DeltaTable:
    return reference(tmp_path / "partitioned", [partitioned_batch(seed) for seed in range(2)], PARTITIONS)


def test_copies_record_what_delta_rs_recorded(
    source: DeltaTable, tmp_path: Path, config: LakebedConfig
) -> None:
    """Whole files: the log lakebed writes holds delta-rs's own statistics, sizes and paths, except the
    decimal bounds lakebed does not encode; delta-rs reads back the same values."""
    table, _ = copied(source, tmp_path / "copy", config)
    want, got = log_adds(Path(source.table_uri.removeprefix("file://"))), log_adds(tmp_path / "copy")
    assert sorted(got) == sorted(want) and len(got) == 3
    for path, add in got.items():
        expected = want[path]
        assert add["size"] == expected["size"] == (tmp_path / "copy" / file_path(path)).stat().st_size
        assert add["partitionValues"] == expected["partitionValues"] == {}
        assert add["stats"]["numRecords"] == expected["stats"]["numRecords"] == 40
        assert add["stats"]["nullCount"] == expected["stats"]["nullCount"]
        assert add["dataChange"] is True
        for kind in ("minValues", "maxValues"):
            assert "amount" in expected["stats"][kind] and "amount" not in add["stats"][kind]
            # delta-rs writes null for a bound that is not JSON (NaN, infinities); lakebed leaves it out
            kept = {k: v for k, v in expected["stats"][kind].items() if v is not None and k != "amount"}
            assert set(add["stats"][kind]) == set(kept)
            for column, value in kept.items():
                if column in TIMESTAMPS:  # the same instant (delta-rs leaves out zero milliseconds)
                    assert instant(add["stats"][kind][column]) == instant(value), (kind, column)
                else:
                    assert add["stats"][kind][column] == value, (kind, column)
    back, reference_back = flattened(table), flattened(source)
    for path, row in back.items():
        for key, value in reference_back[path].items():
            if key in ("min.amount", "max.amount"):
                assert value is not None and row[key] is None  # no decimal bounds
            elif key != "modification_time":
                assert row[key] == value, key
    same_rows(table, source)


def test_copied_timestamp_and_float_bounds(source: DeltaTable, tmp_path: Path, config: LakebedConfig) -> None:
    """Timestamps, with and without a zone and in every unit, keep delta-rs's millisecond bounds exactly;
    NaN is left out of float bounds as delta-rs leaves it out, and a file of NaN only has none."""
    table, _ = copied(source, tmp_path / "copy", config)
    back, reference_back = flattened(table), flattened(source)
    for path, row in back.items():
        for column in TIMESTAMPS:
            for kind in ("min", "max"):
                value = row[f"{kind}.{column}"]
                assert value is not None and value == reference_back[path][f"{kind}.{column}"], (kind, column)
                assert value.microsecond % 1000 == 0
        assert row["min.all_nan"] is None and row["max.all_nan"] is None
        assert row["null_count.all_nan"] == 0
        assert row["min.ratio"] is not None and not math.isnan(row["min.ratio"])
    infinite = [row for row in back.values() if reference_back[row["path"]]["max.ratio"] is None]
    assert len(infinite) == 1 and infinite[0]["max.ratio"] is None and infinite[0]["min.ratio"] is not None


# --- files written anew: statistics from the rows ---------------------------------------------------


def test_rewritten_files_match_delta_rs_statistics(
    source: DeltaTable, tmp_path: Path, config: LakebedConfig
) -> None:
    """New files from the same rows: record counts, null counts, and the bounds of numbers, dates and
    booleans equal delta-rs's; sizes are those of the files written."""
    table, origin = rewritten(source, tmp_path / "rewrite", config)
    want, got = log_adds(Path(source.table_uri.removeprefix("file://"))), log_adds(tmp_path / "rewrite")
    assert len(got) == 3
    for path, add in got.items():
        expected = want[origin[file_path(path)]]
        assert add["size"] == (tmp_path / "rewrite" / file_path(path)).stat().st_size
        assert add["stats"]["numRecords"] == expected["stats"]["numRecords"]
        assert add["stats"]["nullCount"] == expected["stats"]["nullCount"]
        for kind in ("minValues", "maxValues"):
            for column in ("id", "small", "count", "ratio", "ratio32", "day", "flag"):
                if expected["stats"][kind].get(column) is None:
                    assert column not in add["stats"][kind], (kind, column)  # NaN only, or infinite
                else:
                    assert add["stats"][kind][column] == expected["stats"][kind][column], (kind, column)
            assert "all_nan" not in add["stats"][kind] and "amount" not in add["stats"][kind]
    same_rows(table, source)


def test_rewritten_timestamps_are_rounded_outwards(
    source: DeltaTable, tmp_path: Path, config: LakebedConfig
) -> None:
    """Lakebed's rule: timestamp bounds to the millisecond, the minimum rounded down (as delta-rs) and the
    maximum up (delta-rs truncates it), so every value lies within them; delta-rs reads them back."""
    table, origin = rewritten(source, tmp_path / "rewrite", config)
    root = Path(table.table_uri.removeprefix("file://"))
    reference_back = flattened(source)
    rounded_up = 0
    for path, row in flattened(table).items():
        rows = pq.read_table(root / file_path(path))
        theirs = reference_back[origin[file_path(path)]]
        for column in TIMESTAMPS:
            low, high = (as_utc(v) for v in bounds(rows, column))
            got_low, got_high = as_utc(row[f"min.{column}"]), as_utc(row[f"max.{column}"])
            assert got_low == millis_down(low) == as_utc(theirs[f"min.{column}"]), column
            assert got_high == millis_up(high) and got_low <= low <= high <= got_high, column
            assert as_utc(theirs[f"max.{column}"]) == millis_down(high), column
            rounded_up += got_high != millis_down(high)
    assert rounded_up >= 3  # sub-millisecond maxima were there to round


def test_rewritten_strings_are_recorded_whole(
    source: DeltaTable, tmp_path: Path, config: LakebedConfig
) -> None:
    """Lakebed's rule: string bounds are the values themselves; delta-rs keeps 64 bytes (the maximum
    rounded up), so its bounds hold lakebed's."""
    table, origin = rewritten(source, tmp_path / "rewrite", config)
    root = Path(table.table_uri.removeprefix("file://"))
    reference_back = flattened(source)
    for path, row in flattened(table).items():
        rows = pq.read_table(root / file_path(path))
        theirs = reference_back[origin[file_path(path)]]
        for column in ("name", "long_name", "unicode"):
            low, high = bounds(rows, column)
            assert (row[f"min.{column}"], row[f"max.{column}"]) == (low, high), column
            assert theirs[f"min.{column}"] <= low and high <= theirs[f"max.{column}"], column
        assert len(row["max.long_name"].encode()) > 64 and row["max.long_name"] != theirs["max.long_name"]
        assert row["min.name"] == theirs["min.name"] and row["max.name"] == theirs["max.name"]


# --- partitioned tables: partition values, escaped paths, removals ----------------------------------


@pytest.mark.parametrize("how", ["copied", "rewritten"])
def test_partition_values_and_paths(
    partitioned: DeltaTable, tmp_path: Path, config: LakebedConfig, how: str
) -> None:
    """Partition values (text, null for a null partition) as delta-rs writes them, files in the folders
    delta-rs made for them (escaped spaces, slashes, ``=`` and ``%``), and the rows read back per
    partition; statistics of the data columns as delta-rs's."""
    root = tmp_path / how
    table, origin = (copied if how == "copied" else rewritten)(partitioned, root, config)
    want = log_adds(Path(partitioned.table_uri.removeprefix("file://")))
    got = log_adds(root)
    assert len(got) == len(want) > len(REGIONS)
    for path, add in got.items():
        expected = want[origin[file_path(path)]]
        assert path.rsplit("/", 1)[0] == expected["path"].rsplit("/", 1)[0]  # the partition folder, as logged
        assert add["partitionValues"] == expected["partitionValues"]
        assert (root / file_path(path)).is_file()
        assert add["size"] == (root / file_path(path)).stat().st_size
        if how == "copied":
            assert path == expected["path"] and add["size"] == expected["size"]
        assert add["stats"]["numRecords"] == expected["stats"]["numRecords"]
        assert add["stats"]["nullCount"] == expected["stats"]["nullCount"]
        for kind in ("minValues", "maxValues"):
            assert add["stats"][kind] == expected["stats"][kind]
    values = {json.dumps(add["partitionValues"], sort_keys=True) for add in got.values()}
    assert any('"region": null' in v for v in values) and any('"day": null' in v for v in values)
    assert any('"hour": null' in v for v in values) and any('"flag": null' in v for v in values)
    assert any('"hour": "2025-03-01 13:00:00.123456"' in v for v in values)
    assert any('"flag": "true"' in v for v in values) and any('"flag": "false"' in v for v in values)
    assert {json.loads(v)["region"] for v in values} == set(REGIONS)
    same_rows(table, partitioned)
    for region in REGIONS[:-1]:  # partition pruning finds each escaped value's rows
        condition = [("region", "=", region)]
        found = table.to_pyarrow_table(filters=condition)
        assert found.num_rows == partitioned.to_pyarrow_table(filters=condition).num_rows > 0
        assert set(found.column("region").to_pylist()) == {region}


def test_removals_name_the_files_with_their_partitions(
    partitioned: DeltaTable, tmp_path: Path, config: LakebedConfig
) -> None:
    """Remove actions (the hot removal of a move) carry the path, size and partition values of the file as
    its add action had them; after them the table holds no file."""
    table, origin = copied(partitioned, tmp_path / "copy", config)
    now = int(time.time() * 1000)
    removals = [remove_action(action, now) for action in file_actions(table)]
    table.create_write_transaction(
        removals, mode="append", schema=table.schema(), partition_by=partition_columns(table)
    )
    added = log_adds(tmp_path / "copy")
    removed = {}
    for commit_file in sorted((tmp_path / "copy" / "_delta_log").glob("*.json")):
        for line in commit_file.read_text().splitlines():
            entry = json.loads(line)
            if "remove" in entry:
                removed[entry["remove"]["path"]] = entry["remove"]
    assert sorted(removed) == sorted(added) and len(removed) == len(origin)
    for path, remove in removed.items():
        assert remove["size"] == added[path]["size"]
        assert remove["partitionValues"] == added[path]["partitionValues"]
        assert remove["deletionTimestamp"] == now and remove["dataChange"] is True
    table.update_incremental()
    assert table.to_pyarrow_table().num_rows == 0 and not file_actions(table)
