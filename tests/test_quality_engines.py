"""The Polars engine and the Great Expectations engine agree on which rows break which rule.

One contract covers every row rule kind (``not_null``; ``between`` on int, float, decimal, timestamp,
naive timestamp, date and text; ``allowed``; ``regex``; ``unique``; SQL rules) and one deterministic
2,000-row table breaks each of them a known number of times, with nulls that must pass every rule but
``not_null``. Both engines are evaluated once per module (importing GX alone takes seconds).
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lakebed.quality import gx_engine
from lakebed.quality.polars_engine import RowChecker, TableRuleState
from lakebed.quality.results import RuleResult
from lakebed.quality.rules import compile_rules
from lakebed.schemas.contract import TableContract

ROWS = 2_000
NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)
UTC = dt.UTC

CONTRACT = TableContract.model_validate(
    {
        "name": "engines",
        "keys": ["id"],
        "columns": [
            {"name": "id", "type": "int64", "nullable": False, "unique": True},
            {"name": "qty", "type": "int64", "min": 1, "max": 100},
            {"name": "price", "type": "float64", "min": 0.0, "max": 1000},
            {"name": "amount", "type": "decimal(10,2)", "min": 0.5, "max": 5000},
            {"name": "ts", "type": "timestamp", "min": "2025-01-01T00:00:00", "max": "2025-12-31T23:59:59Z"},
            {"name": "local", "type": "timestamp_ntz", "min": "2025-01-01T02:00:00+02:00"},
            {"name": "day", "type": "date", "min": "2025-01-01", "max": "2025-06-30"},
            {"name": "status", "type": "string", "nullable": False, "allowed": ["placed", "paid", "shipped"]},
            {"name": "email", "type": "string", "regex": r"[a-z]+@example\.com$"},
            {"name": "code", "type": "string", "unique": True, "severity": "warn"},
            {"name": "grade", "type": "string", "min": "B", "max": "E"},
            {"name": "flag", "type": "bool", "allowed": [True]},
        ],
        "rules": [
            {"name": "order_value", "sql": "qty * price <= 60000"},
            {"name": "paid_has_amount", "sql": "status <> 'paid' OR amount > 10", "severity": "warn"},
        ],
    }
)


def _orders(n: int = ROWS, seed: int = 42) -> pa.Table:
    """Mostly valid rows with a known mix of violations and of nulls (which pass all but not_null)."""
    rng = np.random.default_rng(seed)
    pick = lambda share: rng.random(n) < share  # noqa: E731 - a one-line helper
    ids: list[Any] = list(range(n))
    for i in rng.choice(n, 12, replace=False):
        ids[i] = None if i % 2 else int((i + 7) % n)  # nulls and repeated ids

    qty: list[Any] = [int(q) for q in rng.integers(1, 101, n)]
    qty = [
        None if m else (0 if b else (q + 100 if h else q))
        for q, m, b, h in zip(qty, pick(0.05), pick(0.01), pick(0.01), strict=True)
    ]
    qty[:2] = [1, 100]  # the bounds themselves pass
    price: list[Any] = [round(float(p), 2) for p in rng.uniform(0, 1000, n)]
    price = [
        None if m else (-p if b else (p + 1000.5 if h else p))
        for p, m, b, h in zip(price, pick(0.05), pick(0.01), pick(0.01), strict=True)
    ]
    price[:2] = [0.0, 1000.0]
    cents = rng.integers(50, 500_001, n)
    amount: list[Any] = [decimal.Decimal(int(c)) / 100 for c in cents]
    for i in np.flatnonzero(pick(0.01)):
        amount[i] = decimal.Decimal("0.49")
    for i in np.flatnonzero(pick(0.01)):
        amount[i] = decimal.Decimal("5000.01")
    for i in np.flatnonzero(pick(0.05)):
        amount[i] = None
    amount[:2] = [decimal.Decimal("0.50"), decimal.Decimal("5000.00")]

    start = dt.datetime(2025, 1, 1, tzinfo=UTC)
    ts: list[Any] = [start + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 365 * 86_400, n)]
    for i in np.flatnonzero(pick(0.01)):
        ts[i] = start - dt.timedelta(microseconds=1)
    for i in np.flatnonzero(pick(0.01)):
        ts[i] = dt.datetime(2026, 1, 1, tzinfo=UTC)
    for i in np.flatnonzero(pick(0.05)):
        ts[i] = None
    ts[:2] = [start, dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)]
    local: list[Any] = [t.replace(tzinfo=None) if t is not None else None for t in ts]
    local[2] = dt.datetime(2024, 12, 31, 23, 59, 59)  # the bound is 2025-01-01T00:00 UTC
    day: list[Any] = [dt.date(2025, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 200, n)]
    for i in np.flatnonzero(pick(0.05)):
        day[i] = None

    status: list[Any] = list(rng.choice(["placed", "paid", "shipped"], n).tolist())
    for i in np.flatnonzero(pick(0.02)):
        status[i] = "lost"
    for i in np.flatnonzero(pick(0.02)):
        status[i] = None
    names = rng.choice(["ada", "grace", "alan", "barbara"], n).tolist()
    email: list[Any] = [f"{x}@example.com" for x in names]
    for i in np.flatnonzero(pick(0.02)):
        email[i] = f"{names[i]}@example.org"
    for i in np.flatnonzero(pick(0.02)):
        email[i] = f"X{names[i].upper()}1@example.com.evil"
    for i in np.flatnonzero(pick(0.02)):
        email[i] = f"prefix {names[i]}@example.com"  # search semantics: matches
    for i in np.flatnonzero(pick(0.05)):
        email[i] = None
    code: list[Any] = [f"C{i:05d}" for i in range(n)]
    for i in np.flatnonzero(pick(0.01)):
        code[i] = "C00007"  # repeats an existing code
    for i in np.flatnonzero(pick(0.05)):
        code[i] = None  # many nulls: they repeat, yet pass
    grade: list[Any] = rng.choice(
        ["A", "B", "C", "D", "E", "F", "Bz", "E0"], n, p=[0.02, 0.3, 0.2, 0.2, 0.2, 0.02, 0.04, 0.02]
    ).tolist()
    for i in np.flatnonzero(pick(0.05)):
        grade[i] = None
    flag: list[Any] = [bool(b) for b in rng.random(n) < 0.97]
    for i in np.flatnonzero(pick(0.05)):
        flag[i] = None

    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "qty": pa.array(qty, pa.int64()),
            "price": pa.array(price, pa.float64()),
            "amount": pa.array(amount, pa.decimal128(10, 2)),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "local": pa.array(local, pa.timestamp("us")),
            "day": pa.array(day, pa.date32()),
            "status": pa.array(status, pa.string()),
            "email": pa.array(email, pa.string()),
            "code": pa.array(code, pa.string()),
            "grade": pa.array(grade, pa.string()),
            "flag": pa.array(flag, pa.bool_()),
        }
    )


@pytest.fixture(scope="module")
def data() -> pa.Table:
    return _orders()


@pytest.fixture(scope="module")
def failing(data: pa.Table) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Each engine's failing rows per rule, computed once for the module."""
    polars = RowChecker(compile_rules(CONTRACT), CONTRACT).failing_rows(data)
    gx = gx_engine.failing_rows(CONTRACT, data)
    return polars, gx


