"""The fast engine: a contract's rules as Polars expressions, run on every batch the write path commits.

:class:`RowChecker` evaluates all row-local rules of a batch in one Polars ``select`` over just the columns
the rules read (expressions built once per batch shape; ``unique`` and text ``regex`` rules run column by
column beside it, with cheaper exact paths for ascending ids and repeating codes), and splits the batch:
rows failing an ``error`` rule leave with the names and descriptions of the rules they broke (details are
built for those rows only); the others go on untouched (zero copies when every row passes). String values
that must become another type (the contract's) are converted here, and a value that cannot be converted
breaks the ``<column>_type`` rule instead of failing the whole write.

:class:`TableRuleState` accumulates what table rules need over the batches of one write (row count, the
newest event time, the keys) and judges them at the end.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.quality.results import RAW_COLUMN, REASON_COLUMN, RULES_COLUMN, RuleResult
from lakebed.quality.rules import Rule, RuleSet, type_rule
from lakebed.schemas.contract import TableContract
from lakebed.schemas.durations import format_duration
from lakebed.schemas.types import polars_dtype, type_name

_SAMPLE_ROWS = 5
_DISTINCT_SAMPLE = 2_048  # values sampled to decide whether a regex runs per distinct value
_EQUALITY_LIST = 8  # allowed text values up to this many are checked by comparisons, not hashing


@dataclass
class RowOutcome:
    """One batch split: ``valid`` (one or more batches) goes on to the table, ``quarantined`` (the failing
    rows with ``_rules``, ``_reason`` and ``_raw``) to quarantine; ``failed`` counts failing rows per rule."""

    valid: list[pa.RecordBatch]
    quarantined: pa.Table | None
    failed: dict[str, int]

    @property
    def valid_rows(self) -> int:
        return sum(b.num_rows for b in self.valid)


class RowChecker:
    """The row rules of ``rules`` compiled for batches of ``schema``'s shape (compiled once per shape)."""

    def __init__(self, rules: RuleSet, contract: TableContract) -> None:
        self.rules = rules
        self.row_rules = rules.row_rules
        self.declared = contract.column_types()
        self._compiled: dict[pa.Schema, _Compiled] = {}

    def target_schema(self, schema: pa.Schema) -> pa.Schema:
        """``schema`` with text columns the contract types otherwise converted to the declared type."""
        return pa.schema([self._target_field(f) for f in schema])

    def _target_field(self, f: pa.Field) -> pa.Field:
        declared = self.declared.get(f.name)
        if declared is not None and _is_text(f.type) and not _is_text(declared):
            return pa.field(f.name, declared, True)
        return f

    def check(self, batch: pa.RecordBatch) -> RowOutcome:
        return self._compile(batch.schema).check(batch)

    def check_together(self, batches: Sequence[pa.RecordBatch]) -> RowOutcome:
        """The outcome of checking ``batches`` (all of one schema) one by one, in one Polars pass: per-pass
        costs (the frame, the select, the split) are paid once for many small reader batches. ``unique``
        is still judged within each batch, as :meth:`check` judges it."""
        if len(batches) == 1:
            return self.check(batches[0])
        together = pa.concat_batches(batches)
        return self._compile(together.schema).check(together, [b.num_rows for b in batches])

    def failing_rows(self, data: pa.Table) -> dict[str, list[int]]:
        """For each row rule, the indices of the rows of ``data`` breaking it (for reports and for
        comparing engines)."""
        combined = data.combine_chunks()
        batch = combined.to_batches()[0] if combined.num_rows else pa.RecordBatch.from_pylist([], data.schema)
        compiled = self._compile(batch.schema)
        if not compiled.rules:
            return {}
        _, fails = compiled.evaluate(batch)
        return {name: fails[name].arg_true().to_list() for name in fails.columns}

    def _compile(self, schema: pa.Schema) -> _Compiled:
        compiled = self._compiled.get(schema)
        if compiled is None:
            compiled = self._compiled[schema] = _Compiled(self, schema)
        return compiled


