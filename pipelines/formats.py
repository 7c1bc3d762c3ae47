"""Readers that stream CSV, JSON lines and Parquet files as Arrow record batches.

The fast path hands whole blocks to pyarrow's multi-threaded parsers. When a file holds a bad record the
reader switches, for that file only, to a line-chunked path that bisects failing chunks down to the bad
lines, so every bad record is reported with its file and line (and column, where known) and good records
around it are kept.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from lakebed.errors import InputError, MalformedRecordError, UnknownFormatError, UnreadableFileError

Format = Literal["csv", "tsv", "json", "parquet"]
_FORMATS: dict[str, Format] = {name: name for name in get_args(Format)}
BadRowPolicy = Literal["error", "reject"]

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
_BLOCK_BYTES = 1 << 20  # pyarrow's default: larger blocks buy no speed and hold more in flight
_SLOW_CHUNK_LINES = 20_000


def detect_format(path: Path, explicit: str | None = None) -> Format:
    """The format of ``path``: ``explicit`` if given, else by extension (``.csv.gz`` etc. included)."""
    if explicit:
        known = _FORMATS.get(explicit)
        if known is None:
            raise UnknownFormatError(
                f"unknown format {explicit!r}; use csv, tsv, json or parquet", path=str(path)
            )
        return known
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    fmt = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise UnknownFormatError(
            "cannot tell the format of this file from its name; pass format= one of csv, tsv, json, parquet",
            path=str(path),
        )
    return fmt


def supported(path: Path) -> bool:
    try:
        detect_format(path)
    except UnknownFormatError:
        return False
    return True


@dataclass
class BadRecord:
    """A record that could not be read: where it is and why."""

    path: str
    line: int | None
    column: str | None
    reason: str
    raw: str


Numbered = tuple[pa.RecordBatch, np.ndarray]
"""A batch and the source line of each of its rows (the row number, for Parquet)."""


@dataclass
class FileStream:
    """An open file: its Arrow schema and a one-shot iterator of batches, each with the line numbers of
    its rows. Bad records found while iterating (under the ``reject`` policy) are appended to ``bad``."""

    path: Path
    schema: pa.Schema
    numbered: Iterator[Numbered]
    bad: list[BadRecord] = field(default_factory=list)

    @property
    def batches(self) -> Iterator[pa.RecordBatch]:
        return (batch for batch, _ in self.numbered)


def open_file(
    path: Path,
    fmt: Format,
    *,
    column_types: dict[str, pa.DataType] | None = None,
    on_bad_rows: BadRowPolicy = "error",
    batch_rows: int = 131_072,
    encoding: str = "utf-8",
) -> FileStream:
    """Open ``path`` for streaming. ``column_types`` fixes the types of the columns it names (from a
    contract or the existing table); other columns are inferred from the first block. Text formats are
    read in ``encoding`` (any Python codec name); text that is not valid in it is a bad record, never
    binary data. A file with no record (empty, or only a header) is an :class:`UnreadableFileError`."""
    try:
        if fmt == "parquet":
            return _open_parquet(path, column_types, batch_rows)
        if fmt == "json":
            stream = _LineReader(path, "json", column_types or {}, on_bad_rows, encoding).open()
        else:
            stream = _open_csv(path, fmt, column_types or {}, on_bad_rows, encoding)
    except FileNotFoundError as exc:
        raise InputError("file not found", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from None
    return _with_records(stream, fmt, encoding)


def text_encoding(name: str) -> str:
    """The canonical name of a text encoding, or an InputError naming the unknown one."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise InputError(
            f"unknown text encoding {name!r} (use a Python codec name, e.g. latin-1, cp1252)"
        ) from None


def _source(path: Path, encoding: str) -> pa.NativeFile:
    """The file's bytes (decompressed by extension) as UTF-8, transcoded from ``encoding``."""
    stream = pa.input_stream(str(path))
    if text_encoding(encoding) == "utf-8":
        return stream
    return pa.transcoding_input_stream(stream, encoding, "utf-8")