ROW_RULES = [r.name for r in compile_rules(CONTRACT).row_rules]


def test_the_contract_covers_every_row_rule_kind() -> None:
    kinds = {r.kind for r in compile_rules(CONTRACT).row_rules}
    assert kinds == {"not_null", "between", "allowed", "regex", "unique", "expr"}
    between = {r.column for r in compile_rules(CONTRACT).row_rules if r.kind == "between"}
    assert between >= {"qty", "price", "amount", "ts"}


@pytest.mark.parametrize("rule", ROW_RULES)
def test_engines_fail_the_same_rows(
    rule: str, failing: tuple[dict[str, list[int]], dict[str, list[int]]]
) -> None:
    polars, gx = failing
    assert polars[rule], f"no row breaks {rule}: the test data must exercise it"
    assert len(polars[rule]) < ROWS // 2
    assert gx[rule] == polars[rule]


def test_engines_report_the_same_rules(failing: tuple[dict[str, list[int]], dict[str, list[int]]]) -> None:
    polars, gx = failing
    assert sorted(gx) == sorted(polars) == sorted(ROW_RULES)


def test_nulls_pass_all_but_not_null(
    data: pa.Table, failing: tuple[dict[str, list[int]], dict[str, list[int]]]
) -> None:
    _, gx = failing
    for column in ("qty", "price", "amount", "ts", "day", "email", "code", "grade", "flag"):
        nulls = set(np.flatnonzero(data.column(column).is_null().to_numpy(zero_copy_only=False)).tolist())
        assert nulls, column
        for name, rows in gx.items():
            rule = compile_rules(CONTRACT).get(name)
            if rule.column == column:
                assert not nulls & set(rows), f"{name} fails null rows"
    for bounded in ("qty_between", "price_between", "amount_between", "ts_between"):  # bounds are inclusive
        assert set(gx[bounded]).isdisjoint(range(2)), bounded