class _Compiled:
    """The rules of one batch shape, with their Polars expressions built once (not per batch)."""

    def __init__(self, checker: RowChecker, schema: pa.Schema) -> None:
        self.schema = schema
        self.target = checker.target_schema(schema)
        self.conversions = {f.name: f.type for f in self.target if f.type != schema.field(f.name).type}
        names = set(schema.names)
        self.rules: list[Rule] = [type_rule(c, type_name(t)) for c, t in self.conversions.items()]
        # A rule on a column the data lacks judges nulls (the write path fills absent nullable columns).
        self.absent = sorted({c for r in checker.row_rules for c in r.columns if c not in names})
        self.rules.extend(checker.row_rules)
        self.needed = sorted({c for r in self.rules for c in r.columns if c in names})
        self.descriptions = {r.name: r.description for r in self.rules}
        self.errors = [r.name for r in self.rules if r.severity == "error"]
        self.names = [r.name for r in self.rules]
        frame_schema = self._frame(schema.empty_table()).schema
        # Rules judged column by column outside the select: uniqueness (not a per-row test) and regexes
        # on text (matched once per distinct value when values repeat a lot).
        self.eager = [
            r
            for r in self.rules
            if r.kind == "unique" or (r.kind == "regex" and frame_schema[r.column or ""] == pl.String)
        ]
        self.exprs = [_failing(r, frame_schema).alias(r.name) for r in self.rules if r not in self.eager]

    def _frame(self, data: pa.RecordBatch | pa.Table) -> pl.DataFrame:
        """The columns the rules read as a Polars frame (converted, with ``__raw_<column>`` originals, and
        absent columns as nulls)."""
        if self.needed:
            table = data.select(self.needed)
            frame = pl.from_arrow(table if isinstance(table, pa.Table) else pa.Table.from_batches([table]))
            assert isinstance(frame, pl.DataFrame)
        else:
            frame = pl.DataFrame(height=data.num_rows)
        extra: list[pl.Expr | pl.Series] = [
            _convert(frame[c], t).alias(c) for c, t in self.conversions.items()
        ]
        extra += [frame[c].alias(f"__raw_{c}") for c in self.conversions]
        extra += [pl.lit(None).alias(c) for c in self.absent]
        return frame.with_columns(extra) if extra else frame

    def evaluate(
        self, batch: pa.RecordBatch, lengths: Sequence[int] = ()
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The columns the rules read (see :meth:`_frame`) and one boolean column per rule, true where the
        row breaks it: every rule but ``unique`` in one Polars ``select``. ``lengths`` splits ``batch``
        into the batches it was made of, within which ``unique`` is judged (default: the whole batch)."""
        frame = self._frame(batch)
        fails = frame.select(self.exprs)
        if self.eager:
            eager = [_column_failing(r, frame[r.column or ""], lengths).alias(r.name) for r in self.eager]
            fails = fails.with_columns(eager).select(self.names)
        return frame, fails

    def check(self, batch: pa.RecordBatch, lengths: Sequence[int] = ()) -> RowOutcome:
        if not self.rules or batch.num_rows == 0:
            return RowOutcome(valid=[batch], quarantined=None, failed={})
        frame, fails = self.evaluate(batch, lengths)
        counts = fails.sum().row(0, named=True)
        failed = {name: int(n) for name, n in counts.items() if n}
        if not any(name in failed for name in self.errors):
            return RowOutcome(valid=[self._converted(batch, frame)], quarantined=None, failed=failed)
        # Details only for the failing rows: the rows' mask once, then the rules each of them broke.
        bad_mask = fails.select(pl.any_horizontal(self.errors).alias("bad")).to_series()
        whole = self._converted(batch, frame)
        bad_rows = fails.filter(bad_mask)
        names = fails.columns
        broken = [[n for n, hit in zip(names, row, strict=True) if hit] for row in bad_rows.iter_rows()]
        reasons = ["; ".join(f"{name}: {self.descriptions[name]}" for name in rules) for rules in broken]
        mask = bad_mask.to_arrow()
        quarantined = pa.Table.from_batches([whole.filter(mask)])
        quarantined = quarantined.append_column(
            pa.field(RULES_COLUMN, pa.list_(pa.string())), pa.array(broken, pa.list_(pa.string()))
        )
        quarantined = quarantined.append_column(REASON_COLUMN, pa.array(reasons, pa.string()))
        raw = self._raw(frame.filter(bad_mask)) if self.conversions else pa.nulls(len(broken), pa.string())
        quarantined = quarantined.append_column(RAW_COLUMN, raw)
        valid = [whole.filter(pc.invert(mask))]  # one filtered copy: cheaper for the writer than slices
        return RowOutcome(valid=valid, quarantined=quarantined, failed=failed)

    def _converted(self, batch: pa.RecordBatch, frame: pl.DataFrame) -> pa.RecordBatch:
        """``batch`` with converted columns in their declared types (failed conversions null)."""
        if not self.conversions:
            return batch
        arrays = []
        for f in self.target:
            if f.name in self.conversions:
                arrays.append(frame[f.name].to_arrow().cast(f.type))
            else:
                arrays.append(batch.column(f.name))
        return pa.RecordBatch.from_arrays(arrays, schema=self.target)

    def _raw(self, bad: pl.DataFrame) -> pa.Array:
        """The original text of converted columns per quarantined row, as JSON (so none is lost)."""
        if not self.conversions:
            return pa.nulls(bad.height, pa.string())
        raws = bad.select([pl.col(f"__raw_{c}").alias(c) for c in self.conversions]).to_dicts()
        return pa.array([json.dumps(r) if any(v is not None for v in r.values()) else None for r in raws])


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)


def _convert(text: pl.Series, target: pa.DataType) -> pl.Series:
    """Text to the declared type; values that do not convert become null."""
    if pa.types.is_timestamp(target):
        unit: Literal["ns", "us", "ms"] = target.unit if target.unit in ("ms", "us", "ns") else "us"
        return text.str.to_datetime(time_unit=unit, strict=False, time_zone=target.tz or None)
    if pa.types.is_date(target):
        return text.str.to_date(strict=False)
    if pa.types.is_boolean(target):
        lowered = text.str.to_lowercase().str.strip_chars()
        return (
            pl.select(
                pl.when(lowered.is_in(["true", "1", "yes"]))
                .then(True)
                .when(lowered.is_in(["false", "0", "no"]))
                .then(False)
                .otherwise(None)
            )
            .to_series()
            .alias(text.name)
        )
    dtype = polars_dtype(target)
    return text.str.strip_chars().cast(dtype, strict=False)


def _failing(rule: Rule, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """An expression that is true on the rows breaking ``rule`` (nulls pass all but ``not_null``)."""
    if rule.kind == "expr":
        return ~pl.sql_expr(rule.params["sql"]).fill_null(True)
    column = pl.col(rule.column or "")
    dtype = schema[rule.column or ""]
    if rule.kind == "not_null":
        if f"__raw_{rule.column}" in schema:  # a value that failed conversion breaks the type rule only
            return column.is_null() & pl.col(f"__raw_{rule.column}").is_null()
        return column.is_null()
    if rule.kind == "type":
        return column.is_null() & pl.col(f"__raw_{rule.column}").is_not_null()
    if rule.kind == "between":
        exact = all(
            _decimal_literal(rule.params[b], dtype) is not None
            for b in ("min", "max")
            if rule.params[b] is not None
        )
        # Decimals compare natively (6× cheaper than casting) when the bounds fit the column's scale.
        value = column.cast(pl.Float64) if dtype.is_decimal() and not exact else column
        low, high = (_literal(rule.params[b], dtype) for b in ("min", "max"))
        out = pl.lit(False)
        if low is not None:
            out = out | (value < low)
        if high is not None:
            out = out | (value > high)
        return out.fill_null(False)
    if rule.kind == "allowed":
        typed = [_value(v, dtype) for v in rule.params["values"]]
        if dtype == pl.String and 0 < len(typed) <= _EQUALITY_LIST and all(isinstance(v, str) for v in typed):
            # A few text values: comparisons are ~3× cheaper than a hash lookup per row (same result).
            return (column.is_not_null() & ~pl.any_horizontal([column == v for v in typed])).fill_null(False)
        values = pl.Series(typed, dtype=dtype)
        return column.is_not_null() & ~column.is_in(values.implode())
    if rule.kind == "regex":
        return column.is_not_null() & ~column.cast(pl.String).str.contains(rule.params["pattern"])
    raise ValueError(f"{rule.kind} is not a row rule")


def _column_failing(rule: Rule, values: pl.Series, lengths: Sequence[int] = ()) -> pl.Series:
    """True on the rows of ``values`` breaking ``rule`` (a ``unique`` rule, judged within each run of
    ``lengths`` rows when given, or a ``regex`` on text)."""
    if rule.kind == "unique":
        if len(lengths) <= 1:
            return _repeated(values)
        starts = itertools.accumulate(lengths, initial=0)
        return pl.concat([_repeated(values.slice(s, n)) for s, n in zip(starts, lengths, strict=False)])
    return _not_matching(values, rule.params["pattern"])


def _not_matching(values: pl.Series, pattern: str) -> pl.Series:
    """True on non-null text values not matching ``pattern``. Codes (SKUs, country codes, ...) repeat a
    lot: when a sample of the values has few distinct ones, the regex runs once per distinct value and
    the failing ones are marked by membership; otherwise once per row. Both give the same answer."""
    n = values.len()
    if n >= 4 * _DISTINCT_SAMPLE and values.head(_DISTINCT_SAMPLE).n_unique() * 4 <= _DISTINCT_SAMPLE:
        distinct = values.drop_nulls().unique()
        if distinct.len() * 4 <= n:
            bad = distinct.filter(~distinct.str.contains(pattern))
            if bad.is_empty():
                return pl.repeat(False, n, eager=True, dtype=pl.Boolean).alias(values.name)
            return values.is_in(bad.implode()).fill_null(False).alias(values.name)
    return (values.is_not_null() & ~values.str.contains(pattern)).alias(values.name)


def _repeated(values: pl.Series) -> pl.Series:
    """True on non-null values that occur more than once. Counting distinct values first is cheap and most
    checked columns have none; otherwise the repeated values are found by sorting (~15× cheaper than
    ``is_duplicated``) and marked by membership."""
    n = values.len()
    if n > 1 and not values.null_count() and (values.dtype.is_integer() or values.dtype == pl.String):
        same = values.slice(1) == values.slice(0, n - 1)
        if (
            values.slice(1) >= values.slice(0, n - 1)
        ).all():  # ascending (ids often are): repeats are adjacent
            after = pl.concat([same, pl.Series([False])])
            before = pl.concat([pl.Series([False]), same])
            return (after | before).alias(values.name)
    present = n - values.null_count()
    if values.n_unique() - (1 if values.null_count() else 0) == present:
        return pl.repeat(False, values.len(), eager=True, dtype=pl.Boolean).alias(values.name)
    ordered = values.drop_nulls().sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    return values.is_in(repeated.implode()).fill_null(False).alias(values.name)


def _value(value: Any, dtype: pl.DataType) -> Any:
    """A contract value (ISO text for dates and times) as the Python value of a column of ``dtype``."""
    if isinstance(dtype, pl.Datetime):
        parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        if dtype.time_zone and parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        if not dtype.time_zone and parsed.tzinfo is not None:
            return parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed
    if isinstance(dtype, pl.Date):
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    if dtype.is_decimal():
        return float(value)
    return value


def _literal(value: Any, dtype: pl.DataType) -> Any:
    if value is None:
        return None
    if isinstance(dtype, pl.Datetime | pl.Date):
        return pl.lit(_value(value, dtype), dtype=dtype)
    if dtype.is_decimal():
        literal = _decimal_literal(value, dtype)
        return float(value) if literal is None else literal
    return value


def _decimal_literal(value: Any, dtype: pl.DataType) -> pl.Expr | None:
    """``value`` as a literal of decimal ``dtype`` when it is exactly representable there, else None."""
    if not isinstance(dtype, pl.Decimal) or isinstance(value, bool):
        return None
    number = Decimal(str(value))
    exponent = number.as_tuple().exponent
    scale = dtype.scale or 0
    precision = dtype.precision or 38
    if (
        not isinstance(exponent, int)
        or -exponent > scale
        or abs(number) >= Decimal(10) ** (precision - scale)
    ):
        return None
    return pl.lit(number.quantize(Decimal(1).scaleb(-scale)), dtype=dtype)


class TableRuleState:
    """What the table rules of one write need, accumulated over its valid rows."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules.table_rules
        self.rows = 0
        self.newest: Any = None
        self._key_batches: list[pa.Table] = []
        self._keys = next((r.columns for r in self.rules if r.kind == "unique_keys"), ())
        self._fresh = next((r.column for r in self.rules if r.kind == "freshness"), None)
        # One integer key ascending strictly over all batches so far: no key repeats (checked per batch,
        # so judging needs no pass over all keys at the end).
        self._ascending = len(self._keys) == 1
        self._last: Any = None

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if not batch.num_rows:
            return
        if self._keys and all(k in batch.schema.names for k in self._keys):
            self._key_batches.append(pa.Table.from_batches([batch]).select(list(self._keys)))
            if self._ascending:
                self._ascending = self._still_ascending(batch.column(self._keys[0]))
        if self._fresh and self._fresh in batch.schema.names:
            newest = pc.max(batch.column(self._fresh)).as_py()
            if newest is not None and (self.newest is None or newest > self.newest):
                self.newest = newest

    def _still_ascending(self, keys: pa.Array) -> bool:
        if keys.null_count or not pa.types.is_integer(keys.type):
            return False
        n = len(keys)
        first, last = keys[0].as_py(), keys[n - 1].as_py()
        if self._last is not None and first <= self._last:
            return False
        if n > 1 and not pc.all(pc.greater(keys.slice(1), keys.slice(0, n - 1))).as_py():
            return False
        self._last = last
        return True

    def evaluate(
        self,
        *,
        existing_rows: int | None = 0,
        existing_keys: pa.Table | None = None,
        now: dt.datetime | None = None,
    ) -> list[RuleResult]:
        """Judge the table rules; ``existing_rows`` (None: unknown, e.g. a merge) and ``existing_keys`` are
        what the table holds besides the rows written."""
        results = []
        for rule in self.rules:
            if rule.kind == "row_count":
                if existing_rows is None:
                    continue
                total = existing_rows + self.rows
                low, high = rule.params["min"], rule.params["max"]
                ok = (low is None or total >= low) and (high is None or total <= high)
                results.append(RuleResult(rule, ok, self.rows, 0 if ok else 1, f"{total} rows"))
            elif rule.kind == "unique_keys":
                if self._ascending and (existing_keys is None or not existing_keys.num_rows):
                    duplicates = 0
                else:
                    duplicates = _duplicate_keys(self._key_batches, existing_keys, self._keys)
                results.append(
                    RuleResult(
                        rule, duplicates == 0, self.rows, duplicates, f"{duplicates} rows with a repeated key"
                    )
                )
            elif rule.kind == "freshness":
                results.append(self._freshness(rule, now or dt.datetime.now(dt.UTC)))
        return results

    def _freshness(self, rule: Rule, now: dt.datetime) -> RuleResult:
        newest = self.newest
        if newest is None:
            return RuleResult(rule, False, self.rows, 0, "no event times")
        if isinstance(newest, dt.datetime):
            newest = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
        else:
            newest = dt.datetime.combine(newest, dt.time(), dt.UTC)
        lag = max(now - newest, dt.timedelta(0))
        lag_text = format_duration(dt.timedelta(seconds=int(lag.total_seconds())))
        return RuleResult(
            rule, lag <= rule.params["max_lag"], self.rows, 0, f"newest {newest.isoformat()}, lag {lag_text}"
        )


def _duplicate_keys(batches: Iterable[pa.Table], existing: pa.Table | None, keys: tuple[str, ...]) -> int:
    """Rows of the written data whose key repeats (within it, or a key ``existing`` already holds)."""
    tables = list(batches)
    if not tables or not keys:
        return 0
    new = pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))
    assert isinstance(new, pl.DataFrame)
    if new.n_unique() == new.height:  # the cheap common case: no key repeats within the write
        repeated = pl.DataFrame({"__repeated": pl.repeat(False, new.height, eager=True)})
    else:
        repeated = new.select(pl.struct(list(keys)).is_duplicated().alias("__repeated"))
    if existing is not None and existing.num_rows:
        old = pl.from_arrow(existing.select(list(keys)))
        assert isinstance(old, pl.DataFrame)
        old = (
            old.cast(dict(new.schema.items()), strict=False)
            .unique()
            .with_columns(pl.lit(True).alias("__old"))
        )
        joined = new.join(old, on=list(keys), how="left", maintain_order="left", nulls_equal=True)
        return int((repeated["__repeated"] | joined["__old"].fill_null(False)).sum())
    return int(repeated["__repeated"].sum())


