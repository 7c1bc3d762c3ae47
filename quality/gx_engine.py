"""The second engine: a contract's rules as a Great Expectations suite, to cross-check the Polars engine.

:func:`build_suite` compiles the same :class:`~lakebed.quality.rules.RuleSet` the Polars engine runs
(:mod:`lakebed.quality.polars_engine`) into an ``ExpectationSuite`` of GX built-in expectations, one per
rule, each carrying ``meta={"rule": <rule name>}`` so results map back to rules:

==================  ===================================================================================
rule kind           expectation
==================  ===================================================================================
``not_null``        ``ExpectColumnValuesToNotBeNull``
``between``         ``ExpectColumnValuesToBeBetween`` (inclusive; ISO bounds of timestamp and date columns
                    parsed, decimal columns compared as float64). Text (or time) bounds, which GX's
                    numeric/date ``min_value`` cannot hold, become a derived column (see ``expr``)
``allowed``         ``ExpectColumnValuesToBeInSet`` (values converted to the column's type)
``regex``           ``ExpectColumnValuesToMatchRegex`` (search semantics, like the Polars engine)
``unique``          ``ExpectColumnValuesToBeUnique`` (every row sharing a repeated non-null value fails)
``expr``            GX has no built-in for an arbitrary SQL predicate on pandas data, so DuckDB (an engine
                    independent of Polars) evaluates ``coalesce((<sql>), true)`` over the data into a
                    derived boolean column ``__rule_<name>``, expected by
                    ``ExpectColumnValuesToBeInSet([True])`` (SQL ``CHECK`` semantics: NULL passes)
``row_count``       ``ExpectTableRowCountToBeBetween``
``unique_keys``     ``ExpectCompoundColumnsToBeUnique`` with ``ignore_row_if="never"`` (a repeated null key
                    is a repeated key, as in the Polars engine); a single key column is paired with a
                    constant column ``__lakebed_one``, since GX wants at least two
``freshness``       ``ExpectColumnMaxToBeBetween(min_value=now - max_lag)``
==================  ===================================================================================

Every row rule except ``not_null`` lets nulls pass (GX's column-map expectations skip missing values),
as in the Polars engine. :func:`run_suite` validates Arrow data with the suite (converted to pandas:
decimals to float64, dates to naive datetimes, timestamps keep their time zone) and returns one
:class:`~lakebed.quality.results.RuleResult` per rule (``engine="gx"``); :func:`failing_rows` gives the
positional indices of the rows each row rule fails, from GX's ``unexpected_index_list``.

Known differences: pandas cannot tell a float ``NaN`` from a null, so GX treats ``NaN`` as missing (not
null for Polars, and larger than any bound); ``<column>_type`` rules (text that does not convert to the
declared type) exist only in the write path, so data is expected in its declared types here.

GX is imported lazily (it takes seconds) with ``GX_ANALYTICS_ENABLED=false``; one ephemeral context
(pandas datasource, whole-dataframe batch definition) serves the whole process.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import LakebedError
from lakebed.quality.polars_engine import samples
from lakebed.quality.results import RuleResult
from lakebed.quality.rules import Rule, RuleSet, compile_rules
from lakebed.schemas.contract import TableContract
from lakebed.schemas.durations import format_duration

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.expectations import Expectation

ENGINE = "gx"
DERIVED_PREFIX = "__rule_"
CONSTANT_COLUMN = "__lakebed_one"
_SAMPLE_ROWS = 5
_EXACT_FLOAT_INT = 2**53  # integers beyond this lose precision as float64
_lock = threading.Lock()
_batch_definition: BatchDefinition | None = None


# --- the suite ------------------------------------------------------------------------------------


def build_suite(contract: TableContract, *, now: dt.datetime | None = None) -> ExpectationSuite:
    """The rules of ``contract`` as a GX ``ExpectationSuite`` (``freshness`` judged at ``now``, default the
    current time). Expectations on derived columns (``__rule_<name>``) need the frame :func:`run_suite`
    builds."""
    rules = compile_rules(contract)
    return _suite(rules, contract.column_types(), now=now or dt.datetime.now(dt.UTC))


def _suite(
    rules: RuleSet, types: dict[str, pa.DataType], *, now: dt.datetime, row_only: bool = False
) -> ExpectationSuite:
    gx = _gx()
    chosen = rules.row_rules if row_only else rules.rules
    expectations = [e for e in (_expectation(r, types, now) for r in chosen) if e is not None]
    # The constructor, not add_expectation: that one needs a context and drops expectations equal but
    # for their meta (two rules judging the same thing must both report).
    return gx.ExpectationSuite(name=f"lakebed.{rules.table}", expectations=expectations)


def _expectation(rule: Rule, types: dict[str, pa.DataType], now: dt.datetime) -> Expectation | None:
    """The GX expectation of ``rule`` (None: a rule GX cannot express, e.g. a conversion rule)."""
    import great_expectations.expectations as gxe

    meta = {"rule": rule.name}
    column = rule.column or ""
    dtype = types.get(column, pa.null())
    if _derived_sql(rule, dtype) is not None:
        return gxe.ExpectColumnValuesToBeInSet(column=DERIVED_PREFIX + rule.name, value_set=[True], meta=meta)
    if rule.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta)
    if rule.kind == "between":
        low, high = (_bound(rule.params[b], dtype) for b in ("min", "max"))
        return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, meta=meta)
    if rule.kind == "allowed":
        values = [v for v in (_value(x, dtype) for x in rule.params["values"]) if v is not None]
        return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values, meta=meta)
    if rule.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=column, regex=rule.params["pattern"], meta=meta)
    if rule.kind == "unique":
        return gxe.ExpectColumnValuesToBeUnique(column=column, meta=meta)
    if rule.kind == "row_count":
        low, high = rule.params["min"], rule.params["max"]
        return gxe.ExpectTableRowCountToBeBetween(min_value=low, max_value=high, meta=meta)
    if rule.kind == "unique_keys":
        keys = list(rule.columns)
        if len(keys) == 1:
            keys.append(CONSTANT_COLUMN)
        return gxe.ExpectCompoundColumnsToBeUnique(column_list=keys, ignore_row_if="never", meta=meta)
    if rule.kind == "freshness":
        oldest = _instant(now - rule.params["max_lag"], dtype)
        return gxe.ExpectColumnMaxToBeBetween(column=column, min_value=oldest, meta=meta)
    return None


def _derived_sql(rule: Rule, dtype: pa.DataType) -> str | None:
    """The SQL predicate DuckDB evaluates into ``__rule_<name>`` for rules GX has no expectation for."""
    if rule.kind == "expr":
        return str(rule.params["sql"])
    if rule.kind == "between" and not _gx_orderable(dtype):
        column = _ident(rule.column or "")
        parts = [f"{column} {op} {_sql_literal(rule.params[b])}" for b, op in (("min", ">="), ("max", "<="))]
        return " AND ".join(
            p for p, b in zip(parts, ("min", "max"), strict=True) if rule.params[b] is not None
        )
    return None


def _gx_orderable(dtype: pa.DataType) -> bool:
    """Whether GX's ``min_value``/``max_value`` (numbers, dates, datetimes) can bound ``dtype``."""
    t = pa.types
    return (
        t.is_integer(dtype)
        or t.is_floating(dtype)
        or t.is_decimal(dtype)
        or t.is_timestamp(dtype)
        or t.is_date(dtype)
        or t.is_null(dtype)
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _bound(value: Any, dtype: pa.DataType) -> Any:
    """A ``min``/``max`` in the terms of the pandas column GX compares it with."""
    if value is None:
        return None
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        if pa.types.is_date(dtype):
            day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
            return dt.datetime.combine(day, dt.time())  # date columns become naive midnights
        parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        return _instant(parsed, dtype)
    if pa.types.is_decimal(dtype):
        return float(value)
    return value


def _instant(moment: dt.datetime, dtype: pa.DataType) -> dt.datetime:
    """``moment`` comparable with a column of ``dtype``: aware (UTC if naive) for zoned timestamps, naive UTC
    otherwise (naive timestamps and dates)."""
    zoned = pa.types.is_timestamp(dtype) and bool(dtype.tz)
    if zoned:
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def _value(value: Any, dtype: pa.DataType) -> Any:
    """An ``allowed`` value converted to the column's type as pandas holds it (None: not convertible)."""
    try:
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
            return str(value).lower() if isinstance(value, bool) else str(value)
        if pa.types.is_integer(dtype):
            number = float(value)
            return int(number) if number.is_integer() else None
        if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
            return float(value)
        if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
            return _bound(value, dtype)
    except (TypeError, ValueError):
        return None
    return value


# --- the data ---------------------------------------------------------------------------------------


def _frame(rules: RuleSet, data: pa.Table, declared: dict[str, pa.DataType]) -> tuple[pd.DataFrame, pa.Table]:
    """The pandas frame GX validates (the columns the rules read, derived columns, positional index) and
    ``data`` with absent rule columns filled with nulls."""
    import pandas as pd

    names = set(data.column_names)
    read = list(dict.fromkeys(c for r in rules.rules for c in r.columns))
    for column in read:
        if column not in names:  # as in the write path, an absent column is all nulls
            data = data.append_column(column, pa.nulls(data.num_rows, declared.get(column, pa.null())))
    types = _types(declared, data)
    derived = {
        r.name: sql for r in rules.rules if (sql := _derived_sql(r, types.get(r.column or "", pa.null())))
    }
    compared = dict.fromkeys(c for r in rules.rules if r.name not in derived for c in r.columns)
    columns: dict[str, Any] = {c: _pandas_column(data.column(c)) for c in compared}
    if derived:
        columns.update(_sql_checks(data, derived))
    if any(r.kind == "unique_keys" and len(r.columns) == 1 for r in rules.rules):
        columns[CONSTANT_COLUMN] = pd.Series(True, index=pd.RangeIndex(data.num_rows))
    frame = pd.DataFrame(columns, index=pd.RangeIndex(data.num_rows))
    return frame, data


def _types(declared: dict[str, pa.DataType], data: pa.Table) -> dict[str, pa.DataType]:
    """The column types the suite is built for: the data's where it has the column, else the contract's."""
    return {**declared, **{f.name: f.type for f in data.schema}}


def _pandas_column(column: pa.ChunkedArray) -> pd.Series:
    """One Arrow column as the pandas series GX compares: decimals as float64, dates as naive datetimes,
    timestamps in nanoseconds where they fit (GX vectorizes only those), zones kept."""
    import pandas as pd

    dtype = column.type
    if pa.types.is_dictionary(dtype):
        column, dtype = pc.cast(column, dtype.value_type), dtype.value_type
    if pa.types.is_string_view(dtype):
        column = pc.cast(column, pa.large_string())
    elif pa.types.is_decimal(dtype):
        column = pc.cast(column, pa.float64())
    elif pa.types.is_date(dtype) or (pa.types.is_timestamp(dtype) and dtype.unit != "ns"):
        target = pa.timestamp("ns", tz=dtype.tz if pa.types.is_timestamp(dtype) else None)
        try:
            column = pc.cast(column, target)  # safe cast: raises rather than overflow
        except pa.ArrowInvalid:
            if pa.types.is_date(dtype):
                column = pc.cast(column, pa.timestamp("us"))
    elif pa.types.is_integer(dtype) and column.null_count:
        low, high = pc.min_max(column).values()
        big = max(abs(low.as_py() or 0), abs(high.as_py() or 0)) >= _EXACT_FLOAT_INT
        if big:  # float64 (pandas' default for integers with nulls) would merge distinct values
            return pd.Series(pd.array(column.to_pylist(), dtype="Int64"), index=pd.RangeIndex(len(column)))
    series = column.to_pandas()
    series.index = pd.RangeIndex(len(series))
    return series


def _sql_checks(data: pa.Table, predicates: dict[str, str]) -> dict[str, Any]:
    """``{__rule_<name>: bool array}``: ``coalesce((<sql>), true)`` per rule, evaluated by DuckDB."""
    import duckdb

    select = ", ".join(
        f"coalesce(({sql}), true) AS {_ident(DERIVED_PREFIX + name)}" for name, sql in predicates.items()
    )
    connection = duckdb.connect()
    try:
        connection.execute("SET preserve_insertion_order = true")
        connection.register("data", data)
        result = connection.sql(f"SELECT {select} FROM data").to_arrow_table()
    finally:
        connection.close()
    if result is None or result.num_rows != data.num_rows:
        raise LakebedError(f"DuckDB did not return one check per row for rules {sorted(predicates)}")
    return {name: result.column(name).to_numpy(zero_copy_only=False) for name in result.column_names}


# --- GX ---------------------------------------------------------------------------------------------


def _gx() -> Any:
    """``great_expectations``, imported on first use with analytics off and its logging quiet."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    with warnings.catch_warnings():  # its own imports of deprecated modules
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx


def _batches() -> BatchDefinition:
    """The process's ephemeral GX context's whole-dataframe batch definition (made once)."""
    global _batch_definition
    with _lock:
        if _batch_definition is None:
            gx = _gx()
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            asset = context.data_sources.add_pandas("lakebed").add_dataframe_asset("frame")
            _batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        return _batch_definition


@dataclass(frozen=True)
class _Outcome:
    success: bool
    result: dict[str, Any]


def _validate(
    suite: ExpectationSuite, frame: pd.DataFrame, result_format: dict[str, Any]
) -> dict[str, _Outcome]:
    """Run ``suite`` on ``frame``; the outcome of each expectation by rule name."""
    batch = _batches().get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(suite, result_format=result_format)
    outcomes: dict[str, _Outcome] = {}
    for result in validation.results:
        config = result.expectation_config
        name = ((config.meta if config is not None else None) or {}).get("rule")
        info = result.exception_info or {}
        if info.get("raised_exception"):
            raise LakebedError(
                f"great expectations could not evaluate rule {name!r}: {info.get('exception_message')}"
            )
        outcomes[str(name)] = _Outcome(bool(result.success), dict(result.result or {}))
    return outcomes


# --- results ----------------------------------------------------------------------------------------


def run_suite(contract: TableContract, data: pa.Table, *, now: dt.datetime | None = None) -> list[RuleResult]:
    """Every rule of ``contract`` GX can express on ``data`` as a whole (``freshness`` at ``now``), in
    :func:`~lakebed.quality.rules.compile_rules` order, as ``RuleResult``\\ s of engine ``gx``."""
    rules = compile_rules(contract)
    if not rules:
        return []
    now = now or dt.datetime.now(dt.UTC)
    declared = contract.column_types()
    frame, data = _frame(rules, data, declared)
    suite = _suite(rules, _types(declared, data), now=now)
    outcomes = _validate(
        suite,
        frame,
        {
            "result_format": "SUMMARY",
            "partial_unexpected_count": _SAMPLE_ROWS,
            "return_unexpected_index_query": False,
        },
    )
    rows = data.num_rows
    results = []
    for rule in rules.rules:
        outcome = outcomes.get(rule.name)
        if outcome is not None:
            results.append(_result(rule, outcome, rows, data, now))
    return results


def _result(rule: Rule, outcome: _Outcome, rows: int, data: pa.Table, now: dt.datetime) -> RuleResult:
    result = outcome.result
    if rule.kind == "row_count":
        ok = outcome.success
        observed = f"{result.get('observed_value')} rows"
        return RuleResult(rule, ok, rows, 0 if ok else 1, observed, engine=ENGINE)
    if rule.kind == "freshness":
        return _freshness(rule, result.get("observed_value"), rows, now)
    failed = int(result.get("unexpected_count") or 0)
    if rule.kind == "unique_keys":
        observed = f"{failed} rows with a repeated key"
    else:
        observed = f"{failed} of {rows} rows fail"
    picked = [int(i) for i in (result.get("partial_unexpected_index_list") or [])][:_SAMPLE_ROWS]
    sample = samples(data.take(picked)) if failed and picked else ()
    return RuleResult(rule, failed == 0, rows, failed, observed, engine=ENGINE, samples=sample)


def _freshness(rule: Rule, newest: Any, rows: int, now: dt.datetime) -> RuleResult:
    """The freshness result from the column's maximum (judged like the Polars engine, which it matches)."""
    import pandas as pd

    if newest is None or newest is pd.NaT or (isinstance(newest, float) and newest != newest):
        return RuleResult(rule, False, rows, 0, "no event times", engine=ENGINE)
    if isinstance(newest, pd.Timestamp):
        newest = newest.to_pydatetime()
    if not isinstance(newest, dt.datetime):
        newest = dt.datetime.combine(newest, dt.time())
    newest = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
    lag = max(now - newest, dt.timedelta(0))
    lag_text = format_duration(dt.timedelta(seconds=int(lag.total_seconds())))
    passed = lag <= rule.params["max_lag"]
    return RuleResult(rule, passed, rows, 0, f"newest {newest.isoformat()}, lag {lag_text}", engine=ENGINE)


def failing_rows(contract: TableContract, data: pa.Table) -> dict[str, list[int]]:
    """For each row rule GX can express, the positional indices (ascending) of the rows of ``data`` that
    break it, from GX's ``unexpected_index_list``."""
    rules = compile_rules(contract)
    if not rules.row_rules:
        return {}
    declared = contract.column_types()
    row_rules = RuleSet(rules.table, rules.row_rules, rules.fingerprint)
    frame, data = _frame(row_rules, data, declared)
    suite = _suite(row_rules, _types(declared, data), now=dt.datetime.now(dt.UTC), row_only=True)
    outcomes = _validate(suite, frame, {"result_format": "COMPLETE", "return_unexpected_index_query": False})
    failing: dict[str, list[int]] = {}
    for rule in row_rules.rules:
        outcome = outcomes.get(rule.name)
        if outcome is not None:
            failing[rule.name] = sorted(int(i) for i in outcome.result.get("unexpected_index_list") or ())
    return failing


__all__ = ["build_suite", "failing_rows", "run_suite"]
