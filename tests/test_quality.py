"""Quality checks on every write: contracts, the Polars engine in the write path, quarantine, blocking
table rules, results, replay, the CLI and Dagster asset checks — all against real Delta tables."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable, Transaction

import lakebed
from lakebed.assets.quality import contract_check
from lakebed.assets.resources import LakebedResource
from lakebed.cli import main
from lakebed.errors import ContractError, QualityError, SchemaDriftError
from lakebed.lineage.events import assertions_facet
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import commit
from lakebed.pipelines.ingest import ingest_files
from lakebed.pipelines.quality import (
    RESULTS_TABLE,
    check_table,
    quarantine_rows,
    replay,
)
from lakebed.pipelines.stream.ingest import ingest_stream
from lakebed.pipelines.stream.kafka import produce_records
from lakebed.schemas.contract import TableContract

pytest_plugins = ["streaming_fixtures"]

UTC = dt.UTC


def orders_contract(**changes: Any) -> TableContract:
    spec: dict[str, Any] = {
        "name": "orders",
        "keys": ["order_id"],
        "columns": [
            {"name": "order_id", "type": "int64", "nullable": False},
            {"name": "quantity", "type": "int32", "min": 1, "max": 100},
            {"name": "price", "type": "decimal(10,2)", "min": 0},
            {"name": "currency", "type": "string", "allowed": ["EUR", "USD"]},
            {"name": "sku", "type": "string", "regex": "^SKU-[0-9]{3}$"},
            {"name": "ordered_at", "type": "timestamp", "min": "2020-01-01T00:00:00Z"},
        ],
        "rules": [{"name": "small_line", "sql": "quantity * price < 1000", "severity": "warn"}],
        "table_rules": {"unique_keys": {}},
    }
    spec.update(changes)
    return TableContract.from_dict(spec)


def orders(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [
            ("order_id", pa.int64()),
            ("quantity", pa.int32()),
            ("price", pa.decimal128(10, 2)),
            ("currency", pa.string()),
            ("sku", pa.string()),
            ("ordered_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    defaults = {
        "quantity": 1,
        "price": Decimal("9.99"),
        "currency": "EUR",
        "sku": "SKU-001",
        "ordered_at": dt.datetime(2025, 1, 1, tzinfo=UTC),
    }
    return pa.Table.from_pylist([{**defaults, **r} for r in rows], schema=schema)


def count(table: str) -> int:
    return lakebed.read_table(table).num_rows


def results(version: int | None = None) -> dict[str, dict[str, Any]]:
    rows = lakebed.read_table(RESULTS_TABLE).to_pylist()
    return {r["rule"]: r for r in rows if version is None or r["delta_version"] == version}


# --- contracts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"rules": [{"name": "r", "sql": "nope > 1"}]},
            r"rules\.0 \(r\): sql names unknown columns \['nope'\]",
        ),
        ({"rules": [{"name": "r", "sql": "qty >>> 1"}]}, r"rules\.0\.sql: invalid SQL expression"),
        (
            {"columns": [{"name": "a", "type": "int64", "regex": "x"}]},
            r"columns\.0: regex needs a string column",
        ),
        ({"columns": [{"name": "a", "type": "string", "regex": "("}]}, r"columns\.0: invalid regex"),
        ({"columns": [{"name": "a", "type": "int64", "min": 5, "max": 1}]}, r"min 5 is greater than max 1"),
        (
            {"columns": [{"name": "a", "type": "int64", "min": "x"}]},
            r"min of int64 column 'a' must be a number",
        ),
        ({"columns": [{"name": "a", "type": "int64", "severity": "fatal"}]}, r"columns\.0\.severity"),
        ({"table_rules": {"unique_keys": {}}}, r"unique_keys: give columns or declare the contract's keys"),
        (
            {"table_rules": {"freshness": {"column": "a", "max_lag": "1d"}}},
            r"needs a date or timestamp column",
        ),
        ({"table_rules": {"freshness": {"column": "zz", "max_lag": "1d"}}}, r"unknown column 'zz'"),
        ({"table_rules": {"row_count": {"min": 9, "max": 2}}}, r"table_rules\.row_count: .*min 9 is greater"),
        ({"keys": ["missing"]}, r"keys names unknown columns \['missing'\]"),
        (
            {"columns": [{"name": "a", "type": "int64", "allowed": [1.5, 2]}]},
            r"allowed value 1.5 of int64 column 'a' does not fit",
        ),
        (
            {"columns": [{"name": "a", "type": "string", "regex": "^(?!x)"}]},
            r"columns\.0: invalid regex .\^\(\?!x\).",
        ),
    ],
)
def test_invalid_contracts_name_the_file_and_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    spec = {"name": "t", "columns": [{"name": "a", "type": "int64"}, {"name": "qty", "type": "int64"}]}
    spec.update(change)
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    with pytest.raises(ContractError, match=message) as caught:
        TableContract.from_yaml(path)
    assert str(path) in str(caught.value)


def test_shipped_contracts_compile() -> None:
    from lakebed.examples import SHOP
    from lakebed.quality.rules import compile_rules
    from lakebed.schemas.contract import load_contracts

    contracts = load_contracts(SHOP / "contracts")
    names = {c: [r.name for r in compile_rules(contract).rules] for c, contract in contracts.items()}
    assert "quantity_between" in names["orders"] and "unique_keys" in names["orders"]
    assert "purchase_has_amount" in names["shop_events"]


# --- the write path -------------------------------------------------------------------------------


def test_failing_rows_are_quarantined_with_rules_and_none_are_lost() -> None:
    contract = orders_contract()
    data = orders(
        [
            {"order_id": 1},
            {"order_id": 2, "quantity": 0},  # out of range
            {"order_id": 3, "currency": "XXX"},  # not allowed
            {"order_id": 4, "sku": "sku-1"},  # regex
            {"order_id": 5, "quantity": None, "currency": None, "sku": None},  # nulls pass value rules
            {"order_id": None},  # not null
            {"order_id": 7, "ordered_at": dt.datetime(2019, 5, 1, tzinfo=UTC), "price": Decimal("-1")},
            {"order_id": 8, "quantity": 99, "price": Decimal("50")},  # breaks only the warn rule: kept
        ]
    )
    result = commit("orders", data, contract=contract)
    assert result.rows == 3 and result.quarantined == 5
    kept = sorted(lakebed.read_table("orders").column("order_id").to_pylist())
    assert kept == [1, 5, 8]
    quarantined = quarantine_rows("orders")
    rules = {r["order_id"]: r["_rules"] for r in quarantined.to_pylist()}
    assert rules == {
        2: ["quantity_between"],
        3: ["currency_allowed"],
        4: ["sku_regex"],
        None: ["order_id_not_null"],
        7: ["price_between", "ordered_at_between"],
    }
    row = quarantined.to_pylist()[0]
    assert row["_run_id"] == result.quality.run_id and row["_reason"].startswith(row["_rules"][0])
    assert kept.__len__() + quarantined.num_rows == data.num_rows  # nothing vanished
    # Every rule's result is recorded against the version written.
    recorded = results(result.version)
    assert recorded["quantity_between"]["failed_rows"] == 1 and not recorded["quantity_between"]["passed"]
    assert recorded["small_line"]["severity"] == "warn" and recorded["small_line"]["failed_rows"] == 1
    assert recorded["unique_keys"]["passed"] and recorded["currency_allowed"]["checked_rows"] == 8


def test_text_that_does_not_convert_is_quarantined_with_the_original_value() -> None:
    contract = orders_contract()
    data = pa.table(
        {
            "order_id": ["1", "2", "x3", " 4 "],
            "quantity": ["5", "many", "1", "2"],
            "ordered_at": [
                "2025-01-01T10:00:00Z",
                "2025-01-02T00:00:00Z",
                "yesterday",
                "2025-01-03T00:00:00Z",
            ],
        }
    )
    result = commit("orders", data, contract=contract)
    assert result.rows == 2 and result.quarantined == 2
    table = lakebed.read_table("orders")
    assert table.schema.field("order_id").type == pa.int64()
    assert table.schema.field("ordered_at").type == pa.timestamp("us", tz="UTC")
    assert sorted(table.column("order_id").to_pylist()) == [1, 4]
    bad = {json.loads(r["_raw"])["order_id"]: r["_rules"] for r in quarantine_rows("orders").to_pylist()}
    assert bad == {"2": ["quantity_type"], "x3": ["order_id_type", "ordered_at_type"]}


def test_error_table_rule_blocks_the_commit_and_warn_commits() -> None:
    contract = orders_contract()
    commit("orders", orders([{"order_id": 1}, {"order_id": 2}]), contract=contract)
    before = DeltaTable(Catalog().get("orders").uri).version()
    with pytest.raises(
        QualityError, match=r"blocked by quality rule\(s\): unique_keys .*3 rows with a repeated key"
    ):
        commit("orders", orders([{"order_id": 2}, {"order_id": 3}, {"order_id": 3}, {"order_id": 4}]))
    assert DeltaTable(Catalog().get("orders").uri).version() == before  # nothing written
    assert count("orders") == 2
    blocked = [r for r in lakebed.read_table(RESULTS_TABLE).to_pylist() if r["blocked"]]
    assert [(r["rule"], r["delta_version"]) for r in blocked] == [("unique_keys", None)]
    # The same rule at warn severity records the failure and writes.
    warn = orders_contract(table_rules={"unique_keys": {"severity": "warn"}})
    result = commit("orders", orders([{"order_id": 2}, {"order_id": 5}]), contract=warn)
    assert result.version == before + 1 and count("orders") == 4
    assert not results(result.version)["unique_keys"]["passed"]


def test_row_count_and_freshness_table_rules() -> None:
    now = dt.datetime.now(UTC)
    contract = orders_contract(
        table_rules={
            "row_count": {"max": 3},
            "freshness": {"column": "ordered_at", "max_lag": "1h", "severity": "error"},
        }
    )
    fresh = now - dt.timedelta(minutes=5)
    result = commit(
        "orders", orders([{"order_id": i, "ordered_at": fresh} for i in (1, 2)]), contract=contract
    )
    assert results(result.version)["freshness"]["passed"]
    with pytest.raises(QualityError, match=r"row_count .*: 4 rows"):
        commit("orders", orders([{"order_id": i, "ordered_at": fresh} for i in (3, 4)]))
    with pytest.raises(QualityError, match=r"freshness .*lag 1d"):
        commit("orders", orders([{"order_id": 3, "ordered_at": now - dt.timedelta(days=1)}]))
    assert count("orders") == 2


def test_empty_batch_and_a_batch_failing_every_row() -> None:
    contract = orders_contract()
    commit("orders", orders([{"order_id": 1}]), contract=contract)
    version = DeltaTable(Catalog().get("orders").uri).version()
    empty = commit("orders", orders([]))
    assert empty.version is None and empty.rows == 0 and empty.quarantined == 0
    assert DeltaTable(Catalog().get("orders").uri).version() == version
    everything_bad = orders([{"order_id": i, "quantity": 0} for i in range(10, 60)])
    result = commit("orders", everything_bad)
    assert result.rows == 0 and result.quarantined == 50
    assert count("orders") == 1 and quarantine_rows("orders").num_rows == 50


def test_a_rule_on_a_column_the_data_lacks() -> None:
    contract = orders_contract()
    # A nullable column with rules that the data lacks is written as null; nulls pass its rules.
    result = commit("orders", pa.table({"order_id": [1, 2]}), contract=contract)
    assert result.rows == 2 and result.quarantined == 0
    # A required column that is missing is a schema error naming it.
    strict = orders_contract(columns=[{"name": "order_id", "type": "int64", "nullable": False}], rules=[])
    with pytest.raises(SchemaDriftError, match=r"lacks required .*\['order_id'\]"):
        commit("other", pa.table({"x": [1]}), contract=strict.model_copy(update={"name": "other"}))


def test_retried_write_with_app_transactions_quarantines_once() -> None:
    contract = orders_contract()
    data = orders([{"order_id": 1}, {"order_id": 2, "quantity": 0}])
    txn = [Transaction(app_id="orders:feed:0", version=41)]
    commit("orders", data, contract=contract, app_transactions=txn)
    # A retry of the same write (e.g. after a crash before the caller saw the result) fences its
    # quarantine commit with the same transactions.
    commit("orders", orders([{"order_id": 3}, {"order_id": 2, "quantity": 0}]), app_transactions=txn)
    assert quarantine_rows("orders").num_rows == 1


def test_file_ingest_quarantines_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    lines = [
        {"order_id": 1, "quantity": 2},
        {"order_id": 2, "quantity": 0},
        None,  # a blank line
        "{broken json",
        {"order_id": 3, "quantity": 500},
        {"order_id": 4, "quantity": 3},
    ]
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else (x or "")) + "\n" for x in lines))
    result = ingest_files(path, table="orders", contract=orders_contract(), on_bad_rows="reject")
    assert result.rows == 2 and result.quarantined == 2 and result.rejected == 1
    bad = {
        r["order_id"]: (r["_source_file"], r["_source_line"]) for r in quarantine_rows("orders").to_pylist()
    }
    assert bad == {2: (str(path.resolve()), 2), 3: (str(path.resolve()), 5)}
    kept = lakebed.read_table("orders").select(["order_id", "_source_line"]).to_pylist()
    assert sorted(kept, key=lambda r: r["order_id"]) == [
        {"order_id": 1, "_source_line": 1},
        {"order_id": 4, "_source_line": 6},
    ]
    csv = tmp_path / "more.csv"
    csv.write_text("order_id,quantity\n10,1\n11,0\n12,1\n")
    ingest_files(csv, table="orders")
    lines_of = {r["order_id"]: r["_source_line"] for r in quarantine_rows("orders").to_pylist()}
    assert lines_of[11] == 3


def test_stream_rows_are_quarantined_with_topic_partition_offset(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(2)
    contract = TableContract.from_dict(
        {
            "name": "clicks",
            "columns": [
                {"name": "id", "type": "int64", "nullable": False},
                {"name": "kind", "type": "string", "allowed": ["view", "buy"]},
            ],
        }
    )
    records = [{"id": i, "kind": "refund" if i % 10 == 3 else "view"} for i in range(100)]
    produce_records(bootstrap, topic, records[:50], key=lambda r: b"a", partition=0)
    produce_records(bootstrap, topic, records[50:], key=lambda r: b"b", partition=1)
    result = ingest_stream(topic, "clicks", bootstrap=bootstrap, contract=contract, until_caught_up=True)
    assert result.records == 90 and result.quarantined == 10 and result.dead_letters == 0
    quarantined = quarantine_rows("clicks").to_pylist()
    positions = {(r["_topic"], r["_partition"], r["_offset"]) for r in quarantined}
    assert positions == {(topic, i // 50, i % 50) for i in range(100) if i % 10 == 3}
    assert all(r["_rules"] == ["kind_allowed"] for r in quarantined)
    again = ingest_stream(topic, "clicks", bootstrap=bootstrap, until_caught_up=True)
    assert again.records == 0 and quarantine_rows("clicks").num_rows == 10
    # A retried write of records already quarantined (the data commit failed after the quarantine
    # commit) does not quarantine them twice.
    retried = pa.Table.from_pylist(
        [{"id": 3, "kind": "refund", "_topic": topic, "_partition": 0, "_offset": 3}],
        schema=pa.schema(
            [
                ("id", pa.int64()),
                ("kind", pa.string()),
                ("_topic", pa.string()),
                ("_partition", pa.int32()),
                ("_offset", pa.int64()),
            ]
        ),
    )
    commit("clicks", retried, quarantine_key=("_topic", "_partition", "_offset"))
    assert quarantine_rows("clicks").num_rows == 10


# --- replay, checks, results ----------------------------------------------------------------------


def test_replay_after_a_contract_fix_runs_exactly_once() -> None:
    strict = orders_contract()
    commit(
        "orders",
        orders([{"order_id": 1}, {"order_id": 2, "quantity": 0}, {"order_id": 3, "currency": "XXX"}]),
        contract=strict,
    )
    assert replay("orders").skipped == "all 2 pending row(s) were quarantined under the current contract"
    fixed = orders_contract(
        columns=[
            {"name": "order_id", "type": "int64", "nullable": False},
            {"name": "quantity", "type": "int32", "min": 0, "max": 100},
            {"name": "currency", "type": "string", "allowed": ["EUR", "USD"]},
        ],
        rules=[],
    )
    Catalog().register("orders", uri=Catalog().get("orders").uri, kind="table", contract=fixed)
    first = replay("orders")
    assert (first.replayed, first.committed, first.requarantined) == (2, 1, 1)
    assert sorted(lakebed.read_table("orders").column("order_id").to_pylist()) == [1, 2]
    second = replay("orders")
    assert second.skipped is not None and second.committed == 0
    assert sorted(lakebed.read_table("orders").column("order_id").to_pylist()) == [1, 2]
    history = DeltaTable(Catalog().get("orders").uri).history(1)[0]
    assert json.loads(history["lakebed.replay"])["quarantine"] == "orders__quarantine"


def test_check_table_at_a_version_and_the_facet() -> None:
    loose = TableContract(name="orders")  # no rules: nothing is checked on write
    v0 = commit("orders", orders([{"order_id": 1}, {"order_id": 2}]), contract=loose).version
    commit("orders", orders([{"order_id": 2, "quantity": 0}]))
    strict = orders_contract()
    old = check_table("orders", version=v0, contract=strict)
    assert old.passed and old.version == v0
    new = check_table("orders", contract=strict)
    assert not new.passed and new.version == v0 + 1
    failures = {r.rule.name: r for r in new.failures}
    assert set(failures) == {"quantity_between", "unique_keys"}
    assert (
        failures["quantity_between"].failed_rows == 1
        and failures["quantity_between"].samples[0]["order_id"] == 2
    )
    recorded = results(new.version)
    assert not recorded["unique_keys"]["passed"] and recorded["unique_keys"]["job"] == "quality_check:orders"
    facet = assertions_facet(new.results)
    shaped = {a["assertion"]: a for a in facet["assertions"]}
    assert not shaped["quantity_between"]["success"] and shaped["quantity_between"]["column"] == "quantity"
    assert shaped["order_id_not_null"]["success"] and shaped["unique_keys"]["column"] == "order_id"
    assert "DataQualityAssertionsDatasetFacet.json" in facet["_schemaURL"]


def test_cli_check_replay_quarantine_results() -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    commit("orders", orders([{"order_id": 1}, {"order_id": 2, "quantity": 0}]), contract=orders_contract())
    ok = runner.invoke(main, ["quality", "check", "orders"])
    assert ok.exit_code == 0, ok.output
    assert "quantity_between" in ok.output and "pass" in ok.output
    shown = runner.invoke(main, ["quality", "quarantine", "orders"])
    assert shown.exit_code == 0 and "quantity_between" in shown.output
    listed = runner.invoke(main, ["quality", "results", "orders", "--failed"])
    assert listed.exit_code == 0 and "quantity_between" in listed.output
    # Rows written around the contract fail the check: exit status 1.
    Catalog().register("orders", kind="table", contract=TableContract(name="orders"))
    commit("orders", orders([{"order_id": 1, "quantity": 0}]))
    Catalog().register("orders", uri=Catalog().get("orders").uri, kind="table", contract=orders_contract())
    failed = runner.invoke(main, ["quality", "check", "orders", "--format", "json"])
    assert failed.exit_code == 1
    report = json.loads(failed.stdout)
    assert {"quantity_between", "unique_keys"} <= {r["rule"] for r in report if r["result"] == "FAIL"}
    assert "fails error rule(s)" in failed.stderr
    replayed = runner.invoke(main, ["quality", "replay", "orders"])
    assert replayed.exit_code == 0 and "nothing replayed" in replayed.output


def test_blocking_asset_check_stops_downstream_assets() -> None:
    contract = orders_contract()

    @dg.asset(name="orders")
    def orders_asset() -> None:
        # Written without the contract (as an upstream system might): the check must catch it.
        commit("orders", orders([{"order_id": 1}, {"order_id": 2, "quantity": 0}]))

    @dg.asset(deps=["orders"])
    def revenue() -> None:
        commit("revenue", pa.table({"total": [1]}))

    check = contract_check("orders", contract)
    result = dg.materialize(
        [orders_asset, revenue, check],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"lakebed": LakebedResource()},
        raise_on_error=False,
    )
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1 and not evaluations[0].passed
    assert evaluations[0].severity == dg.AssetCheckSeverity.ERROR
    metadata = evaluations[0].metadata
    assert metadata["lakebed/failed_rules"].value == ["quantity_between"]
    assert metadata["lakebed/failed_rows"].value == 1
    assert metadata["lakebed/sample_rows"].value[0]["order_id"] == 2
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"orders"}  # revenue did not run on bad data
    assert Catalog().find("revenue") is None


def test_passing_asset_check_lets_downstream_run() -> None:
    @dg.asset(name="orders")
    def orders_asset() -> None:
        commit("orders", orders([{"order_id": 1}]), contract=orders_contract())

    @dg.asset(deps=["orders"])
    def revenue() -> None:
        commit("revenue", pa.table({"total": [1]}))

    result = dg.materialize(
        [orders_asset, revenue, contract_check("orders", orders_contract())],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"lakebed": LakebedResource()},
    )
    assert result.success and result.get_asset_check_evaluations()[0].passed
    assert count("revenue") == 1