def row_results(
    rules: RuleSet, failed: Mapping[str, int], rows: int, failing: pa.Table | None
) -> list[RuleResult]:
    """The results of the row rules of ``rules`` from per-rule failing-row counts (``failed``), with a few
    ``failing`` rows as samples. Conversion (``<column>_type``) rules appear when they fired."""
    rules_run = list(rules.row_rules)
    known = {r.name for r in rules_run}
    rules_run += [type_rule(n.removesuffix("_type"), "its declared type") for n in failed if n not in known]
    sample = samples(failing)
    return [
        RuleResult(
            rule,
            passed=failed.get(rule.name, 0) == 0,
            checked_rows=rows,
            failed_rows=failed.get(rule.name, 0),
            observed=f"{failed.get(rule.name, 0)} of {rows} rows fail",
            samples=sample if failed.get(rule.name, 0) else (),
        )
        for rule in rules_run
    ]


def samples(table: pa.Table | None, limit: int = _SAMPLE_ROWS) -> tuple[dict[str, Any], ...]:
    """A few rows of ``table`` as JSON-safe dicts (for reports and Dagster metadata)."""
    if table is None or not table.num_rows:
        return ()
    rows = table.slice(0, limit).to_pylist()
    return tuple(json.loads(json.dumps(r, default=str)) for r in rows)


__all__ = [
    "RowChecker",
    "RowOutcome",
    "TableRuleState",
    "row_results",
    "samples",
]