def _undecodable(path: Path, encoding: str, exc: UnicodeDecodeError) -> UnreadableFileError:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return UnreadableFileError(f"not valid {text_encoding(encoding)} text (byte 0x{byte})", path=str(path))


def _with_records(stream: FileStream, fmt: Format, encoding: str) -> FileStream:
    """``stream``, after making sure it yields a record or a bad record; transcoding errors met later
    name the file."""
    numbered = stream.numbered
    try:
        first = next(numbered, None)
    except UnicodeDecodeError as exc:
        raise _undecodable(stream.path, encoding, exc) from None
    if first is None and not stream.bad:
        what = "no records after the header line" if fmt in ("csv", "tsv") else "no records"
        what = "empty file" if stream.path.stat().st_size == 0 else what
        raise UnreadableFileError(what, path=str(stream.path))

    def rest() -> Iterator[Numbered]:
        try:
            yield from numbered
        except UnicodeDecodeError as exc:
            raise _undecodable(stream.path, encoding, exc) from None

    stream.numbered = _prepend(first, rest())
    return stream


def _open_parquet(path: Path, column_types: dict[str, pa.DataType] | None, batch_rows: int) -> FileStream:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedRecordError(f"not a readable Parquet file: {exc}", path=str(path)) from exc
    schema = parquet.schema_arrow

    def batches() -> Iterator[Numbered]:
        done = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_rows):
                yield _cast_named(batch, column_types, path), _numbers(done + 1, batch.num_rows)
                done += batch.num_rows
        finally:
            parquet.close()

    target = pa.schema(
        [f.with_type(column_types[f.name]) if column_types and f.name in column_types else f for f in schema]
    )
    return FileStream(path=path, schema=target, numbered=batches())


def _cast_named(
    batch: pa.RecordBatch, column_types: dict[str, pa.DataType] | None, path: Path
) -> pa.RecordBatch:
    if not column_types:
        return batch
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        target = column_types.get(name)
        if target is not None and column.type != target:
            try:
                column = column.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise MalformedRecordError(
                    f"cannot convert to {target}: {exc}", path=str(path), column=name
                ) from exc
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _csv_options(fmt: Format) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",")


def _open_csv(
    path: Path, fmt: Format, column_types: dict[str, pa.DataType], on_bad_rows: BadRowPolicy, encoding: str
) -> FileStream:
    """Fast path: pyarrow's streaming CSV reader; on the first bad record, switch to the line path."""
    reader = _csv_reader(path, fmt, column_types, encoding)
    if reader is not None and (text := _invalid_text(reader.schema, column_types)):
        # pyarrow reads text that is not valid UTF-8 as binary: read those columns as text instead, so
        # each such record is a bad record naming its line and column.
        column_types = {**column_types, **text}
        reader = _csv_reader(path, fmt, column_types, encoding)
    if reader is None:
        return _LineReader(path, fmt, column_types, on_bad_rows, encoding).open()
    schema = reader.schema
    stream = FileStream(path=path, schema=schema, numbered=iter(()))

    def batches() -> Iterator[Numbered]:
        rows_done = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid:
                # Locate the bad record(s) from the first line of the failing block onwards.
                types = dict(zip(schema.names, schema.types, strict=True))
                slow = _LineReader(path, fmt, types, on_bad_rows, encoding)
                follow = slow.open(skip_records=rows_done)
                yield from follow.numbered
                stream.bad.extend(follow.bad)
                return
            # The fast path reads one record per line after the header (line 1).
            yield batch, _numbers(2 + rows_done, batch.num_rows)
            rows_done += batch.num_rows

    stream.numbered = batches()
    return stream


def _csv_reader(
    path: Path, fmt: Format, column_types: dict[str, pa.DataType], encoding: str
) -> pacsv.CSVStreamingReader | None:
    """pyarrow's streaming reader of the file, or None when its first block has a bad record."""
    convert = pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=False)
    read = pacsv.ReadOptions(block_size=_BLOCK_BYTES)
    try:
        return pacsv.open_csv(
            _source(path, encoding),
            read_options=read,
            parse_options=_csv_options(fmt),
            convert_options=convert,
        )
    except pa.ArrowInvalid:
        return None
    except pa.ArrowException as exc:
        raise MalformedRecordError(f"cannot read as {fmt.upper()}: {exc}", path=str(path)) from exc


