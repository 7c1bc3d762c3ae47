"""The CLI as scripts use it: every listing and query command with ``--format json`` and ``csv``, run as a
real ``lakebed`` process on a lake made by real ingests, a feature backfill and a tier move; tables that
keep long names whole; exit codes."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lakebed.config import reset_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "lakebed" / "examples" / "shop" / "data"
CONTRACTS = ROOT / "lakebed" / "examples" / "shop" / "contracts"
VIEWS = ROOT / "lakebed" / "examples" / "shop" / "feature_views"
# Two tables whose names share a long prefix: a table cut at the terminal's width shows them alike.
LONG = "customer_activity_snapshot_with_a_rather_long_name"
LONG_NAMES = (LONG, f"{LONG}_archive")
MOVED_BEFORE = "2025-11-01T00:00:00+00:00"


def lakebed(
    home: Path, *args: str, columns: int | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``lakebed ARGS`` as its own process on lakebed home ``home`` (stdout is a pipe, not a TTY)."""
    env = {**os.environ, "LAKEBED_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("COLUMNS", None)
    env.pop("LAKEBED_CONFIG", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    done = subprocess.run(
        [sys.executable, "-m", "lakebed.cli", *args],
        env=env,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert done.returncode == 0, f"lakebed {' '.join(args)}: {done.stderr}"
    return done


def as_json(home: Path, *args: str) -> list[dict[str, Any]]:
    """``lakebed ARGS --format json``: one JSON array of objects, nothing else on stdout."""
    rows = json.loads(lakebed(home, *args, "--format", "json").stdout)
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows), rows
    return rows


def as_csv(home: Path, *args: str) -> tuple[list[str], list[dict[str, str]]]:
    out = lakebed(home, *args, "--format", "csv").stdout
    reader = csv.DictReader(io.StringIO(out))
    return list(reader.fieldnames or []), list(reader)


def csv_text(value: Any) -> str:
    """What a csv cell holds for a json value: strings as they are, null empty, the rest as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lakebed home made through the CLI: orders with quarantined rows, web_events partly moved to the
    cold tier, shop_events with the customer_activity feature view backfilled, two long-named tables."""
    home = tmp_path_factory.mktemp("cli") / "home"
    orders = ["ingest", str(SAMPLES / "orders"), "--table", "orders"]
    lakebed(home, *orders, "--contract", str(CONTRACTS / "orders.yaml"))
    web = ["ingest", str(SAMPLES / "web_events.parquet"), "--table", "web_events"]
    lakebed(home, *web, "--contract", str(CONTRACTS / "web_events.yaml"))
    lakebed(home, "tier", "move", "web_events", "--before", MOVED_BEFORE)
    shop = ["ingest", str(SAMPLES / "stream" / "shop_events.jsonl"), "--table", "shop_events"]
    lakebed(home, *shop, "--contract", str(CONTRACTS / "shop_events.yaml"))
    lakebed(
        home, "features", "backfill", "customer_activity:v1", "--file", str(VIEWS / "customer_activity.yaml")
    )
    notes = home.parent / "notes.csv"
    notes.write_text("id,note\n1,short\n2,a longer note that a narrow table has to wrap over several lines\n")
    for name in LONG_NAMES:
        lakebed(home, "ingest", str(notes), "--table", name)
    return home


@pytest.fixture
def at_lake(lake: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The Python API pointed at the same home, to check what the CLI prints against what is there."""
    monkeypatch.setenv("LAKEBED_HOME", str(lake))
    reset_config()
    yield lake
    reset_config()


def _instant(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    assert moment.tzinfo is not None, text
    return moment


# --- json -----------------------------------------------------------------------------------------


def test_tables_json(at_lake: Path) -> None:
    from deltalake import DeltaTable

    import lakebed as api

    rows = {r["table"]: r for r in as_json(at_lake, "tables")}
    assert {"orders", "orders__quarantine", "web_events", "fv_customer_activity_v1", *LONG_NAMES} <= set(rows)
    assert rows["orders"]["kind"] == "table" and rows["orders__quarantine"]["kind"] == "rejects"
    assert rows["orders"]["rows"] == api.read_table("orders").num_rows
    assert rows["orders"]["version"] == DeltaTable(rows["orders"]["location"]).version()
    assert rows[LONG]["rows"] == 2 and rows[f"{LONG}_archive"]["rows"] == 2
    assert list(rows["orders"]) == ["table", "kind", "version", "rows", "location"]


def test_history_json(lake: Path) -> None:
    from deltalake import DeltaTable

    location = {r["table"]: r["location"] for r in as_json(lake, "tables")}["orders"]
    rows = as_json(lake, "history", "orders")
    commits = DeltaTable(location).history()
    assert [r["version"] for r in rows] == [c["version"] for c in commits]
    assert [r["run_id"] for r in rows] == [c.get("lakebed.run_id") for c in commits]
    assert all(r["operation"] == "WRITE" and r["job"] == "ingest:orders" for r in rows)
    assert all(_instant(r["timestamp"]).year >= 2025 for r in rows)
    assert as_json(lake, "history", "orders", "--limit", "1") == rows[:1]


def test_show_json(lake: Path) -> None:
    rows = as_json(lake, "show", "orders", "--limit", "7", "--where", "quantity > 2")
    assert len(rows) == 7 and all(r["quantity"] > 2 for r in rows)
    assert all(_instant(r["ordered_at"]).year == 2025 and isinstance(r["unit_price"], float) for r in rows)
    assert all(r["_source_file"].endswith(".csv") for r in rows)


def test_sql_json_values(lake: Path) -> None:
    counts = as_json(lake, "sql", "SELECT status, count(*) AS n FROM orders GROUP BY 1 ORDER BY 1")
    shown = as_json(lake, "show", "orders", "--limit", "100000")
    by_status: dict[str, int] = {}
    for row in shown:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    assert {r["status"]: r["n"] for r in counts} == by_status
    query = (
        "SELECT '\\x01\\x02'::BLOB AS b, [1, 2] AS l, {'k': 'v'} AS s, NULL AS z, 1.5::DOUBLE AS f, "
        "TIMESTAMPTZ '2025-01-01 00:00:00+00' AS t, DATE '2025-02-03' AS d, INTERVAL 90 MINUTE AS i"
    )
    [row] = as_json(lake, "sql", query)
    assert row["b"] == "AQI=" and row["l"] == [1, 2] and row["s"] == {"k": "v"} and row["z"] is None
    assert row["f"] == 1.5 and _instant(row["t"]) == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert row["d"] == "2025-02-03" and row["i"] == "PT1H30M"
    assert as_json(lake, "sql", "SELECT 1 AS x WHERE false") == []
    assert as_json(lake, "sql", "SELECT 1 AS a, 2 AS a") == [{"a": 1, "a_1": 2}]  # no value lost


def test_quality_json(at_lake: Path) -> None:
    import lakebed as api

    quarantined = as_json(at_lake, "quality", "quarantine", "orders")
    assert len(quarantined) == api.read_table("orders__quarantine").num_rows > 0
    assert {"sku_regex", "quantity_between"} <= {rule for r in quarantined for rule in r["rules"]}
    for row in quarantined:
        assert row["source"]["_source_file"].endswith(".csv") and row["source"]["_source_line"] > 1
        assert isinstance(row["row"]["order_id"], int) and row["reason"] and _instant(row["quarantined_at"])
    assert len(as_json(at_lake, "quality", "quarantine", "orders", "--limit", "1")) == 1
    assert as_json(at_lake, "quality", "quarantine", "web_events") == []

    failed = as_json(at_lake, "quality", "results", "orders", "--failed", "--limit", "100")
    assert failed and all(r["table_name"] == "orders" and r["passed"] is False for r in failed)
    assert "quantity_between" in {r["rule"] for r in failed}

    rules = {r["rule"]: r for r in as_json(at_lake, "quality", "rules", "orders")}
    assert rules["sku_regex"]["severity"] == "error" and rules["status_allowed"]["severity"] == "warn"
    checked = as_json(at_lake, "quality", "check", "orders")
    assert {r["rule"] for r in checked} == set(rules)
    assert all(r["result"] == "pass" and r["table"] == "orders" for r in checked if r["severity"] == "error")


def test_lineage_json(lake: Path) -> None:
    runs = as_json(lake, "lineage", "runs", "--limit", "100")
    jobs = {r["job"] for r in runs}
    assert {"ingest:orders", "tier_move:web_events", "features.backfill.customer_activity.v1"} <= jobs
    assert all(r["state"] == "COMPLETE" and _instant(r["started_at"]) for r in runs)
    assert (
        as_json(lake, "lineage", "runs", "--job", "ingest:orders", "--limit", "1")[0]["job"]
        == "ingest:orders"
    )

    history = as_json(lake, "lineage", "history", "orders")
    commits = as_json(lake, "history", "orders")
    assert sorted(r["version"] for r in history) == sorted(c["version"] for c in commits)
    assert {r["run_id"] for r in history} == {c["run_id"] for c in commits}

    [producer] = as_json(lake, "lineage", "producer", "orders")
    assert producer["job_name"] == "ingest:orders" and producer["run_id"] == commits[0]["run_id"]
    assert any(o["name"].endswith("orders") for o in producer["outputs"]) and "orders" in producer["quality"]


def test_features_json(at_lake: Path) -> None:
    from lakebed.feature_store import FeatureStore

    [view] = as_json(at_lake, "features", "list")
    assert view["view"] == "customer_activity:v1" and view["entities"] == ["customer_id"]
    assert view["ttl"] == "2d" and view["offline_table"] == "fv_customer_activity_v1"
    assert {"events_1h", "spend_1d", "last_event_type"} <= set(view["features"])

    refs = ["customer_activity:v1:events_1h", "customer_activity:v1:last_event_type"]
    now = "2025-06-01T12:00:00+00:00"
    args = ["features", "get-online", "--entity", "customer_id=56", "--now", now]
    online = as_json(at_lake, *args, *(a for ref in refs for a in ("--features", ref)))
    expected = FeatureStore().get_online_features(
        refs, {"customer_id": "56"}, now=dt.datetime.fromisoformat(now)
    )
    assert online == expected.to_pylist() and len(online) == 1


def test_tier_status_json(lake: Path) -> None:
    [status] = as_json(lake, "tier", "status", "web_events")
    [total] = as_json(lake, "sql", "SELECT count(*) AS n FROM web_events")
    [cold] = as_json(lake, "sql", f"SELECT count(*) AS n FROM web_events WHERE event_time < '{MOVED_BEFORE}'")
    assert status["hot_rows"] + status["cold_rows"] == total["n"] and status["cold_rows"] == cold["n"] > 0
    assert _instant(status["watermark"]) == dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
    assert status["column"] == "event_time" and status["in_flight"] is False
    assert status["policy_hot_for"] == "P90D" and status["policy_hot_bytes"] == 256 << 20


def test_values_in_json() -> None:
    from decimal import Decimal

    from lakebed.cli_output import cell_text, iso_duration, json_value, text_value

    assert [
        iso_duration(dt.timedelta(**k)) for k in ({}, {"days": 2}, {"seconds": 0.5}, {"minutes": -1})
    ] == [
        "PT0S",
        "P2D",
        "PT0.5S",
        "-PT1M",
    ]
    assert json_value(dt.timedelta(days=1, hours=2, minutes=3, seconds=4)) == "P1DT2H3M4S"
    assert json_value([float("nan"), float("inf"), Decimal("2"), Decimal("2.5")]) == [
        "NaN",
        "Infinity",
        2,
        2.5,
    ]
    assert json_value({"b": b"\xff", "t": dt.time(1, 2)}) == {"b": "/w==", "t": "01:02:00"}
    assert text_value(None) == "" and text_value(True) == "true" and text_value({"k": [1]}) == '{"k": [1]}'
    assert cell_text(None) == "∅" and cell_text(b"abc") == "<3 bytes>" and cell_text(["a", "b"]) == "a, b"


# --- csv ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("tables",),
        ("history", "orders"),
        ("show", "orders", "--limit", "5"),
        ("quality", "quarantine", "orders"),
        ("lineage", "history", "orders"),
        ("features", "list"),
        ("tier", "status", "web_events"),
    ],
    ids=lambda args: "-".join(args[:2]),
)
def test_csv_holds_what_json_holds(lake: Path, args: tuple[str, ...]) -> None:
    rows = as_json(lake, *args)
    header, records = as_csv(lake, *args)
    assert rows and header == list(rows[0])
    assert records == [{k: csv_text(v) for k, v in row.items()} for row in rows]


# --- tables for people ----------------------------------------------------------------------------


def _cells(output: str) -> list[list[str]]:
    """The rows of a rich table as cells, joining the lines a wrapped cell was folded over."""
    rows: list[list[str]] = []
    fresh = True
    for line in output.splitlines():
        if line.startswith(("┡", "├")):
            fresh = True
        elif line.startswith("│"):
            parts = [p.strip() for p in line.strip().strip("│").split("│")]
            if fresh:
                rows.append(parts)
                fresh = False
            else:
                rows[-1] = [a + b for a, b in zip(rows[-1], parts, strict=True)]
    return rows


def test_narrow_table_wraps_names_whole(lake: Path) -> None:
    out = lakebed(lake, "tables", columns=40).stdout
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 40
    names = [row[0] for row in _cells(out)]
    assert names == [r["table"] for r in as_json(lake, "tables")]
    assert set(LONG_NAMES) <= set(names)


def test_piped_table_keeps_each_row_on_one_line(lake: Path) -> None:
    out = lakebed(lake, "tables").stdout
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert set(lines) == {r["table"] for r in as_json(lake, "tables")}
    assert all(f" {name} " in lines[name] for name in LONG_NAMES)
    shown = lakebed(lake, "show", LONG).stdout
    assert "a longer note that a narrow table has to wrap over several lines" in shown and "2 row(s)" in shown


# --- exit codes and streams -----------------------------------------------------------------------


def test_help_documents_formats_and_exit_codes(lake: Path) -> None:
    out = lakebed(lake, "--help").stdout
    assert "--format table|json|csv" in out and "one JSON array of objects" in out
    assert "0  success" in out and "1  an error" in out and "2  a usage error" in out
    assert "exit status 1 when an error rule fails" in lakebed(lake, "quality", "check", "--help").stdout


def test_errors_go_to_stderr_with_their_exit_code(lake: Path) -> None:
    missing = lakebed(lake, "show", "missing", "--format", "json", ok=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no lakebed table named 'missing'" in missing.stderr
    bad_sql = lakebed(lake, "sql", "SELEC 1", "--format", "json", ok=False)
    assert bad_sql.returncode == 1 and bad_sql.stdout == "" and bad_sql.stderr.startswith("error: ")
    usage = lakebed(lake, "tables", "--format", "xml", ok=False)
    assert usage.returncode == 2 and usage.stdout == "" and "--format" in usage.stderr
    moved = lakebed(lake, "tier", "move", "web_events", "--before", MOVED_BEFORE)
    assert "━" not in moved.stdout + moved.stderr  # no progress bar outside a terminal