def test_run_suite_counts_row_rules_like_polars(
    data: pa.Table, failing: tuple[dict[str, list[int]], dict[str, list[int]]]
) -> None:
    polars, _ = failing
    results = gx_engine.run_suite(CONTRACT, data, now=NOW)
    assert [r.rule.name for r in results] == ROW_RULES
    for result in results:
        expected = len(polars[result.rule.name])
        assert (result.engine, result.failed_rows, result.passed) == ("gx", expected, expected == 0)
        assert result.observed == f"{expected} of {ROWS} rows fail"
        assert result.checked_rows == ROWS
        assert 0 < len(result.samples) <= 5


# --- table rules ----------------------------------------------------------------------------------


def _table_contract(**table_rules: Any) -> TableContract:
    return TableContract.model_validate(
        {
            "name": "engines_table",
            "keys": ["id"],
            "columns": [
                {"name": "id", "type": "int64"},
                {"name": "region", "type": "string"},
                {"name": "ts", "type": "timestamp"},
                {"name": "local", "type": "timestamp_ntz"},
                {"name": "day", "type": "date"},
            ],
            "table_rules": table_rules,
        }
    )


def _keys_table() -> pa.Table:
    newest = dt.datetime(2026, 1, 10, 9, 30, tzinfo=UTC)
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 3, 4, None, None, 5], pa.int64()),
            "region": pa.array(["eu", "eu", "us", "eu", "us", "eu", "eu", None]),
            "ts": pa.array([newest - dt.timedelta(hours=h) for h in range(8)], pa.timestamp("us", tz="UTC")),
            "local": pa.array(
                [newest.replace(tzinfo=None) - dt.timedelta(days=h) for h in range(8)], pa.timestamp("us")
            ),
            "day": pa.array(
                [dt.date(2026, 1, 8), None, dt.date(2026, 1, 1), None, None, None, None, None], pa.date32()
            ),
        }
    )


TABLE_CASES: dict[str, dict[str, Any]] = {
    "row_count_ok": {"row_count": {"min": 1, "max": 8}},
    "row_count_low": {"row_count": {"min": 9}},
    "row_count_high": {"row_count": {"max": 7}},
    "one_key": {"unique_keys": {}},
    "compound_key": {"unique_keys": {"columns": ["id", "region"]}},
    "compound_unique": {"unique_keys": {"columns": ["id", "ts"]}},
    "fresh": {"freshness": {"column": "ts", "max_lag": "3h"}},
    "stale": {"freshness": {"column": "ts", "max_lag": "2h"}},
    "fresh_ntz": {"freshness": {"column": "local", "max_lag": "2h30m"}},
    "stale_ntz": {"freshness": {"column": "local", "max_lag": "2h"}},
    "fresh_date": {"freshness": {"column": "day", "max_lag": "3d"}},
    "stale_date": {"freshness": {"column": "day", "max_lag": "2d"}},
    "all": {
        "row_count": {"min": 1},
        "unique_keys": {"columns": ["id", "region"]},
        "freshness": {"column": "ts", "max_lag": "1d"},
    },
}


def _polars_table_results(contract: TableContract, table: pa.Table) -> list[RuleResult]:
    state = TableRuleState(compile_rules(contract))
    for batch in table.to_batches(max_chunksize=3):
        state.update(batch)
    return state.evaluate(existing_rows=0, existing_keys=None, now=NOW)


def _shape(results: list[RuleResult]) -> list[tuple[str, bool, int, int, str]]:
    return [(r.rule.name, r.passed, r.checked_rows, r.failed_rows, r.observed) for r in results]