def _invalid_text(schema: pa.Schema, declared: dict[str, pa.DataType]) -> dict[str, pa.DataType]:
    """Columns inferred as binary (text that is not valid UTF-8), to be read as strings instead."""
    return {
        f.name: pa.string()
        for f in schema
        if f.name not in declared and (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
    }


class _LineReader:
    """The careful path: reads a CSV/JSON-lines file in chunks of lines, bisecting any chunk that fails
    to parse down to its bad lines. Line numbers are physical lines (a CSV record with an embedded
    newline is counted from its first line)."""

    def __init__(
        self,
        path: Path,
        fmt: Format,
        column_types: dict[str, pa.DataType],
        on_bad_rows: BadRowPolicy,
        encoding: str,
    ):
        self.path = path
        self.fmt = fmt
        self.encoding = encoding
        self.column_types = dict(column_types)
        self.on_bad_rows = on_bad_rows
        self.schema: pa.Schema | None = None
        self.header = b""

    def open(self, *, skip_records: int = 0) -> FileStream:
        lines = _lines(_source(self.path, self.encoding))
        first_line = 1
        if self.fmt != "json":
            self.header = next(lines, b"")
            if not self.header.strip():
                raise MalformedRecordError("empty CSV file (no header line)", path=str(self.path), line=1)
            first_line = 2
            for _ in range(skip_records):
                next(lines, None)
            first_line += skip_records
        stream = FileStream(path=self.path, schema=pa.schema([]), numbered=iter(()))
        chunks = self._chunks(lines, first_line, stream)
        first = next(chunks, None)
        stream.schema = self.schema if self.schema is not None else pa.schema([])
        stream.numbered = _prepend(first, chunks)
        return stream

    def _chunks(self, lines: Iterator[bytes], first_line: int, stream: FileStream) -> Iterator[Numbered]:
        number = first_line
        chunk: list[bytes] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= _SLOW_CHUNK_LINES:
                yield from self._parse_chunk(chunk, number, stream)
                number += len(chunk)
                chunk = []
        if chunk:
            yield from self._parse_chunk(chunk, number, stream)

    def _parse(self, lines: list[bytes]) -> pa.Table:
        payload = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
        if self.fmt == "json":
            for line in lines:  # pyarrow.json accepts some non-JSON; make each line prove itself valid
                if line.strip():
                    json.loads(line)
            if self.schema is not None:
                # Later chunks must fit the schema inferred from the first one (as in pyarrow and polars):
                # a record with a new field or another type is a bad record, reported, never dropped.
                parse = pajson.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="error")
            else:
                explicit = pa.schema(_json_readable(self.column_types)) if self.column_types else None
                parse = pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
            table = pajson.read_json(io.BytesIO(payload), parse_options=parse)
            return _cast_table(table, self.column_types)
        types = (
            dict(zip(self.schema.names, self.schema.types, strict=True)) if self.schema else self.column_types
        )
        table = self._read_csv(payload, types)
        if self.schema is None and (text := _invalid_text(table.schema, types)):
            table = self._read_csv(payload, {**types, **text})  # bad text: those records fail
        return table

    def _read_csv(self, payload: bytes, types: dict[str, pa.DataType]) -> pa.Table:
        convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=False)
        return pacsv.read_csv(
            io.BytesIO(self.header + payload), parse_options=_csv_options(self.fmt), convert_options=convert
        )

    def _parse_chunk(self, lines: list[bytes], first_line: int, stream: FileStream) -> Iterator[Numbered]:
        lines_with_content = [(i, line) for i, line in enumerate(lines) if line.strip()]
        if not lines_with_content:
            return
        try:
            table = self._parse([line for _, line in lines_with_content])
        except (pa.ArrowInvalid, ValueError) as exc:
            if len(lines_with_content) == 1:
                index, line = lines_with_content[0]
                self._bad(stream, first_line + index, line, exc)
                return
            middle = len(lines) // 2
            yield from self._parse_chunk(lines[:middle], first_line, stream)
            yield from self._parse_chunk(lines[middle:], first_line + middle, stream)
            return
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            table = _conform(table, self.schema)
        numbers = np.array([first_line + i for i, _ in lines_with_content], dtype=np.int64)
        done = 0
        for batch in table.to_batches():
            yield batch, numbers[done : done + batch.num_rows]
            done += batch.num_rows

    def _names(self) -> list[str]:
        if self.schema is not None:
            return self.schema.names
        if not self.header:
            return []
        header = self.header.decode("utf-8", errors="replace").rstrip("\r\n")
        return next(csv.reader([header], delimiter="\t" if self.fmt == "tsv" else ","), [])

    def _bad(self, stream: FileStream, line_number: int, line: bytes, exc: Exception) -> None:
        column, reason = _explain(exc, self._names())
        raw = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if self.fmt == "json" and self.schema is not None and "unexpected field" in reason:
            extra = sorted(set(json.loads(line)) - set(self.schema.names))
            column = extra[0] if extra else None
            reason = f"field(s) {extra} not in the schema inferred from the file's first block; declare them in a contract"
        if self.on_bad_rows == "error":
            raise MalformedRecordError(reason, path=str(self.path), line=line_number, column=column)
        stream.bad.append(
            BadRecord(path=str(self.path), line=line_number, column=column, reason=reason, raw=raw)
        )


