"""Decoding Kafka values (JSON objects) into Arrow rows for stream ingest, finding the bad ones.

:class:`JsonDecoder` joins a block of values with newlines and hands it to ``pyarrow.json`` at once (no
per-row Python dicts on the happy path); when the block fails, it rewrites multi-line JSON, bisects
down to the bad values and explains each of them (not JSON, not an object, invalid UTF-8, a wrong type
or unknown field for the schema, a required field missing, a null or oversized value). The result is a
:class:`Decoded`: the rows of the good values and a reason for every bad one, for the dead letters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from lakebed.pipelines.stream.batch import META_COLUMNS, UTC_MICROS
from lakebed.schemas.contract import DriftPolicy

MiB = 1 << 20
# Decoded batches are allocated from the system allocator: it hands a round's large buffers back to the
# OS when the round is committed, where the default pool (mimalloc) keeps tens of MiB per round around.
# Same speed here; keeps the worker's peak RSS flat as batches come and go.
_DECODE_POOL = pa.system_memory_pool()


class _DecodeError(ValueError):
    """A block decoded to the wrong number of rows."""


@dataclass
class Decoded:
    """The result of decoding a block of values: rows of the good ones, reasons for the bad ones."""

    table: pa.Table | None  # rows of the good values, in order
    good: list[int]  # index (into the values) of each row
    dead: list[tuple[int, str]]  # (index, reason) of every bad value


_JSON_COLUMN = re.compile(r"Column\(/([^)]*)\)")


def _read_type(dtype: pa.DataType) -> pa.DataType:
    """The type pyarrow.json reads a column as: JSON holds dates and times as strings (cast after)."""
    if pa.types.is_date(dtype) or pa.types.is_time(dtype):
        return pa.string()
    return dtype


class JsonDecoder:
    """Decodes Kafka values (JSON objects) into Arrow rows against a schema, finding bad values.

    ``schema`` holds the known columns (the table's, plus the contract's); ``None`` infers the schema
    from the values. ``drift="strict"`` makes a field outside the schema a bad value; ``evolve`` lets it
    in as a new column. ``required`` columns must be present and non-null.
    """

    def __init__(
        self,
        schema: pa.Schema | None,
        *,
        drift: DriftPolicy = "evolve",
        required: Iterable[str] = (),
        max_bytes: int = 64 * MiB,
    ) -> None:
        self.schema = schema
        self.drift = drift
        self.required = [name for name in required if name not in META_COLUMNS]
        self.max_bytes = max_bytes

    # The fast path ---------------------------------------------------------------------------------
    def decode(self, values: Sequence[bytes | None], *, screen: bool = False) -> Decoded:
        """Decode ``values``. ``screen`` checks each value for ``None`` and size first (the caller
        knows whether any value needs it)."""
        dead: list[tuple[int, str]] = []
        items: list[tuple[int, bytes]]
        if screen:
            items = []
            for index, value in enumerate(values):
                if value is None:
                    dead.append((index, "null value (a tombstone): nothing to decode"))
                elif len(value) > self.max_bytes:
                    dead.append(
                        (index, f"value of {len(value):,} bytes exceeds max_bytes {self.max_bytes:,}")
                    )
                else:
                    items.append((index, value))
            lines = [value for _, value in items]
        else:
            lines = cast("list[bytes]", values)  # unscreened: the caller knows no value is None
            items = []
        if not lines:
            return Decoded(None, [], dead)
        payload = b"\n".join(lines)
        n = len(lines)
        clean = (
            payload[:1] == b"{"
            and payload.count(b"\n") == n - 1
            and payload.count(b"\n{") == n - 1
            and b"\r" not in payload
        )
        if clean:
            # Every value is one line starting with "{" (compact JSON): parse the joined block at once.
            try:
                table = self._parse(payload, n, self.schema, max(map(len, lines)))
            except (pa.ArrowException, ValueError):
                pass
            else:
                good = [index for index, _ in items] if screen else list(range(n))
                return self._required(Decoded(table, good, dead))
        if not screen:
            items = list(enumerate(lines))
        items = self._screen_lines(items, dead)
        return self._required(self._decode_careful(items, dead))

    def _parse(self, payload: bytes, rows: int, schema: pa.Schema | None, longest: int) -> pa.Table:
        read_schema = None
        if schema is not None:
            read_schema = pa.schema([pa.field(f.name, _read_type(f.type)) for f in schema])
        unexpected = "error" if self.drift == "strict" and schema is not None else "infer"
        table = pajson.read_json(
            pa.py_buffer(payload),
            read_options=pajson.ReadOptions(use_threads=True, block_size=max(1 << 20, longest + 2)),
            parse_options=pajson.ParseOptions(
                explicit_schema=read_schema, unexpected_field_behavior=unexpected
            ),
            memory_pool=_DECODE_POOL,
        )
        if table.num_rows != rows:
            raise _DecodeError(f"{rows} value(s) held {table.num_rows} JSON object(s)")
        table.validate(full=True)  # invalid UTF-8 in strings
        if schema is not None:
            for f in schema:
                index = table.schema.get_field_index(f.name)
                if index >= 0 and table.column(index).type != f.type:
                    table = table.set_column(
                        index, f.name, pc.cast(table.column(index), f.type, memory_pool=_DECODE_POOL)
                    )
        known = set(schema.names) if schema is not None else set()
        for index, f in enumerate(table.schema):
            if f.name not in known and pa.types.is_timestamp(f.type) and f.type.tz is None:
                # An inferred timestamp is an instant: pyarrow applies any offset in the string, and
                # one without an offset is read as UTC (as the Kafka timestamps are).
                column = pc.cast(table.column(index), UTC_MICROS, memory_pool=_DECODE_POOL)
                table = table.set_column(index, f.name, column)
        # A field that is null in every value has no type yet: leave it out until one is seen.
        drop = [f.name for f in table.schema if pa.types.is_null(f.type) and f.name not in known]
        return table.drop_columns(drop) if drop else table

    # The careful path ------------------------------------------------------------------------------
    @staticmethod
    def _screen_lines(items: list[tuple[int, bytes]], dead: list[tuple[int, str]]) -> list[tuple[int, bytes]]:
        """Values that cannot go into a newline-joined block as they are: multi-line JSON is rewritten
        compactly; anything not starting with ``{`` is classified and sent to the dead letters (a bare
        ``null`` must never reach pyarrow.json)."""
        kept: list[tuple[int, bytes]] = []
        for index, value in items:
            if b"\n" in value or b"\r" in value:
                try:
                    obj = json.loads(value)
                except ValueError as exc:
                    dead.append((index, _json_problem(value, exc)))
                    continue
                if not isinstance(obj, dict):
                    dead.append((index, _not_object(obj)))
                    continue
                value = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
            elif value.lstrip(b" \t")[:1] != b"{":
                dead.append((index, _classify(value)))
                continue
            kept.append((index, value))
        return kept

    def _decode_careful(self, items: list[tuple[int, bytes]], dead: list[tuple[int, str]]) -> Decoded:
        schema = self.schema
        for attempt in range(4):
            pieces: list[tuple[list[int], pa.Table]] = []
            self._bisect(items, schema, pieces, dead)
            if not pieces:
                return Decoded(None, [], dead)
            try:
                table = (
                    pieces[0][1]
                    if len(pieces) == 1
                    else pa.concat_tables([t for _, t in pieces], promote_options="permissive")
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                if attempt == 3:
                    raise
                # Good pieces disagree on a new field's type: adopt the first piece's schema (explicit
                # fields plus its new ones) and decode again, so values that disagree become bad values.
                first = pieces[0][1].schema
                extra = [f for f in first if schema is None or schema.get_field_index(f.name) < 0]
                schema = pa.schema(list(schema or []) + extra)
                keep = {i for indices, _ in pieces for i in indices}
                items = [item for item in items if item[0] in keep]
                continue
            good = [i for indices, _ in pieces for i in indices]
            return Decoded(table, good, dead)
        raise AssertionError("unreachable")

    def _bisect(
        self,
        items: list[tuple[int, bytes]],
        schema: pa.Schema | None,
        pieces: list[tuple[list[int], pa.Table]],
        dead: list[tuple[int, str]],
    ) -> None:
        if not items:
            return
        lines = [value for _, value in items]
        try:
            table = self._parse(b"\n".join(lines), len(lines), schema, max(map(len, lines)))
        except (pa.ArrowException, ValueError) as exc:
            if len(items) == 1:
                dead.append((items[0][0], self._explain(items[0][1], exc, schema)))
                return
            middle = len(items) // 2
            self._bisect(items[:middle], schema, pieces, dead)
            self._bisect(items[middle:], schema, pieces, dead)
            return
        pieces.append(([index for index, _ in items], table))

    def _explain(self, value: bytes, exc: Exception, schema: pa.Schema | None) -> str:
        try:
            obj = json.loads(value)
        except ValueError as problem:
            return _json_problem(value, problem)
        if not isinstance(obj, dict):
            return _not_object(obj)
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, _DecodeError):
            return message
        if "unexpected field" in message and schema is not None:
            extra = sorted(set(obj) - set(schema.names))
            return f"field(s) {extra} not in the table's schema (drift policy: strict)"
        if "UTF8" in message or "UTF-8" in message:
            return f"not valid UTF-8: {message}"
        match = _JSON_COLUMN.search(message)
        column = match.group(1) if match else self._bad_field(obj, schema)
        if column is not None:
            expected = schema.field(column).type if schema is not None and column in schema.names else None
            got = type(obj.get(column)).__name__ if column in obj else "missing"
            want = f" (expected {expected}, got JSON {got})" if expected is not None else ""
            return f"wrong type for field {column!r}{want}: {message}"
        return f"does not fit the table's schema: {message}"

    def _bad_field(self, obj: dict[str, Any], schema: pa.Schema | None) -> str | None:
        """The first field of ``obj`` whose value alone does not convert to its column's type."""
        if schema is None:
            return None
        for f in schema:
            if f.name not in obj:
                continue
            line = json.dumps({f.name: obj[f.name]}).encode()
            try:
                self._parse(line, 1, pa.schema([f]), len(line))
            except (pa.ArrowException, ValueError):
                return f.name
        return None

    def _required(self, decoded: Decoded) -> Decoded:
        """Move rows missing a required field (absent or null) to the dead letters."""
        table = decoded.table
        if table is None or not self.required:
            return decoded
        masks: dict[str, list[bool]] = {}
        combined: Any = None
        for name in self.required:
            index = table.schema.get_field_index(name)
            mask: Any = pa.array([True] * table.num_rows) if index < 0 else pc.is_null(table.column(index))
            combined = mask if combined is None else pc.or_(combined, mask)
            masks[name] = mask.to_pylist()
        if combined is None or not pc.any(combined).as_py():
            return decoded
        good: list[int] = []
        dead = list(decoded.dead)
        for row, bad in enumerate(combined.to_pylist()):
            if bad:
                names = [name for name in self.required if masks[name][row]]
                dead.append((decoded.good[row], f"missing required field(s) {names}"))
            else:
                good.append(decoded.good[row])
        kept = table.filter(pc.invert(combined))
        return Decoded(kept if kept.num_rows else None, good, dead)


def _json_problem(value: bytes, exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8: {exc.reason} at byte {exc.start}"
    if isinstance(exc, json.JSONDecodeError):
        if not value.strip():
            return "empty value: not a JSON object"
        return f"not valid JSON: {exc.msg} at character {exc.pos}"
    return f"not valid JSON: {exc}"


def _not_object(obj: Any) -> str:
    kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(obj), "null" if obj is None else type(obj).__name__
    )
    return f"not a JSON object (a JSON {kind})"


def _classify(value: bytes) -> str:
    try:
        obj = json.loads(value)
    except ValueError as exc:
        return _json_problem(value, exc)
    return _not_object(obj)


__all__ = ["MiB", "Decoded", "JsonDecoder"]