def test_table_rules_agree() -> None:
    table = _keys_table()
    outcomes = {}
    for case, rules in TABLE_CASES.items():
        contract = _table_contract(**rules)
        polars = _polars_table_results(contract, table)
        gx = gx_engine.run_suite(contract, table, now=NOW)
        assert _shape(gx) == _shape(polars), case
        assert all(r.engine == "gx" for r in gx)
        outcomes[case] = [r.passed for r in gx]
    # Both outcomes occur, so agreement means something.
    assert outcomes["row_count_ok"] == [True] and outcomes["row_count_low"] == outcomes["row_count_high"] == [
        False
    ]
    assert outcomes["one_key"] == [False] and outcomes["compound_key"] == [False]
    assert outcomes["compound_unique"] == [True]
    assert outcomes["fresh"] == outcomes["fresh_ntz"] == outcomes["fresh_date"] == [True]
    assert outcomes["stale"] == outcomes["stale_ntz"] == outcomes["stale_date"] == [False]


def test_build_suite_names_each_rule() -> None:
    suite = gx_engine.build_suite(CONTRACT, now=NOW)
    names = [e.meta["rule"] for e in suite.expectations]
    assert names == ROW_RULES
    kinds = {e.meta["rule"]: type(e).__name__ for e in suite.expectations}
    assert kinds["id_not_null"] == "ExpectColumnValuesToNotBeNull"
    assert kinds["ts_between"] == "ExpectColumnValuesToBeBetween"
    assert kinds["email_regex"] == "ExpectColumnValuesToMatchRegex"
    assert kinds["code_unique"] == "ExpectColumnValuesToBeUnique"
    assert kinds["order_value"] == "ExpectColumnValuesToBeInSet"


# --- the batched evaluation against a row-by-row reference -------------------------------------------

FAST_CONTRACT = TableContract.model_validate(
    {
        "name": "fast_paths",
        "keys": ["id"],
        "columns": [
            {"name": "id", "type": "int64", "unique": True},
            {"name": "code", "type": "string", "regex": r"^C-\d{2}$"},  # few distinct values
            {"name": "label", "type": "string", "regex": r"^[a-z]+\d*$"},  # mostly distinct values
            {"name": "status", "type": "string", "allowed": ["placed", "paid", "shipped"]},
            {"name": "name", "type": "string", "nullable": False, "unique": True},
            {"name": "qty", "type": "int64", "min": 1, "max": 90},
        ],
        "rules": [{"name": "small_order", "sql": "qty * 2 < 150 OR status = 'paid'"}],
    }
)


