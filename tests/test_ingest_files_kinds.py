"""One bad file among good ones, and text that is not UTF-8: nothing lost, nothing silently retyped."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

import lakebed
from lakebed.cli import main as cli
from lakebed.errors import InputError, MalformedRecordError, UnreadableFileError
from lakebed.pipelines.ingest import ingest_files
from lakebed.pipelines.ingest_manifest import MANIFEST_TABLE
from lakebed.schemas.contract import TableContract

LATIN1 = "id,name\n3,José\n4,Müller\n".encode("latin-1")


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "a_empty.csv").write_bytes(b"")
    (folder / "b_header_only.csv").write_text("id,name\n")
    (folder / "c_good.csv").write_text("id,name\n1,Ana\n2,Bo\n")
    (folder / "d_latin1.csv").write_bytes(LATIN1)
    (folder / "e_empty.jsonl").write_bytes(b"")
    return folder


def _rejects(table: str) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for row in lakebed.read_table(f"{table}__rejects").to_pylist():
        found.setdefault(Path(str(row["source_path"])).name, []).append(row)
    return found


def test_reject_keeps_every_bad_file_and_ingests_the_others(tmp_path: Path) -> None:
    result = ingest_files(_folder(tmp_path), table="people", on_bad_rows="reject")
    table = lakebed.read_table("people")
    assert sorted(table.column("name").to_pylist()) == ["Ana", "Bo"]
    assert table.schema.field("name").type == pa.string()  # never binary
    statuses = {Path(f.path).name: f.status for f in result.files}
    assert statuses == {
        "a_empty.csv": "rejected",
        "b_header_only.csv": "rejected",
        "c_good.csv": "ingested",
        "d_latin1.csv": "ingested",  # its records are rejected one by one
        "e_empty.jsonl": "rejected",
    }
    rejects = _rejects("people")
    assert [r["reason"] for r in rejects["a_empty.csv"]] == ["empty CSV file (no header line)"]
    assert [r["reason"] for r in rejects["b_header_only.csv"]] == ["no records after the header line"]
    assert [r["reason"] for r in rejects["e_empty.jsonl"]] == ["empty file"]
    latin = sorted(rejects["d_latin1.csv"], key=lambda r: int(str(r["line"])))
    assert [(r["line"], r["column"]) for r in latin] == [(2, "name"), (3, "name")]
    assert all("not valid UTF-8" in str(r["reason"]) and "--encoding" in str(r["reason"]) for r in latin)
    assert "Jos" in str(latin[0]["raw"])  # the record's text is kept
    # Rejected files are recorded, so an unchanged folder is not read again.
    manifest = lakebed.read_table(MANIFEST_TABLE).to_pylist()
    assert {Path(r["path"]).name for r in manifest if r["table_name"] == "people"} == set(statuses)
    again = ingest_files(tmp_path / "landing", table="people", on_bad_rows="reject")
    assert {f.status for f in again.files} == {"skipped"}


@pytest.mark.parametrize(
    ("name", "content", "line", "column", "reason"),
    [
        ("empty.csv", b"", 1, None, "empty CSV file (no header line)"),
        ("header.csv", b"id,name\n", None, None, "no records after the header line"),
        ("latin.csv", LATIN1, 2, "name", "not valid UTF-8 text"),
    ],
)
def test_error_stops_naming_the_file(
    tmp_path: Path, name: str, content: bytes, line: int | None, column: str | None, reason: str
) -> None:
    (tmp_path / "good.csv").write_text("id,name\n1,Ana\n")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MalformedRecordError) as caught:
        ingest_files([tmp_path / name], table="people")
    error = caught.value
    assert (Path(str(error.path)).name, error.line, error.column) == (name, line, column)
    assert error.reason.startswith(reason) and name in str(error)
    with pytest.raises(lakebed.LakebedError):
        lakebed.read_table("people")  # nothing written


def test_encoding_option_reads_latin1_text(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes(LATIN1)
    (tmp_path / "later.csv").write_text("id,name\n5,Zoë\n")
    ingest_files([tmp_path / "latin.csv"], table="people", encoding="latin-1")
    ingest_files([tmp_path / "later.csv"], table="people")
    table = lakebed.read_table("people")
    assert table.schema.field("name").type == pa.string()
    assert sorted(table.column("name").to_pylist()) == ["José", "Müller", "Zoë"]


def test_contract_encoding_and_cli_option(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes(LATIN1)
    contract = TableContract(name="people", encoding="latin-1")
    ingest_files([tmp_path / "latin.csv"], table="people", contract=contract)
    assert sorted(lakebed.read_table("people").column("name").to_pylist()) == ["José", "Müller"]
    out = CliRunner().invoke(
        cli, ["ingest", str(tmp_path / "latin.csv"), "--table", "cli_people", "--encoding", "latin-1"]
    )
    assert out.exit_code == 0, out.output
    assert sorted(lakebed.read_table("cli_people").column("name").to_pylist()) == ["José", "Müller"]
    with pytest.raises(ValueError, match="unknown text encoding 'klingon'"):
        TableContract(name="people", encoding="klingon")
    with pytest.raises(InputError, match="unknown text encoding 'klingon'"):
        ingest_files([tmp_path / "latin.csv"], table="people", encoding="klingon")


def test_undecodable_file_is_one_reject(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_bytes(b"id,name\n1,\x81\x8d\n")  # bytes cp1252 does not define
    (tmp_path / "good.csv").write_text("id,name\n1,Ana\n")
    result = ingest_files(tmp_path, table="people", encoding="cp1252", on_bad_rows="reject")
    assert {Path(f.path).name: f.status for f in result.files} == {
        "bad.csv": "rejected",
        "good.csv": "ingested",
    }
    assert [r["reason"] for r in _rejects("people")["bad.csv"]] == ["not valid cp1252 text (byte 0x81)"]
    with pytest.raises(UnreadableFileError, match=r"bad\.csv: not valid cp1252 text"):
        ingest_files([tmp_path / "bad.csv"], table="other", encoding="cp1252")
