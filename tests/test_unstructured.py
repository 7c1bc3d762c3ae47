"""Unstructured ingest: extraction per format, MIME sniffing, content storage, idempotence and rejects.

Every test ingests real files into real Delta tables under its own lakebed home (see conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from PIL import Image

from lakebed.config import get_config, reset_config
from lakebed.errors import SourceNotFoundError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.read import read_table
from lakebed.pipelines.unstructured import (
    REJECTS_SCHEMA,
    TABLE_SCHEMA,
    ContentNotFoundError,
    ingest_unstructured,
    read_content,
)
from lakebed.samples_media import MEDIA, minimal_pdf, tone_wav, write_media_samples


# Helpers ---------------------------------------------------------------------------------------------------
def rows(table: str = "documents") -> dict[str, dict[str, Any]]:
    return {row["source_path"]: row for row in read_table(table).to_pylist()}


def rejects(table: str = "documents") -> dict[str, str]:
    return {row["source_path"]: row["reason"] for row in read_table(f"{table}__rejects").to_pylist()}


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def png_bytes(size: tuple[int, int] = (32, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def mp3_bytes(frames: int = 40) -> bytes:
    """MPEG-1 layer III frames (128 kbit/s, 44.1 kHz, joint stereo) of silence-like zeros."""
    return (b"\xff\xfb\x90\x64" + b"\x00" * 413) * frames


def flac_bytes(*, rate: int = 44_100, channels: int = 2, samples: int = 88_200) -> bytes:
    """A FLAC stream holding only its STREAMINFO block (enough for duration, rate and channels)."""
    fields = (rate << 44) | ((channels - 1) << 41) | (15 << 36) | samples
    streaminfo = struct.pack(">HH", 4096, 4096) + bytes(6) + fields.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80, 0, 0, len(streaminfo)]) + streaminfo


def set_limits(
    monkeypatch: pytest.MonkeyPatch, *, inline: int | None = None, max_bytes: int | None = None
) -> None:
    if inline is not None:
        monkeypatch.setenv("LAKEBED_INLINE_CONTENT_BYTES", str(inline))
    if max_bytes is not None:
        monkeypatch.setenv("LAKEBED_MAX_FILE_BYTES", str(max_bytes))
    reset_config()


def blob_files(table: str = "documents") -> list[Path]:
    root = get_config().tables_root / f"{table}__blobs"
    return sorted(p for p in root.glob("??/*") if p.is_file())


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    write_media_samples(folder)
    return folder


# Samples -------------------------------------------------------------------------------------------------
def test_committed_samples_match_the_generator_and_stay_small(samples: Path) -> None:
    made = sorted(p.name for p in samples.iterdir())
    assert made == sorted(p.name for p in MEDIA.iterdir())
    for name in made:
        if name.endswith((".png", ".jpg")):  # encoder output may differ across Pillow builds
            with Image.open(samples / name) as fresh, Image.open(MEDIA / name) as shipped:
                assert (fresh.size, dict(fresh.getexif())) == (shipped.size, dict(shipped.getexif()))
        else:
            assert (samples / name).read_bytes() == (MEDIA / name).read_bytes(), name
    assert sum(p.stat().st_size for p in samples.iterdir()) < 1_500_000


# Extraction per kind -------------------------------------------------------------------------------------
def test_samples_extract_text_and_media_metadata(samples: Path) -> None:
    result = ingest_unstructured(samples)
    assert result.files_seen == 11  # 9 files + 2 zip entries; the archive itself is no row
    assert result.rows_written == 11 and result.rejected == 0 and result.version == 0
    got = rows()
    assert (
        pa.schema(DeltaTable(Catalog().get("documents").uri).schema().to_arrow()).names == TABLE_SCHEMA.names
    )
    by_name = {Path(path).name: row for path, row in got.items() if "!/" not in path}

    photo = by_name["warehouse-photo.jpg"]
    assert (photo["mime_type"], photo["kind"], photo["width"], photo["height"]) == (
        "image/jpeg",
        "image",
        640,
        480,
    )
    exif = json.loads(photo["exif"])
    assert (exif["Make"], exif["Model"], exif["DateTime"]) == ("Fujifilm", "X-T30", "2025:03:14 09:30:00")
    assert (exif["ExposureTime"], exif["FNumber"], exif["ExifVersion"]) == (
        0.008,
        2.8,
        "0232",
    )  # Exif sub-IFD
    chart = by_name["sales-chart.png"]
    assert (chart["mime_type"], chart["width"], chart["height"], chart["exif"]) == (
        "image/png",
        320,
        200,
        None,
    )

    tone = by_name["tone-440hz.wav"]
    assert (tone["mime_type"], tone["kind"]) == ("audio/x-wav", "audio")
    assert (tone["duration_s"], tone["sample_rate"], tone["channels"]) == (2.0, 16_000, 1)

    report = by_name["incident-report.pdf"]
    assert (report["mime_type"], report["kind"], report["page_count"]) == ("application/pdf", "document", 2)
    assert "Incident report: delayed orders ingest on 3 February 2025" in report["text"]
    assert "Follow-up actions" in report["text"]  # page 2
    assert "Prices are in euro cents, without thousands separators." in by_name["supplier-guide.pdf"]["text"]

    policy = by_name["data-policy.html"]
    assert policy["mime_type"] == "text/html"
    assert "We keep customer order data for seven years to meet our accounting obligations." in policy["text"]
    assert "privacy@example.com" in policy["text"]
    for hidden in ("tracking disabled", "generated by a script", "font-family", "window.analytics"):
        assert hidden not in policy["text"]

    assert by_name["product-faq.md"]["mime_type"] == "text/markdown"
    assert by_name["release-notes.txt"]["mime_type"] == "text/plain"
    assert by_name["release-notes.txt"]["text"] == (samples / "release-notes.txt").read_text()

    archive = str(samples / "handbook.zip")
    entry = got[f"{archive}!/handbook/policies/data-policy.html"]
    assert entry["file_name"] == "data-policy.html" and entry["text"] == policy["text"]
    # The zip holds copies of two documents: their bytes are stored once.
    assert result.duplicates == 2
    assert {entry["duplicate_of"], policy["duplicate_of"]} == {None, policy["sha256"]}
    for row in got.values():
        assert row["sha256"] == hashlib.sha256(read_content("documents", row["sha256"])).hexdigest()
        assert row["run_id"] == result.run_id and row["ingested_at"].tzinfo is not None


def test_mp3_and_flac_metadata_through_mutagen(tmp_path: Path) -> None:
    write(tmp_path / "in" / "jingle.mp3", mp3_bytes(40))
    write(tmp_path / "in" / "chime.flac", flac_bytes(rate=48_000, channels=1, samples=72_000))
    ingest_unstructured(tmp_path / "in")
    got = {Path(p).name: r for p, r in rows().items()}
    mp3 = got["jingle.mp3"]
    assert (mp3["mime_type"], mp3["kind"], mp3["sample_rate"], mp3["channels"]) == (
        "audio/mpeg",
        "audio",
        44_100,
        2,
    )
    assert mp3["duration_s"] == pytest.approx(40 * 417 * 8 / 128_000)
    flac = got["chime.flac"]
    assert (flac["mime_type"], flac["sample_rate"], flac["channels"], flac["duration_s"]) == (
        "audio/x-flac",
        48_000,
        1,
        1.5,
    )


def test_mime_is_sniffed_from_bytes_not_the_extension(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder / "really-a-picture.txt", png_bytes((12, 7)))
    write(folder / "really-text.png", "Plain words in a file with the wrong extension.\n")
    write(folder / "bm25.txt", "BM25 ranking notes: a text starting with a BMP signature is still text.\n")
    write(folder / "page.txt", "\n  <!DOCTYPE HTML><html><body><p>Hello <b>there</b></p></body></html>")
    write(folder / "notes.md", "# Heading\n\nSome *markdown*.\n")
    write(folder / "notes.markdown.txt", "# Heading\n\nThe same, but named .txt: plain text.\n")
    write(folder / "hand-written.bin", minimal_pdf([("Renamed PDF", ["Found by its magic bytes."])]))
    write(folder / "blob.dat", bytes(range(256)) * 4)
    write(folder / "latin1.txt", "Caf\xe9 cr\xe8me".encode("latin-1"))
    gif = io.BytesIO()
    Image.new("P", (3, 3)).save(gif, format="GIF")
    write(folder / "anim.gif", gif.getvalue())
    ingest_unstructured(folder)
    got = {Path(p).name: r for p, r in rows().items()}
    kinds = {name: (row["mime_type"], row["kind"]) for name, row in got.items()}
    assert kinds == {
        "really-a-picture.txt": ("image/png", "image"),
        "really-text.png": ("text/plain", "document"),
        "bm25.txt": ("text/plain", "document"),
        "page.txt": ("text/html", "document"),
        "notes.md": ("text/markdown", "document"),
        "notes.markdown.txt": ("text/plain", "document"),
        "hand-written.bin": ("application/pdf", "document"),
        "blob.dat": ("application/octet-stream", "other"),
        "latin1.txt": ("application/octet-stream", "other"),
        "anim.gif": ("image/gif", "other"),  # sniffed, but only png/jpeg get image extraction
    }
    assert (got["really-a-picture.txt"]["width"], got["really-a-picture.txt"]["height"]) == (12, 7)
    assert got["page.txt"]["text"] == "Hello there"
    assert got["hand-written.bin"]["text"].startswith("Renamed PDF")
    assert got["blob.dat"]["text"] is None and got["blob.dat"]["content"] == bytes(range(256)) * 4


# Content storage -----------------------------------------------------------------------------------------
def test_inline_and_blob_storage_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_limits(monkeypatch, inline=1_000)
    small = write(tmp_path / "in" / "small.txt", "s" * 1_000)  # exactly the threshold: inline
    large_bytes = os.urandom(5_000)
    large = write(tmp_path / "in" / "large.bin", large_bytes)
    result = ingest_unstructured(tmp_path / "in")
    assert (result.bytes_inline, result.bytes_blob) == (1_000, 5_000)
    got = rows()
    small_row, large_row = got[str(small)], got[str(large)]
    assert small_row["content"] == b"s" * 1_000 and small_row["blob_path"] is None
    sha = hashlib.sha256(large_bytes).hexdigest()
    expected = get_config().tables_root / "documents__blobs" / sha[:2] / sha
    assert large_row["content"] is None and large_row["blob_path"] == str(expected)
    assert expected.read_bytes() == large_bytes
    assert expected.stat().st_mode & 0o222 == 0  # blobs are read-only
    assert blob_files() == [expected]
    assert not list((expected.parent.parent / ".tmp").iterdir())  # no temp files left behind
    assert read_content("documents", small_row["sha256"]) == b"s" * 1_000
    assert read_content("documents", sha.upper()) == large_bytes
    with pytest.raises(ContentNotFoundError):
        read_content("documents", "0" * 64)


def test_duplicate_content_is_stored_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_limits(monkeypatch, inline=100)
    big, small = os.urandom(2_000), b"tiny but shared\n"
    for folder in ("a", "b"):
        write(tmp_path / "in" / folder / "big.bin", big)
        write(tmp_path / "in" / folder / "small.txt", small)
    result = ingest_unstructured(tmp_path / "in")
    assert (result.rows_written, result.duplicates, result.bytes_blob, result.bytes_inline) == (
        4,
        2,
        2_000,
        16,
    )
    assert len(blob_files()) == 1
    got = rows()
    first, second = got[str(tmp_path / "in/a/big.bin")], got[str(tmp_path / "in/b/big.bin")]
    assert first["blob_path"] == second["blob_path"] and first["duplicate_of"] is None
    assert second["duplicate_of"] == second["sha256"]
    small_a, small_b = got[str(tmp_path / "in/a/small.txt")], got[str(tmp_path / "in/b/small.txt")]
    assert (
        small_a["content"] == small
        and small_b["content"] is None
        and small_b["duplicate_of"] == small_b["sha256"]
    )
    assert read_content("documents", small_b["sha256"]) == small
    assert read_content("documents", second["sha256"]) == big

    # A later run meeting the same bytes at a new path stores nothing new either.
    write(tmp_path / "more" / "copy.bin", big)
    again = ingest_unstructured(tmp_path / "more")
    assert (again.rows_written, again.duplicates, again.bytes_blob) == (1, 1, 0)
    assert len(blob_files()) == 1


def test_a_run_over_many_files_finds_blobs_of_earlier_runs_from_one_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_limits(monkeypatch, inline=100)
    big = os.urandom(2_000)
    write(tmp_path / "first" / "big.bin", big)
    assert ingest_unstructured(tmp_path / "first").bytes_blob == 2_000
    for i in range(300):  # enough files for the run to list the blob store once
        write(tmp_path / "many" / f"note-{i:03d}.txt", f"note {i}\n".encode())
    write(tmp_path / "many" / "copy.bin", big)
    again = ingest_unstructured(tmp_path / "many")
    assert (again.rows_written, again.duplicates, again.bytes_blob) == (301, 1, 0)
    copy = rows()[str(tmp_path / "many" / "copy.bin")]
    assert copy["duplicate_of"] == hashlib.sha256(big).hexdigest() and copy["blob_path"]
    assert len(blob_files()) == 1


def test_reingest_is_idempotent_and_changes_update_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_limits(monkeypatch, inline=100)
    folder = tmp_path / "in"
    write(folder / "notes.txt", "version one\n")
    write(folder / "large.bin", os.urandom(500))
    write(folder / "docs.zip", _zip({"docs/readme.md": b"# Read me\n"}))
    first = ingest_unstructured(folder)
    table_uri = Catalog().get("documents").uri
    blob = blob_files()[0]
    blob_stat = blob.stat()

    again = ingest_unstructured(folder)
    assert (again.version, again.rows_written, again.unchanged, again.files_seen) == (None, 0, 3, 3)
    assert DeltaTable(table_uri).version() == first.version
    assert blob.stat().st_mtime_ns == blob_stat.st_mtime_ns and blob.stat().st_ino == blob_stat.st_ino

    write(folder / "notes.txt", "version two, longer\n")
    write(folder / "new.txt", "a new file\n")
    changed = ingest_unstructured(folder)
    assert (changed.rows_written, changed.unchanged) == (2, 2)
    got = rows()
    assert len(got) == 4
    notes = got[str(folder / "notes.txt")]
    assert (
        notes["text"] == "version two, longer\n"
        and notes["sha256"] == hashlib.sha256(b"version two, longer\n").hexdigest()
    )
    assert notes["run_id"] == changed.run_id
    assert got[f"{folder / 'docs.zip'}!/docs/readme.md"]["run_id"] == first.run_id  # untouched


def test_shared_inline_bytes_survive_a_change_of_the_row_holding_them(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder / "a.txt", "shared words\n")
    write(folder / "b.txt", "shared words\n")
    ingest_unstructured(folder)
    sha = hashlib.sha256(b"shared words\n").hexdigest()
    assert rows()[str(folder / "a.txt")]["content"] == b"shared words\n"
    write(folder / "a.txt", "a has moved on\n")
    ingest_unstructured(folder)
    got = rows()
    assert got[str(folder / "b.txt")]["duplicate_of"] == sha
    assert read_content("documents", sha) == b"shared words\n"  # moved to the blob store first
    assert read_content("documents", got[str(folder / "a.txt")]["sha256"]) == b"a has moved on\n"


# Sources -------------------------------------------------------------------------------------------------
def test_globs_files_folders_and_symlinks_inside_the_root(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder / "keep" / "one.md", "# one\n")
    write(folder / "keep" / "two.txt", "two\n")
    write(folder / "keep" / "sub" / "three.txt", "three\n")
    write(folder / "other" / "four.txt", "four\n")
    write(folder / ".hidden" / "secret.txt", "hidden folders are skipped\n")
    os.symlink(folder / "keep" / "two.txt", folder / "keep" / "link-to-two.txt")
    os.symlink(folder / "keep" / "sub", folder / "keep" / "linked-folder")
    os.symlink(folder, folder / "keep" / "loop")  # a link to an ancestor is not walked twice
    seen: list[tuple[int, int]] = []
    result = ingest_unstructured(
        [str(folder / "keep" / "*.txt"), folder / "keep" / "one.md"],
        table="globbed",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert sorted(Path(p).relative_to(folder).as_posix() for p in rows("globbed")) == [
        "keep/link-to-two.txt",
        "keep/one.md",
        "keep/two.txt",
    ]
    assert (result.rejected, result.duplicates) == (0, 1)
    assert seen == [(1, 3), (2, 3), (3, 3)]

    walked = ingest_unstructured(folder)
    assert sorted(Path(p).relative_to(folder).as_posix() for p in rows()) == [
        "keep/link-to-two.txt",
        "keep/linked-folder/three.txt",
        "keep/one.md",
        "keep/sub/three.txt",
        "keep/two.txt",
        "other/four.txt",
    ]
    assert (walked.rejected, walked.duplicates) == (0, 2)


def test_missing_sources_raise_before_anything_is_written(tmp_path: Path) -> None:
    write(tmp_path / "real.txt", "exists\n")
    with pytest.raises(SourceNotFoundError, match="nope.txt"):
        ingest_unstructured([tmp_path / "real.txt", tmp_path / "nope.txt"])
    with pytest.raises(SourceNotFoundError, match=r"\*\.pdf"):
        ingest_unstructured(str(tmp_path / "*.pdf"))
    with pytest.raises(SourceNotFoundError):
        ingest_unstructured([])
    assert Catalog().find("documents") is None


# Rejects -------------------------------------------------------------------------------------------------
def test_every_bad_input_is_rejected_while_good_files_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_limits(monkeypatch, max_bytes=10_000)
    root = tmp_path / "in"
    good_pdf = minimal_pdf([("Good report", ["This one is fine."])])
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, format="JPEG")
    good = {
        "good.txt": write(root / "good.txt", "all fine\n"),
        "good.pdf": write(root / "good.pdf", good_pdf),
        "good.png": write(root / "good.png", png_bytes()),
    }
    bad: dict[Path | str, str] = {
        write(root / "empty.txt", b""): "empty",
        write(root / "huge.bin", b"x" * 10_001): "too_large",
        write(root / "broken.pdf", b"%PDF-1.7\n" + os.urandom(400)): "corrupt_pdf",
        write(root / "cut.pdf", good_pdf[: len(good_pdf) // 2]): "corrupt_pdf",
        write(root / "cut.png", png_bytes((200, 200))[:60]): "corrupt_image",
        write(root / "cut.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2]): "corrupt_image",
        write(root / "fake.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20): "corrupt_image",
        write(root / "bad.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 30): "corrupt_audio",
        write(root / "broken.zip", b"PK\x03\x04 this is not really a zip archive"): "bad_zip",
    }
    archive = write(
        root / "mixed.zip",
        _zip(
            {
                "ok/inside.txt": b"fine inside the zip\n",
                "ok/too-big.txt": b"y" * 10_001,
                "../evil.txt": b"escape",
                "/abs.txt": b"absolute",
            }
        ),
    )
    bad[f"{archive}!/../evil.txt"] = "zip_slip"
    bad[f"{archive}!//abs.txt"] = "zip_slip"
    bad[f"{archive}!/ok/too-big.txt"] = "too_large"
    os.mkfifo(root / "pipe")  # never opened: reading it would block
    bad[root / "pipe"] = "unreadable"
    os.symlink(root / "gone.txt", root / "dangling.txt")
    bad[root / "dangling.txt"] = "unreadable"
    outside = write(tmp_path / "outside" / "secret.txt", "not yours\n")
    os.symlink(outside, root / "escape.txt")
    os.symlink(tmp_path / "outside", root / "escape-dir")
    bad[root / "escape.txt"] = "symlink_outside_root"
    bad[root / "escape-dir"] = "symlink_outside_root"

    result = ingest_unstructured(root)
    assert result.rejected == len(bad) and result.rejects_version == 0
    assert result.rows_written == 4 and result.files_seen == len(bad) + 4
    assert sorted(rows()) == sorted([*(str(p) for p in good.values()), f"{archive}!/ok/inside.txt"])
    assert rejects() == {str(path): reason for path, reason in bad.items()}

    rejected = read_table("documents__rejects")
    assert rejected.schema.names == REJECTS_SCHEMA.names
    by_path = {row["source_path"]: row for row in rejected.to_pylist()}
    assert (
        by_path[str(root / "huge.bin")]["size_bytes"] == 10_001
        and by_path[str(root / "huge.bin")]["sha256"] is None
    )
    corrupt = by_path[str(root / "broken.pdf")]
    assert corrupt["sha256"] == hashlib.sha256((root / "broken.pdf").read_bytes()).hexdigest()
    assert all(row["detail"] and row["run_id"] == result.run_id for row in by_path.values())
    assert not (get_config().tables_root / "documents__blobs").exists() or not blob_files()


def test_large_corrupt_files_are_rejected_without_leaving_blobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_limits(monkeypatch, inline=10)
    wav = tone_wav(seconds=0.05, rate=8_000)
    write(tmp_path / "in" / "beep.wav", wav)
    write(tmp_path / "in" / "broken.pdf", b"%PDF-1.4\n" + b"\x00" * 200)
    result = ingest_unstructured(tmp_path / "in")
    assert (result.rows_written, result.rejected) == (1, 1)
    row = next(iter(rows().values()))
    assert (row["duration_s"], row["sample_rate"], row["channels"]) == (0.05, 8_000, 1)
    assert [p.name for p in blob_files()] == [hashlib.sha256(wav).hexdigest()]
    assert not list((get_config().tables_root / "documents__blobs" / ".tmp").iterdir())


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return out.getvalue()