def _random_rows(n: int, seed: int, *, ascending_ids: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    gaps = rng.integers(0, 3, n)  # 0: a repeated id next to its twin
    ids: list[Any] = np.cumsum(gaps).tolist() if ascending_ids else rng.integers(0, n, n).tolist()
    nulls = lambda share: rng.random(n) < share  # noqa: E731 - a one-line helper
    codes = [f"C-{c:02d}" for c in rng.integers(0, 40, n)]
    codes = [
        None if m else ("C-7" if b else c) for c, m, b in zip(codes, nulls(0.05), nulls(0.01), strict=True)
    ]
    labels = [f"x{i}" if i % 97 else f"X{i}" for i in range(n)]
    labels = [None if m else v for v, m in zip(labels, nulls(0.05), strict=True)]
    status = rng.choice(["placed", "paid", "shipped", "lost", "PAID"], n, p=[0.4, 0.3, 0.28, 0.01, 0.01])
    names = [f"n{i % (n - 15)}" for i in range(n)]
    return pa.table(
        {
            # Ascending ids without nulls take the adjacent-repeats path of ``unique``.
            "id": pa.array(
                [None if m else v for v, m in zip(ids, nulls(0 if ascending_ids else 0.03), strict=True)],
                pa.int64(),
            ),
            "code": pa.array(codes, pa.string()),
            "label": pa.array(labels, pa.string()),
            "status": pa.array([None if m else s for s, m in zip(status, nulls(0.05), strict=True)]),
            "name": pa.array([None if m else v for v, m in zip(names, nulls(0.01), strict=True)]),
            "qty": pa.array([int(q) for q in rng.integers(0, 100, n)], pa.int64()),
        }
    )


def _reference(table: pa.Table) -> dict[str, list[int]]:
    """Each rule's failing rows, judged one row at a time in Python (the SQL rule by DuckDB)."""
    import collections
    import re

    import duckdb

    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    failing: dict[str, list[int]] = {}
    for rule in compile_rules(FAST_CONTRACT).row_rules:
        values = columns.get(rule.column or "", [])
        if rule.kind == "not_null":
            bad = [v is None for v in values]
        elif rule.kind == "unique":
            seen = collections.Counter(v for v in values if v is not None)
            bad = [v is not None and seen[v] > 1 for v in values]
        elif rule.kind == "regex":
            bad = [v is not None and re.search(rule.params["pattern"], v) is None for v in values]
        elif rule.kind == "allowed":
            bad = [v is not None and v not in rule.params["values"] for v in values]
        elif rule.kind == "between":
            low, high = rule.params["min"], rule.params["max"]
            bad = [v is not None and (v < low or v > high) for v in values]
        else:
            assert rule.kind == "expr"
            sql = f"SELECT NOT coalesce({rule.params['sql']}, true) AS bad FROM rows"
            connection = duckdb.connect()
            connection.register("rows", table)
            bad = [row[0] for row in connection.execute(sql).fetchall()]
            connection.close()
        failing[rule.name] = [i for i, hit in enumerate(bad) if hit]
    return failing


@pytest.mark.parametrize("ascending_ids", [True, False])
@pytest.mark.parametrize("seed", [1, 2])
def test_batched_evaluation_matches_row_by_row_reference(seed: int, ascending_ids: bool) -> None:
    """All rules in one select (with the ascending-id, distinct-value-regex and few-allowed-values paths)
    fail exactly the rows a row-by-row evaluation fails, and ``check`` quarantines exactly those rows."""
    table = _random_rows(10_000, seed, ascending_ids=ascending_ids)
    expected = _reference(table)
    assert all(expected.values()), "the random data must break every rule"
    checker = RowChecker(compile_rules(FAST_CONTRACT), FAST_CONTRACT)
    assert checker.failing_rows(table) == expected

    outcome = checker.check(table.combine_chunks().to_batches()[0])
    assert outcome.failed == {name: len(rows) for name, rows in expected.items()}
    bad_rows = sorted({i for rows in expected.values() for i in rows})
    assert outcome.quarantined is not None
    assert outcome.quarantined.column("name").to_pylist() == table.take(bad_rows).column("name").to_pylist()
    broken = [sorted(name for name, rows in expected.items() if i in set(rows)) for i in bad_rows]
    assert [sorted(r) for r in outcome.quarantined.column("_rules").to_pylist()] == broken
    assert outcome.valid_rows == table.num_rows - len(bad_rows)


@pytest.mark.parametrize(
    "batches",
    [
        [[1, 2, 3], [4, 7, 9], [10]],  # ascending over all batches: judged as it goes
        [[1, 2, 3], [3, 5]],  # a key repeating across two batches
        [[5, 4], [6]],  # not ascending within a batch
        [[1, 2], [None, 3]],  # a null key
    ],
)
def test_unique_keys_judged_incrementally_as_in_one_pass(batches: list[list[int | None]]) -> None:
    contract = TableContract.model_validate(
        {
            "name": "k",
            "keys": ["id"],
            "columns": [{"name": "id", "type": "int64"}],
            "table_rules": {"unique_keys": {}},
        }
    )
    state = TableRuleState(compile_rules(contract))
    for keys in batches:
        state.update(pa.record_batch({"id": pa.array(keys, pa.int64())}))
    [result] = state.evaluate(existing_rows=0)
    flat = [k for keys in batches for k in keys]
    expected = sum(1 for k in flat if flat.count(k) > 1)
    assert result.failed_rows == expected and result.passed == (expected == 0)


@pytest.mark.parametrize("ascending_ids", [True, False])
def test_batches_checked_together_as_one_by_one(ascending_ids: bool) -> None:
    """Checking consecutive batches in one pass (as the write path does) fails, quarantines and keeps
    exactly what checking them one by one does: ``unique`` stays judged within each batch."""
    table = _random_rows(6_000, 3, ascending_ids=ascending_ids)
    batches = table.combine_chunks().to_batches(max_chunksize=1_000)
    # A value repeated across two batches (not within one) is no repeat for `unique`.
    assert len(batches) == 6
    checker = RowChecker(compile_rules(FAST_CONTRACT), FAST_CONTRACT)
    alone = [checker.check(b) for b in batches]
    together = checker.check_together(batches)

    summed: dict[str, int] = {}
    for outcome in alone:
        for name, n in outcome.failed.items():
            summed[name] = summed.get(name, 0) + n
    assert together.failed == summed and any(summed.values())
    quarantined = [o.quarantined for o in alone if o.quarantined is not None]
    assert together.quarantined is not None
    assert together.quarantined.to_pylist() == pa.concat_tables(quarantined).to_pylist()
    kept = pa.Table.from_batches([b for o in alone for b in o.valid])
    assert pa.Table.from_batches(together.valid).to_pylist() == kept.to_pylist()
