"""The one write path: modes, drift policy, commit metadata, streaming input, reads by name."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, Transaction

import lakebed
from lakebed.errors import InvalidTableNameError, SchemaDriftError, TableNotFoundError
from lakebed.pipelines.arrays import last_per_key
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import RunContext, commit
from lakebed.schemas.contract import TableContract


def _people(ids: list[int], names: list[str]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "name": names})


def test_append_overwrite_merge() -> None:
    first = commit("people", _people([1, 2], ["ada", "alan"]))
    assert (first.version, first.rows) == (0, 2)
    commit("people", _people([3], ["grace"]))
    assert lakebed.read_table("people").num_rows == 3

    merged = commit("people", _people([2, 4, 4], ["ALAN", "edsger", "EDSGER"]), mode="merge", keys=["id"])
    rows = {r["id"]: r["name"] for r in lakebed.read_table("people").to_pylist()}
    assert rows == {1: "ada", 2: "ALAN", 3: "grace", 4: "EDSGER"}  # last row per key wins
    assert merged.metrics["num_target_rows_updated"] == 1

    commit("people", _people([9], ["linus"]), mode="overwrite")
    assert lakebed.read_table("people").to_pylist() == [{"id": 9, "name": "linus"}]
    # Time travel still sees every earlier version.
    assert lakebed.read_table("people", version=0).num_rows == 2


def test_last_row_per_key_keeps_table_order_and_matches_nulls() -> None:
    data = pa.table({"k": [1, 2, 1, None, None, 3], "j": ["a", "a", "a", "x", "x", "b"], "v": list("uvwxyz")})
    assert last_per_key(data, ["k"]).to_pydict() == {
        "k": [2, 1, None, 3],
        "j": ["a", "a", "x", "b"],
        "v": ["v", "w", "y", "z"],
    }
    assert last_per_key(data, ["k", "j"]).column("v").to_pylist() == ["v", "w", "y", "z"]
    unique = data.slice(0, 2)
    assert last_per_key(unique, ["k"]) is unique  # nothing repeats: no copy


def test_merge_needs_keys() -> None:
    with pytest.raises(ValueError, match="key columns"):
        commit("people", _people([1], ["a"]), mode="merge")


def test_commit_metadata_points_back_to_the_run() -> None:
    run = RunContext(job="unit-test", run_id="run-42", code_version="abc123", tags={"dagster.run_id": "d-1"})
    result = commit("people", _people([1], ["ada"]), run=run)
    info = DeltaTable(result.uri).history(1)[0]
    assert info["lakebed.run_id"] == "run-42"
    assert info["lakebed.job"] == "unit-test"
    assert info["lakebed.code_version"] == "abc123"
    assert info["lakebed.tag.dagster.run_id"] == "d-1"
    assert int(info["version"]) == result.version


def test_app_transaction_commits_with_data() -> None:
    result = commit(
        "events", _people([1], ["a"]), app_transactions=[Transaction(app_id="events:t:0", version=41)]
    )
    assert DeltaTable(result.uri).transaction_version("events:t:0") == 41


def test_evolve_adds_nullable_columns() -> None:
    commit("people", _people([1], ["ada"]))
    result = commit("people", pa.table({"id": [2], "name": ["alan"], "born": [1912]}))
    assert result.added_columns == ("born",)
    table = lakebed.read_table("people")
    assert table.schema.field("born").nullable
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "name": "ada", "born": None},
        {"id": 2, "name": "alan", "born": 1912},
    ]


def test_missing_columns_are_filled_with_nulls() -> None:
    commit("people", _people([1], ["ada"]))
    commit("people", pa.table({"id": [2]}))
    assert {r["id"]: r["name"] for r in lakebed.read_table("people").to_pylist()} == {1: "ada", 2: None}


def test_strict_rejects_new_columns() -> None:
    commit("people", _people([1], ["ada"]), drift="strict")
    with pytest.raises(SchemaDriftError, match="born") as excinfo:
        commit("people", pa.table({"id": [2], "name": ["x"], "born": [1]}), drift="strict")
    assert excinfo.value.columns == ["born"]
    assert lakebed.read_table("people").num_rows == 1  # nothing half-written


def test_type_change_is_an_error_naming_the_column() -> None:
    commit("people", _people([1], ["ada"]))
    with pytest.raises(SchemaDriftError, match="'id'") as excinfo:
        commit("people", pa.table({"id": ["not-a-number"], "name": ["x"]}))
    assert excinfo.value.columns == ["id"]


def test_lossless_widening_is_applied() -> None:
    commit("people", _people([1], ["ada"]))
    commit("people", pa.table({"id": pa.array([2], pa.int32()), "name": ["alan"]}))
    assert lakebed.read_table("people").schema.field("id").type == pa.int64()


def test_contract_fixes_types_keys_and_policy() -> None:
    contract = TableContract.from_dict(
        {
            "name": "accounts",
            "keys": ["account_id"],
            "drift": "strict",
            "columns": [
                {"name": "account_id", "type": "int64", "nullable": False},
                {"name": "balance", "type": "decimal(12,2)"},
            ],
        }
    )
    data = pa.table({"account_id": [1, 2], "balance": pa.array([1, 2], pa.int32())})
    with pytest.raises(SchemaDriftError, match="balance"):
        commit("accounts", data, contract=contract)
    data = pa.table({"account_id": [1, 1], "balance": pa.array(["1.50", "2.50"]).cast(pa.decimal128(12, 2))})
    commit("accounts", data, contract=contract, mode="merge")
    table = lakebed.read_table("accounts")
    assert table.schema.field("balance").type == pa.decimal128(12, 2)
    assert table.num_rows == 1
    assert Catalog().get("accounts").contract == contract


def test_record_batch_reader_streams() -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    produced = []

    def batches():
        for start in range(0, 50_000, 10_000):
            produced.append(start)
            yield pa.record_batch(
                [pa.array(range(start, start + 10_000)), pa.array(["x"] * 10_000)], schema=schema
            )

    result = commit("big", pa.RecordBatchReader.from_batches(schema, batches()))
    assert result.rows == 50_000 and len(produced) == 5
    assert lakebed.sql("SELECT count(*) AS n, sum(id) AS s FROM big").to_pylist() == [
        {"n": 50_000, "s": sum(range(50_000))}
    ]


def test_stream_failure_leaves_table_untouched() -> None:
    commit("people", _people([1], ["ada"]))
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])

    def failing():
        yield pa.record_batch([pa.array([2]), pa.array(["x"])], schema=schema)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        commit("people", pa.RecordBatchReader.from_batches(schema, failing()))
    assert lakebed.read_table("people").num_rows == 1
    assert DeltaTable(Catalog().get("people").uri).version() == 0


def test_empty_append_makes_no_commit() -> None:
    commit("people", _people([1], ["ada"]))
    result = commit("people", _people([], []))
    assert result.version is None and result.rows == 0
    assert DeltaTable(result.uri).version() == 0


def test_invalid_table_names() -> None:
    for name in ("Bad", "1abc", "a-b", "", "../etc", "x" * 200):
        with pytest.raises(InvalidTableNameError):
            commit(name, _people([1], ["a"]))


def test_reads_by_name_version_and_time() -> None:
    commit("people", _people([1], ["ada"]))
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    commit("people", _people([2], ["alan"]))
    assert lakebed.read_table("people").num_rows == 2
    assert lakebed.read_table("people", version=0).num_rows == 1
    assert lakebed.read_table("people", as_of=between).num_rows == 1
    assert lakebed.read_table("people", as_of=between.isoformat()).num_rows == 1
    frame = lakebed.scan_table("people").filter(pl.col("id") == 2).collect()
    assert frame.to_dicts() == [{"id": 2, "name": "alan"}]
    with pytest.raises(TableNotFoundError, match="nope"):
        lakebed.read_table("nope")
    with pytest.raises(TableNotFoundError, match="version 7"):
        lakebed.read_table("people", version=7)


def test_sql_joins_tables_by_name() -> None:
    commit("people", _people([1, 2], ["ada", "alan"]))
    commit("visits", pa.table({"id": [1, 1, 2], "page": ["/", "/a", "/"]}))
    result = lakebed.sql(
        "SELECT name, count(*) AS n FROM people JOIN visits USING (id) GROUP BY name ORDER BY name"
    )
    assert result.to_pylist() == [{"name": "ada", "n": 2}, {"name": "alan", "n": 1}]


def test_catalog_lists_tables_with_kinds() -> None:
    commit("people", _people([1], ["a"]))
    commit("people__rejects", pa.table({"reason": ["x"]}), kind="rejects")
    kinds = {e.name: e.kind for e in Catalog().list()}
    assert kinds == {"people": "table", "people__rejects": "rejects"}
    assert json.loads(json.dumps([e.uri for e in Catalog().list()]))


def test_filters_work_after_merges() -> None:
    # delta-rs merges rewrite files with string_view columns; every reader must still filter them.
    import pyarrow.compute as pc

    commit("people", _people([1, 2], ["ada", "alan"]))
    commit("people", _people([2, 3], ["ALAN", "grace"]), mode="merge", keys=["id"])
    assert lakebed.read_table("people", filter=pc.field("name") == "grace").column("id").to_pylist() == [3]
    assert lakebed.sql("SELECT id FROM people WHERE name = 'ALAN'").to_pylist() == [{"id": 2}]
    assert lakebed.scan_table("people").filter(pl.col("name") == "ada").collect()["id"].to_list() == [1]
    assert lakebed.read_table("people").schema.field("name").type == pa.string()


@pytest.mark.parametrize("mode", ["append", "merge"])
def test_position_columns_are_delta_encoded(mode: Literal["append", "merge"]) -> None:
    """Line and offset columns are stored DELTA_BINARY_PACKED (no dictionary), other columns as default;
    the rows read back unchanged."""
    import pyarrow.parquet as pq

    rows = pa.table(
        {"id": pa.array(range(1000), pa.int64()), "_source_line": pa.array(range(2, 1002), pa.int64())}
    )
    result = commit("positions", rows, mode=mode, keys=["id"] if mode == "merge" else None)
    table = DeltaTable(result.uri)
    [path] = table.file_uris()
    encodings = {}
    group = pq.ParquetFile(path).metadata.row_group(0)
    for i in range(group.num_columns):
        encodings[group.column(i).path_in_schema] = set(group.column(i).encodings)
    assert "DELTA_BINARY_PACKED" in encodings["_source_line"]
    assert "RLE_DICTIONARY" not in encodings["_source_line"]
    assert "DELTA_BINARY_PACKED" not in encodings["id"]
    assert {group.column(i).compression for i in range(group.num_columns)} == {"SNAPPY"}
    assert table.to_pyarrow_table().sort_by("id").equals(rows)


def test_catalog_sees_other_writers_and_a_home_made_again(lakebed_home: Path) -> None:
    """The catalog's open table follows registrations made through another Catalog (another process
    would do the same through the log), from several threads at once, and a catalog removed and created
    again at the same path is read afresh, never from the old one's state."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    first, second = Catalog(), Catalog()
    assert first.find("one") is None
    commit("one", _people([1], ["a"]))
    assert second.get("one").name == "one"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: commit(f"t{i}", _people([i], ["x"])), range(8)))
    assert {e.name for e in first.list()} == {"one", *(f"t{i}" for i in range(8))}

    shutil.rmtree(lakebed_home)
    commit("two", _people([2], ["b"]))
    assert [e.name for e in first.list()] == ["two"]