def _json_readable(column_types: dict[str, pa.DataType]) -> dict[str, pa.DataType]:
    """JSON holds dates, timestamps and decimals as strings: read those as strings, cast afterwards."""
    return {
        name: pa.string() if pa.types.is_temporal(t) or pa.types.is_decimal(t) else t
        for name, t in column_types.items()
    }


def _cast_table(table: pa.Table, column_types: dict[str, pa.DataType]) -> pa.Table:
    for index, name in enumerate(table.column_names):
        target = column_types.get(name)
        if target is not None and table.column(index).type != target:
            table = table.set_column(
                index, table.field(index).with_type(target), table.column(index).cast(target)
            )
    return table


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Bring a chunk into the file's schema (column order, nullability)."""
    return table.select(schema.names).cast(schema)


_COLUMN_INDEX = re.compile(r"In CSV column #(\d+)")
_JSON_COLUMN = re.compile(r"Column\(/([^)]+)\)")


def _explain(exc: Exception, names: Sequence[str]) -> tuple[str | None, str]:
    """The column (if known, from the CSV column index and ``names``) and a one-line reason."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, json.JSONDecodeError):
        return None, f"not valid JSON: {exc.msg} at character {exc.pos}"
    column = None
    if match := _COLUMN_INDEX.search(message):
        index = int(match.group(1))
        column = names[index] if index < len(names) else None
    elif match := _JSON_COLUMN.search(message):
        column = match.group(1)
    if isinstance(exc, UnicodeDecodeError) or "invalid UTF8" in message:
        byte = (
            f" (byte 0x{exc.object[exc.start : exc.start + 1].hex()})"
            if isinstance(exc, UnicodeDecodeError)
            else ""
        )
        message = f"not valid UTF-8 text{byte}; a file in another encoding needs --encoding (e.g. latin-1)"
    return column, message


def _lines(stream: pa.NativeFile) -> Iterator[bytes]:
    buffered = io.BufferedReader(stream, buffer_size=1 << 20)
    try:
        yield from buffered
    finally:
        buffered.close()


def _numbers(first: int, count: int) -> np.ndarray:
    return np.arange(first, first + count, dtype=np.int64)


def _prepend(first: Numbered | None, rest: Iterator[Numbered]) -> Iterator[Numbered]:
    if first is not None:
        yield first
    yield from rest
