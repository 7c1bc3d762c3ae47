"""Running SQL models on real Delta tables: a full build, exact increments (equal to a rebuild), up-to-date
runs, the bookkeeping in the commit, column lineage, and a failing model leaving its table untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from deltalake import DeltaTable

from lakebed.config import LakebedConfig, project_config
from lakebed.errors import ModelError, ProjectError
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.models.run import APP_ID, run_model
from lakebed.pipelines.models.select import select_models
from lakebed.pipelines.read import read_table
from lakebed.pipelines.sources import ingest_source
from lakebed.schemas.project import Project, load_project

SOURCES = """sources:
  - {table: orders, kind: files, path: data/orders, format: csv}
  - {table: products, kind: files, path: data/products.csv, format: csv}
"""
CLEAN = """/* lakebed
materialized: incremental
description: Paid orders with a positive quantity.
*/
SELECT order_id, sku, quantity, quantity * price AS amount, CAST(day AS DATE) AS day
FROM orders
WHERE status = 'paid' AND quantity > 0
"""
REVENUE = """SELECT o.day, p.category, sum(o.amount) AS revenue, count(*) AS orders
FROM orders_clean o JOIN products p USING (sku)
GROUP BY ALL
"""


def _orders(path: Path, first: int, count: int) -> None:
    ids = list(range(first, first + count))
    pacsv.write_csv(
        pa.table(
            {
                "order_id": ids,
                "sku": [f"S{i % 7}" for i in ids],
                "quantity": [i % 5 for i in ids],
                "price": [float(i % 11) + 0.5 for i in ids],
                "status": ["paid" if i % 3 else "open" for i in ids],
                "day": [f"2026-11-{1 + i % 28:02d}" for i in ids],
            }
        ),
        path,
    )


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Project, LakebedConfig]:
    root = tmp_path / "shop"
    for folder in ("sources", "models", "data/orders"):
        (root / folder).mkdir(parents=True)
    (root / "lakebed.toml").write_text('[project]\nname = "shop"\n')
    (root / "sources" / "shop.yaml").write_text(SOURCES)
    (root / "models" / "orders_clean.sql").write_text(CLEAN)
    (root / "models" / "revenue.sql").write_text(REVENUE)
    _orders(root / "data" / "orders" / "day1.csv", 1, 300)
    categories = {"sku": [f"S{i}" for i in range(7)], "category": ["tea", "coffee"] * 3 + ["cups"]}
    pacsv.write_csv(pa.table(categories), root / "data" / "products.csv")
    project = load_project(root)
    config = project_config(root)
    _ingest(project, config)
    return project, config


def _ingest(project: Project, config: LakebedConfig) -> None:
    for source in project.sources:
        ingest_source(project, source, config=config)  # type: ignore[arg-type]


def _expected(project: Project, config: LakebedConfig, sql: str) -> list[dict[str, object]]:
    """``sql`` in bare DuckDB over the raw CSV files (an independent reading of the inputs)."""
    connection = duckdb.connect()
    data = project.root / "data"
    connection.execute(f"CREATE VIEW orders AS SELECT * FROM read_csv('{data}/orders/*.csv')")
    connection.execute(f"CREATE VIEW products AS SELECT * FROM read_csv('{data}/products.csv')")
    connection.execute(f"CREATE VIEW orders_clean AS {CLEAN.split('*/', 1)[1]}")
    return sorted(connection.sql(sql).to_arrow_table().to_pylist(), key=_key)


def _rows(table: str, config: LakebedConfig, columns: list[str]) -> list[dict[str, object]]:
    return sorted(read_table(table, columns=columns, config=config).to_pylist(), key=_key)


def _key(row: dict[str, object]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def test_models_build_then_increment_exactly(shop: tuple[Project, LakebedConfig]) -> None:
    project, config = shop
    clean_columns = ["order_id", "sku", "quantity", "amount", "day"]
    first = run_model(project, "orders_clean", config=config)
    assert first.status == "rebuilt" and first.reason == "first run" and first.rows > 0
    revenue = run_model(project, "revenue", config=config)
    assert revenue.status == "rebuilt"
    assert _rows("orders_clean", config, clean_columns) == _expected(
        project, config, "SELECT * FROM orders_clean"
    )
    assert _rows("revenue", config, ["day", "category", "revenue", "orders"]) == _expected(
        project, config, REVENUE
    )

    # Lineage: the inputs at the versions read, the output with its column lineage.
    events = [
        json.loads(line) for line in (config.home / "lineage" / "events.jsonl").read_text().splitlines()
    ]
    [done] = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "model:revenue"]
    versions = {
        i["name"].rsplit("/", 1)[-1]: i["facets"]["version"]["datasetVersion"] for i in done["inputs"]
    }
    assert versions == {"orders_clean": str(first.version), "products": "0"}
    [output] = done["outputs"]
    fields = output["facets"]["columnLineage"]["fields"]
    assert {f["field"] for f in fields["revenue"]["inputFields"]} == {"amount"}
    assert fields["category"]["inputFields"][0]["name"].endswith("products")

    # Nothing changed: nothing to do.
    assert run_model(project, "orders_clean", config=config).status == "up_to_date"

    # A new day of orders: the incremental model reads only its rows, and equals a rebuild.
    _orders(project.root / "data" / "orders" / "day2.csv", 301, 120)
    _ingest(project, config)
    second = run_model(project, "orders_clean", config=config)
    assert second.status == "incremental" and second.rows == len(
        _expected(project, config, "SELECT * FROM orders_clean WHERE order_id > 300")
    )
    table = DeltaTable(Catalog(config).get("orders_clean").uri)
    assert table.history(1)[0]["operation"] == "WRITE" and "append" in json.dumps(table.history(1)[0]).lower()
    assert _rows("orders_clean", config, clean_columns) == _expected(
        project, config, "SELECT * FROM orders_clean"
    )
    orders_version = DeltaTable(Catalog(config).get("orders").uri).version()
    assert table.transaction_version(APP_ID.format(model="orders_clean", input="orders")) == orders_version
    recorded = json.loads(table.history(1)[0]["lakebed.model"])
    assert recorded == {
        "code_version": project.models["orders_clean"].code_version,
        "inputs": {"orders": orders_version},
    }
    run_model(project, "revenue", config=config)
    assert _rows("revenue", config, ["day", "category", "revenue", "orders"]) == _expected(
        project, config, REVENUE
    )

    rebuilt = run_model(project, "orders_clean", full_refresh=True, config=config)
    assert rebuilt.status == "rebuilt" and rebuilt.reason == "--full-refresh"
    assert _rows("orders_clean", config, clean_columns) == _expected(
        project, config, "SELECT * FROM orders_clean"
    )


def test_a_failing_model_leaves_its_table_untouched(shop: tuple[Project, LakebedConfig]) -> None:
    project, config = shop
    run_model(project, "orders_clean", config=config)
    before = DeltaTable(Catalog(config).get("orders_clean").uri).version()
    broken = project.root / "models" / "orders_clean.sql"
    broken.write_text(CLEAN.replace("quantity * price AS amount", "CAST('x' || sku AS INTEGER) AS amount"))
    with pytest.raises(duckdb.ConversionException, match="Could not convert string"):
        run_model(load_project(project.root), "orders_clean", config=config)
    assert DeltaTable(Catalog(config).get("orders_clean").uri).version() == before
    events = [
        json.loads(line) for line in (config.home / "lineage" / "events.jsonl").read_text().splitlines()
    ]
    [failed] = [e for e in events if e["eventType"] == "FAIL" and e["job"]["name"] == "model:orders_clean"]
    assert "Could not convert string" in failed["run"]["facets"]["errorMessage"]["message"]


def test_selection_follows_dbt_syntax(shop: tuple[Project, LakebedConfig]) -> None:
    project, _ = shop
    (project.root / "models" / "top_days.sql").write_text(
        "/* lakebed\ntags: [daily] */\nSELECT * FROM revenue"
    )
    project = load_project(project.root)
    assert select_models(project) == ["orders_clean", "revenue", "top_days"]
    assert select_models(project, "revenue") == ["revenue"]
    assert select_models(project, "+revenue") == ["orders_clean", "revenue"]
    assert select_models(project, "revenue+") == ["revenue", "top_days"]
    assert select_models(project, "orders_clean+ tag:daily") == ["orders_clean", "revenue", "top_days"]
    with pytest.raises(
        ProjectError, match=r"--select reveneu: no model named 'reveneu' \(models: orders_clean"
    ):
        select_models(project, "reveneu")
    with pytest.raises(ProjectError, match=r"no model is tagged 'weekly' \(tags: daily\)"):
        select_models(project, "tag:weekly")


def _cli(project: Project, config: LakebedConfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAKEBED_HOME": str(config.home)}
    return subprocess.run(
        [sys.executable, "-m", "lakebed.cli", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_lakebed_run_and_plan_from_the_cli(shop: tuple[Project, LakebedConfig]) -> None:
    project, config = shop
    planned = json.loads(_cli(project, config, "plan", "--format", "json").stdout)
    models = {c["name"]: c for c in planned if c["kind"] == "model"}
    assert models["orders_clean"]["action"] == "create" and models["revenue"]["file"] == "models/revenue.sql"

    done = _cli(project, config, "run", "--select", "+revenue", "--format", "json")
    assert done.returncode == 0, done.stderr
    results = {r["model"]: r for r in json.loads(done.stdout)}
    assert [results[m]["status"] for m in ("orders_clean", "revenue")] == ["rebuilt", "rebuilt"]
    assert results["revenue"]["rows"] == len(_expected(project, config, REVENUE))
    assert "run: 2 model(s) built, 0 up to date" in done.stderr
    again = json.loads(_cli(project, config, "run", "--format", "json").stdout)
    assert {r["status"] for r in again} == {"up_to_date"}
    planned = json.loads(_cli(project, config, "plan", "--format", "json").stdout)
    assert {c["action"] for c in planned if c["kind"] == "model"} == {"unchanged"}

    (project.root / "models" / "orders_clean.sql").write_text(CLEAN.replace("quantity > 0", "quantity > 1"))
    planned = json.loads(_cli(project, config, "plan", "--format", "json").stdout)
    assert {c["name"]: c["action"] for c in planned if c["kind"] == "model"}["orders_clean"] == "update"

    (project.root / "models" / "orders_clean.sql").write_text(
        CLEAN.replace("quantity * price AS amount", "CAST('x' || sku AS INTEGER) AS amount")
    )
    failed = _cli(project, config, "run")
    assert failed.returncode == 1
    assert "model 'orders_clean' failed: Conversion Error" in failed.stderr
    assert "not run: revenue" in failed.stderr
    unknown = _cli(project, config, "run", "--select", "nope")
    assert unknown.returncode == 1 and "no model named 'nope'" in unknown.stderr


def test_models_are_dagster_assets_materialised_with_their_inputs(
    shop: tuple[Project, LakebedConfig],
) -> None:
    """A real Dagster materialisation of the project: the sources' and models' assets in one run, models
    after what they read, with column lineage; a failing model fails the run naming it."""
    import dagster as dg

    from lakebed.dagster import definitions, project_assets

    project, config = shop
    order = [a.key.to_user_string() for a in project_assets(project)]
    assert order.index("orders") < order.index("orders_clean") < order.index("revenue")
    assert order.index("products") < order.index("revenue")
    defs = definitions(project.root, home=config.home)
    revenue = next(
        a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.key.path == ["revenue"]
    )
    assert {k.to_user_string() for k in revenue.dependency_keys} == {"orders_clean", "products"}
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets or []), instance=instance, resources=defs.resources)
        assert result.success
        events = {
            e.asset_key.to_user_string(): e.materialization for e in result.get_asset_materialization_events()
        }
        assert {"orders", "products", "orders_clean", "revenue"} <= set(events)
        metadata = events["revenue"].metadata
        assert metadata["dagster/row_count"].value == len(_expected(project, config, REVENUE))
        lineage = metadata["dagster/column_lineage"].value.deps_by_column
        assert {(d.asset_key.to_user_string(), d.column_name) for d in lineage["category"]} == {
            ("products", "category")
        }
        assert {d.column_name for d in lineage["revenue"]} == {"amount"}

        (project.root / "models" / "revenue.sql").write_text(
            REVENUE.replace("sum(o.amount)", "sum(CAST('x' || o.sku AS INTEGER))")
        )
        broken = definitions(project.root, home=config.home)
        failed = dg.materialize(
            list(broken.assets or []),
            selection=["revenue"],
            instance=instance,
            resources=broken.resources,
            raise_on_error=False,
        )
        assert not failed.success
        [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "model 'revenue'" in str(failure.event_specific_data)


def test_a_rerun_after_kill_9_mid_run_gives_the_same_table(shop: tuple[Project, LakebedConfig]) -> None:
    """``lakebed run`` killed (SIGKILL) once it has written an increment's files: a commit that did not land
    left the table as it was and the rerun reads the same new rows once; one that landed is not redone.
    Either way the table equals a rebuild."""
    import signal
    import time

    project, config = shop
    run_model(project, "orders_clean", config=config)
    uri = Path(Catalog(config).get("orders_clean").uri)
    before = DeltaTable(str(uri)).version()
    committed = {p.name for p in uri.glob("*.parquet")}
    _orders(project.root / "data" / "orders" / "day2.csv", 301, 1_500_000)
    _ingest(project, config)

    env = {**os.environ, "LAKEBED_HOME": str(config.home)}
    child = subprocess.Popen(
        [sys.executable, "-m", "lakebed.cli", "run", "--select", "orders_clean"],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if {p.name for p in uri.glob("*.parquet")} - committed:  # an increment's file written
            break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # Killed between its files and its commit (as a rule), or just after the commit landed: either way
    # the rerun makes the table hold each new row once.
    landed = DeltaTable(str(uri)).version() != before
    again = run_model(project, "orders_clean", config=config)
    assert again.status == ("up_to_date" if landed else "incremental")
    clean_columns = ["order_id", "sku", "quantity", "amount", "day"]
    assert _rows("orders_clean", config, clean_columns) == _expected(
        project, config, "SELECT * FROM orders_clean"
    )


PY_MODEL = """
import polars as pl

