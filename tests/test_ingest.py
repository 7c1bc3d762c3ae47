"""Structured batch ingest: formats, contracts, incremental manifest, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

import lakebed
from lakebed.errors import MalformedRecordError, SchemaDriftError, SourceNotFoundError, UnknownFormatError
from lakebed.examples import SHOP
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.ingest import SOURCE_COLUMN, ingest_files
from lakebed.pipelines.ingest_manifest import MANIFEST_TABLE
from lakebed.samples import STRUCTURED
from lakebed.schemas.contract import TableContract


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_json_parquet_round_trip(tmp_path: Path) -> None:
    csv = _write(tmp_path / "in" / "a.csv", "id,amount,day\n1,2.5,2025-01-01\n2,3.5,2025-01-02\n")
    jsonl = _write(tmp_path / "in" / "b.jsonl", '{"id": 3, "amount": 1.25, "day": "2025-01-03"}\n')
    pq.write_table(
        pa.table({"id": [4], "amount": [9.0], "day": pa.array([pa.scalar(20091, pa.date32()).as_py()])}),
        tmp_path / "in" / "c.parquet",
    )
    result = ingest_files(tmp_path / "in", table="sales", partition_by="day")
    assert result.rows == 4 and len(result.ingested) == 3
    table = lakebed.read_table("sales").sort_by("id")
    assert table.column("id").to_pylist() == [1, 2, 3, 4]
    assert table.column("amount").to_pylist() == [2.5, 3.5, 1.25, 9.0]
    assert table.column(SOURCE_COLUMN).to_pylist()[0] == str(csv.resolve())
    assert table.column(SOURCE_COLUMN).to_pylist()[2] == str(jsonl.resolve())
    assert DeltaTable(Catalog().get("sales").uri).metadata().partition_columns == ["day"]


def test_timestamp_partition_uses_derived_date(tmp_path: Path) -> None:
    _write(tmp_path / "e.csv", "id,ts\n1,2025-03-01T10:00:00Z\n2,2025-03-02T11:00:00Z\n")
    ingest_files(tmp_path / "e.csv", table="events", partition_by="ts")
    delta = DeltaTable(Catalog().get("events").uri)
    assert delta.metadata().partition_columns == ["ts_date"]
    assert sorted(str(d) for d in lakebed.read_table("events").column("ts_date").to_pylist()) == [
        "2025-03-01",
        "2025-03-02",
    ]


def test_gzip_csv_and_globs(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "a.csv.gz", "wt") as handle:
        handle.write("id\n1\n2\n")
    _write(tmp_path / "b.csv", "id\n3\n")
    result = ingest_files(str(tmp_path / "*.csv*"), table="ids")
    assert result.rows == 3


def test_contract_types_are_applied() -> None:
    contract = TableContract.from_yaml(SHOP / "contracts" / "orders.yaml")
    result = ingest_files(STRUCTURED / "orders" / "orders-2025-01.csv", table="orders", contract=contract)
    schema = lakebed.read_table("orders").schema
    assert schema.field("unit_price").type == pa.decimal128(10, 2)
    assert schema.field("quantity").type == pa.int32()
    assert result.rows > 1000


def test_unchanged_files_are_skipped_and_changed_files_replaced(tmp_path: Path) -> None:
    source = _write(tmp_path / "in" / "a.csv", "id,v\n1,a\n2,b\n")
    _write(tmp_path / "in" / "b.csv", "id,v\n3,c\n")
    first = ingest_files(tmp_path / "in", table="t")
    assert first.rows == 3
    again = ingest_files(tmp_path / "in", table="t")
    assert [f.status for f in again.files] == ["skipped", "skipped"]
    assert lakebed.read_table("t").num_rows == 3

    source.write_text("id,v\n1,A\n2,B\n7,G\n")
    changed = ingest_files(tmp_path / "in", table="t")
    assert [f.status for f in changed.files] == ["replaced", "skipped"]
    rows = sorted((r["id"], r["v"]) for r in lakebed.read_table("t").to_pylist())
    assert rows == [(1, "A"), (2, "B"), (3, "c"), (7, "G")]
    manifest = lakebed.read_table(MANIFEST_TABLE).to_pylist()
    assert len(manifest) == 2
    entry = next(m for m in manifest if m["path"] == str(source.resolve()))
    assert entry["rows"] == 3 and entry["size_bytes"] == source.stat().st_size


def test_changed_file_append_and_skip_policies(tmp_path: Path) -> None:
    source = _write(tmp_path / "a.csv", "id\n1\n")
    ingest_files(source, table="t")
    source.write_text("id\n1\n2\n")
    ingest_files(source, table="t", on_change="skip")
    assert lakebed.read_table("t").num_rows == 1
    ingest_files(source, table="t", on_change="append")
    assert lakebed.read_table("t").num_rows == 3


def test_manifest_recovers_from_crash_between_commits(tmp_path: Path) -> None:
    good = _write(tmp_path / "in" / "a.csv", "id\n1\n2\n")
    _write(tmp_path / "in" / "b.csv", "id\n3\nnot-a-number\n")
    with pytest.raises(MalformedRecordError):
        ingest_files(tmp_path / "in", table="t")  # a.csv committed, then b.csv failed before the manifest
    assert lakebed.read_table("t").num_rows == 2
    again = ingest_files(good, table="t")
    assert [f.status for f in again.files] == ["skipped"]  # recovered from the commit history
    assert lakebed.read_table("t").num_rows == 2


def test_overwrite_mode_replaces_table(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", "id\n1\n2\n")
    b = _write(tmp_path / "b.csv", "id\n3\n")
    ingest_files([a, b], table="t")
    ingest_files([a], table="t", mode="overwrite")
    assert sorted(lakebed.read_table("t").column("id").to_pylist()) == [1, 2]
    assert [f.status for f in ingest_files([a, b], table="t").files] == ["skipped", "ingested"]


def test_malformed_csv_row_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "id,amount\n1,2.5\n2,3.0\n3,lots\n4,1.0\n")
    with pytest.raises(MalformedRecordError) as excinfo:
        ingest_files(
            path,
            table="t",
            contract=TableContract.from_dict(
                {
                    "name": "t",
                    "columns": [{"name": "id", "type": "int64"}, {"name": "amount", "type": "float64"}],
                }
            ),
        )
    error = excinfo.value
    assert (error.path, error.line, error.column) == (str(path.resolve()), 4, "amount")
    assert "bad.csv" in str(error) and "line 4" in str(error)
    assert Catalog().find("t") is None  # nothing committed, nothing registered


def test_wrong_column_count_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(MalformedRecordError, match="line 3"):
        ingest_files(path, table="t")


def test_bad_rows_go_to_rejects_table(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "id,amount\n1,2.5\n2,oops\n3,4,extra\n4,1.0\n")
    _write(tmp_path / "b.jsonl", '{"id": 5, "amount": 1.5}\n{"id": 6,\n{"id": "seven", "amount": 2}\n')
    contract = TableContract.from_dict(
        {"name": "t", "columns": [{"name": "id", "type": "int64"}, {"name": "amount", "type": "float64"}]}
    )
    result = ingest_files(tmp_path, table="t", contract=contract, on_bad_rows="reject")
    assert result.rows == 3 and result.rejected == 4
    assert sorted(lakebed.read_table("t").column("id").to_pylist()) == [1, 4, 5]
    rejects = sorted(
        lakebed.read_table("t__rejects").to_pylist(), key=lambda r: (r["source_path"], r["line"])
    )
    assert [(Path(r["source_path"]).name, r["line"], r["column"]) for r in rejects] == [
        ("a.csv", 3, "amount"),
        ("a.csv", 4, None),
        ("b.jsonl", 2, None),
        ("b.jsonl", 3, "id"),
    ]
    assert rejects[0]["raw"] == "2,oops" and "oops" in rejects[0]["reason"]
    assert all(r["run_id"] == result.run_id for r in rejects)
    assert Catalog().get("t__rejects").kind == "rejects"


def test_json_field_not_in_inferred_schema_is_rejected_not_dropped(tmp_path: Path, monkeypatch) -> None:
    import lakebed.pipelines.formats as formats

    monkeypatch.setattr(formats, "_SLOW_CHUNK_LINES", 2)
    lines = [json.dumps({"id": i}) for i in range(4)] + [json.dumps({"id": 9, "extra": True})]
    path = _write(tmp_path / "a.jsonl", "\n".join(lines) + "\n")
    # Force the careful path by adding one broken line first.
    path.write_text("{broken\n" + path.read_text())
    result = ingest_files(path, table="t", on_bad_rows="reject")
    assert result.rows == 4
    reasons = [r["column"] for r in lakebed.read_table("t__rejects").to_pylist()]
    assert sorted(reasons, key=str) == [None, "extra"]


def test_schema_conflict_between_files_names_column(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "id,name\n1,ada\n")
    ingest_files(tmp_path / "a.csv", table="t")
    pq.write_table(pa.table({"id": ["x"], "name": ["y"]}), tmp_path / "b.parquet")
    with pytest.raises((SchemaDriftError, MalformedRecordError), match="'id'"):
        ingest_files(tmp_path / "b.parquet", table="t")
    assert lakebed.read_table("t").num_rows == 1


def test_missing_sources_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="no such file"):
        ingest_files(tmp_path / "absent.csv", table="t")
    with pytest.raises(SourceNotFoundError, match="glob matches no files"):
        ingest_files(str(tmp_path / "*.csv"), table="t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceNotFoundError, match="folder"):
        ingest_files(tmp_path / "empty", table="t")
    odd = _write(tmp_path / "data.xyz", "1,2\n")
    with pytest.raises(UnknownFormatError, match="data.xyz"):
        ingest_files(odd, table="t")
    assert Catalog().find("t") is None


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(MalformedRecordError, match="broken.parquet"):
        ingest_files(path, table="t")


def test_cli_ingest_show_history_sql(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lakebed.cli import main

    _write(tmp_path / "a.csv", "id,v\n1,a\n2,b\n")
    runner = CliRunner()
    result = runner.invoke(main, ["ingest", str(tmp_path / "a.csv"), "--table", "t"])
    assert result.exit_code == 0, result.output
    assert "2 rows" in result.output
    result = runner.invoke(main, ["sql", "SELECT sum(id) AS s FROM t", "--format", "json"])
    assert json.loads(result.output) == [{"s": 3}]
    result = runner.invoke(main, ["show", "t", "--version", "0"])
    assert result.exit_code == 0 and "2 row(s)" in result.output
    result = runner.invoke(main, ["history", "t"])
    assert result.exit_code == 0 and "WRITE" in result.output
    result = runner.invoke(main, ["tables"])
    assert "ingested_files" in result.output and " t " in result.output
    result = runner.invoke(main, ["show", "missing"])
    assert result.exit_code == 1 and "no lakebed table named 'missing'" in result.output
    result = runner.invoke(main, ["ingest", str(tmp_path / "nope.csv"), "--table", "t"])
    assert result.exit_code == 1 and "nope.csv" in result.output


def test_invalid_contract_names_file_and_field(tmp_path: Path) -> None:
    from lakebed.errors import ContractError

    path = _write(tmp_path / "bad.yaml", "name: t\ncolumns:\n  - {name: id, type: integer}\n")
    with pytest.raises(
        ContractError, match=r"bad\.yaml: invalid contract: columns\.0\.type: unknown column type"
    ):
        TableContract.from_yaml(path)
    path.write_text("name: t\nkeys: [missing]\ncolumns:\n  - {name: id, type: int64}\n")
    with pytest.raises(ContractError, match=r"keys names unknown columns \['missing'\]"):
        TableContract.from_yaml(path)