import lakebed


@lakebed.model(inputs=["orders_clean"], columns={"total": ["orders_clean.amount"]}, tags=["py"])
def sku_totals(orders_clean: pl.LazyFrame) -> pl.LazyFrame:
    return orders_clean.group_by("sku").agg(pl.col("amount").sum().alias("total"), pl.len().alias("lines"))
"""


def test_python_models_read_lazy_frames_and_declare_lineage(shop: tuple[Project, LakebedConfig]) -> None:
    project, config = shop
    (project.root / "models" / "sku_totals.py").write_text(PY_MODEL)
    project = load_project(project.root)
    assert project.models["sku_totals"].inputs == ("orders_clean",)
    assert list(project.models).index("orders_clean") < list(project.models).index("sku_totals")
    run_model(project, "orders_clean", config=config)
    built = run_model(project, "sku_totals", config=config)
    assert built.status == "rebuilt" and built.columns == {
        "total": [("orders_clean", "amount", "DIRECT:TRANSFORMATION")]
    }
    expected = _expected(
        project, config, "SELECT sku, sum(amount) AS total, count(*) AS lines FROM orders_clean GROUP BY sku"
    )
    got = _rows("sku_totals", config, ["sku", "total", "lines"])
    assert [r["sku"] for r in got] == [r["sku"] for r in expected] and [r["lines"] for r in got] == [
        r["lines"] for r in expected
    ]
    assert [r["total"] for r in got] == pytest.approx([r["total"] for r in expected])
    assert run_model(project, "sku_totals", config=config).status == "up_to_date"

    path = project.root / "models" / "sku_totals.py"
    path.write_text(PY_MODEL.replace("return orders_clean.group_by", "return {}\n    orders_clean.group_by"))
    with pytest.raises(
        ModelError, match=r"model 'sku_totals' .*sku_totals\.py\) returned dict: a model returns"
    ):
        run_model(load_project(project.root), "sku_totals", config=config)
    path.write_text(PY_MODEL.replace("def sku_totals(orders_clean", "def sku_totals(orders"))
    with pytest.raises(
        ProjectError,
        match=r"sku_totals\.py:\d+: model 'sku_totals': its function must take one parameter per input",
    ):
        load_project(project.root)
    path.write_text(PY_MODEL.replace('"orders_clean.amount"', '"orders.amount"'))
    with pytest.raises(
        ProjectError, match=r"columns: 'orders\.amount' is not `<input table>\.<column>` of an input"
    ):
        load_project(project.root)
    path.write_text("import no_such_module\n")
    with pytest.raises(
        ProjectError, match=r"sku_totals\.py: the model file fails on import: ModuleNotFoundError"
    ):
        load_project(project.root)


def test_a_model_is_held_to_its_contract(shop: tuple[Project, LakebedConfig]) -> None:
    """A model's contract applies to what it returns: a column its strict contract lacks is refused (the
    error names the column) and the table is not written."""
    from lakebed.errors import SchemaDriftError

    project, config = shop
    (project.root / "contracts").mkdir(exist_ok=True)
    (project.root / "contracts" / "sku_totals.yaml").write_text(
        "name: sku_totals\ndrift: strict\ncolumns:\n  - {name: sku, type: string}\n  - {name: total, type: float64}\n"
    )
    model = PY_MODEL.replace('tags=["py"]', 'tags=["py"], contract="sku_totals.yaml"')
    (project.root / "models" / "sku_totals.py").write_text(model)
    project = load_project(project.root)
    run_model(project, "orders_clean", config=config)
    with pytest.raises(SchemaDriftError, match=r"lines"):
        run_model(project, "sku_totals", config=config)
    assert Catalog(config).find("sku_totals") is None
