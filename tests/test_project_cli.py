"""``lakebed init | plan | apply`` as a team uses them: real ``lakebed`` processes in temporary project
folders, whose state lands in the project's own ``.lakebed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lakebed.config import LakebedConfig
from lakebed.scaffold import DEFINITIONS

ORDERS_SOURCE = """\
sources:
  - table: orders
    kind: files
    path: data/orders
    format: csv
    contract: orders.yaml
"""
ORDERS_CONTRACT = """\
name: orders
drift: strict
keys: [order_id]
columns:
  - {name: order_id, type: int64, nullable: false}
  - {name: customer_id, type: int64, nullable: false}
  - {name: amount, type: float64, min: 0}
  - {name: ordered_at, type: timestamp, nullable: false}
  - {name: _source_file, type: string}
  - {name: _source_line, type: int64}
"""
ORDERS_VIEW = """\
name: customer_orders
version: 1
entities: [customer_id]
source: {table: orders}
event_time: ordered_at
hop: 1h
ttl: 2d
aggregations:
  - {name: orders_1d, function: count, window: 1d}
  - {name: spend_1d, function: sum, column: amount, window: 1d}
"""
ORDERS_CSV = """\
order_id,customer_id,amount,ordered_at
1,7,9.5,2025-11-01T10:00:00Z
2,8,20.0,2025-11-01T11:00:00Z
"""


def lakebed(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``lakebed ARGS`` in ``cwd`` with no LAKEBED_HOME, so a project keeps its state in its own folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEBED_") and k != "DAGSTER_HOME"}
    env.pop("COLUMNS", None)
    done = subprocess.run(
        [sys.executable, "-m", "lakebed.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert done.returncode == 0, f"lakebed {' '.join(args)}: {done.stderr}"
    return done


def changes(cwd: Path, *args: str, ok: bool = True) -> dict[str, dict[str, Any]]:
    """``lakebed ARGS --format json``, the change objects by name."""
    done = lakebed(cwd, *args, "--format", "json", ok=ok)
    rows = json.loads(done.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert list(row) == ["kind", "name", "action", "detail", "file"], row
    return {row["name"]: row for row in rows}


def project_config(root: Path) -> LakebedConfig:
    """The config of the project in ``root`` (its home is ``root/.lakebed``)."""
    return LakebedConfig(home=root / ".lakebed")


@pytest.fixture
def orders_project(tmp_path: Path) -> Path:
    """``lakebed init`` of an empty project, then a CSV folder source with a strict contract and a view."""
    root = tmp_path / "my_lake"
    lakebed(tmp_path, "init", "my_lake")
    (root / "data" / "orders").mkdir(parents=True)
    (root / "data" / "orders" / "2025-11.csv").write_text(ORDERS_CSV)
    (root / "sources" / "orders.yaml").write_text(ORDERS_SOURCE)
    (root / "contracts" / "orders.yaml").write_text(ORDERS_CONTRACT)
    (root / "feature_views" / "customer_orders.yaml").write_text(ORDERS_VIEW)
    return root


def test_init_makes_a_project_that_loads(tmp_path: Path) -> None:
    from lakebed.schemas.project import load_project

    lakebed(tmp_path, "init", "fresh")
    root = tmp_path / "fresh"
    assert (root / "definitions.py").read_text() == DEFINITIONS
    assert ".lakebed/" in (root / ".gitignore").read_text().splitlines()
    assert 'name = "fresh"' in (root / "lakebed.toml").read_text()
    for folder in ("sources", "contracts", "feature_views"):
        assert any((root / folder).iterdir()), folder
    project = load_project(root)
    assert (project.name, project.sources, dict(project.contracts), dict(project.feature_views)) == (
        "fresh",
        (),
        {},
        {},
    )
    assert changes(root, "plan") == {}
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    lakebed(tmp_path, "init", "fresh")  # again: nothing rewritten
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_init_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine\n")
    for args in (("init", "busy"), ("init", "busy", "--example", "shop")):
        done = lakebed(tmp_path, *args, ok=False)
        assert done.returncode == 1 and "not empty" in done.stderr, done.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_plan_apply_plan(orders_project: Path) -> None:
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.features.registry import FeatureRegistry

    planned = changes(orders_project, "plan")
    assert {n: (c["kind"], c["action"]) for n, c in planned.items()} == {
        "orders": ("table", "create"),
        "customer_orders:v1": ("feature_view", "create"),
    }
    assert planned["orders"]["file"] == "contracts/orders.yaml"
    assert planned["customer_orders:v1"]["file"] == "feature_views/customer_orders.yaml"
    assert not (orders_project / ".lakebed").exists()  # plan changes nothing
    config = project_config(orders_project)

    applied = changes(orders_project, "apply")
    assert {n: c["action"] for n, c in applied.items()} == {
        "orders": "create",
        "customer_orders:v1": "create",
    }
    entry = Catalog(config).find("orders")
    assert entry is not None and entry.contract is not None
    assert [c.name for c in entry.contract.columns][:4] == ["order_id", "customer_id", "amount", "ordered_at"]
    assert [v.key for v in FeatureRegistry(config).list()] == ["customer_orders:v1"]
    assert not (orders_project / ".lakebed" / "tables" / "orders").exists()  # nothing ingested

    again = changes(orders_project, "plan")
    assert {n: c["action"] for n, c in again.items()} == {
        "orders": "unchanged",
        "customer_orders:v1": "unchanged",
    }
    assert changes(orders_project, "apply") == {}


def test_edited_view_version_is_refused(orders_project: Path) -> None:
    from lakebed.pipelines.features.registry import FeatureRegistry

    lakebed(orders_project, "apply")
    view = orders_project / "feature_views" / "customer_orders.yaml"
    view.write_text(
        ORDERS_VIEW.replace("window: 1d}\n  - {name: spend_1d", "window: 2d}\n  - {name: spend_1d")
    )

    done = lakebed(orders_project, "plan", "--format", "json", ok=False)
    assert done.returncode == 1
    [refused] = [c for c in json.loads(done.stdout) if c["action"] == "refuse"]
    assert refused["name"] == "customer_orders:v1"
    assert refused["file"] == "feature_views/customer_orders.yaml"
    assert "bump the version" in refused["detail"] and "version: 2" in refused["detail"]
    assert "feature_views/customer_orders.yaml" in done.stderr and "bump" in done.stderr

    applied = lakebed(orders_project, "apply", ok=False)
    assert applied.returncode == 1 and "nothing applied" in applied.stderr
    [registered] = FeatureRegistry(project_config(orders_project)).list()
    assert registered.view.aggregations[0].window.total_seconds() == 86_400  # still the registered one

    view.write_text(view.read_text().replace("version: 1", "version: 2"))
    bumped = changes(orders_project, "plan")
    assert bumped["customer_orders:v2"]["action"] == "create"
    assert "registered: v1" in bumped["customer_orders:v2"]["detail"]


def test_strict_table_gaining_a_column(orders_project: Path) -> None:
    lakebed(orders_project, "apply")
    lakebed(orders_project, "ingest", "data/orders", "--table", "orders")
    assert (orders_project / ".lakebed" / "tables" / "orders" / "_delta_log").is_dir()
    contract = orders_project / "contracts" / "orders.yaml"
    contract.write_text(ORDERS_CONTRACT + "  - {name: coupon_code, type: string}\n")

    done = lakebed(orders_project, "plan", "--format", "json", ok=False)
    assert done.returncode == 1, done.stderr
    [orders] = [c for c in json.loads(done.stdout) if c["name"] == "orders"]
    assert orders["action"] == "refuse" and orders["file"] == "contracts/orders.yaml"
    assert "strict" in orders["detail"] and "column 'coupon_code'" in orders["detail"]
    assert "coupon_code" in done.stderr

    contract.write_text(ORDERS_CONTRACT.replace("drift: strict", "drift: evolve"))
    evolved = changes(orders_project, "plan")
    assert evolved["orders"]["action"] == "update" and evolved["orders"]["detail"] == "drift strict -> evolve"


def test_malformed_source_names_file_and_field(orders_project: Path) -> None:
    (orders_project / "sources" / "broken.yaml").write_text(
        "sources:\n  - table: refunds\n    kind: files\n    pathh: data/refunds\n"
    )
    done = lakebed(orders_project, "plan", ok=False)
    assert done.returncode == 1 and done.stdout == ""
    assert "broken.yaml" in done.stderr and "source refunds" in done.stderr
    assert "path" in done.stderr and "pathh" in done.stderr
    assert lakebed(orders_project, "apply", ok=False).returncode == 1
    assert not (orders_project / ".lakebed" / "system" / "catalog").exists()


def test_shop_example(tmp_path: Path) -> None:
    from lakebed.examples import SHOP

    lakebed(tmp_path, "init", "shop", "--example", "shop")
    root = tmp_path / "shop"
    assert (root / "definitions.py").read_text() == DEFINITIONS
    assert (root / "sources" / "shop.yaml").read_bytes() == (SHOP / "sources" / "shop.yaml").read_bytes()
    assert (root / "data" / "orders").is_dir()
    planned = changes(root, "plan")
    tables = {n for n, c in planned.items() if c["kind"] == "table" and c["action"] == "create"}
    views = {n for n, c in planned.items() if c["kind"] == "feature_view" and c["action"] == "create"}
    assert tables == {"customers", "products", "orders", "web_events", "documents", "shop_events"}
    assert views == {"customer_activity:v1", "customer_orders:v1", "customer_spend_fast:v1"}
    models = {n for n, c in planned.items() if c["kind"] == "model" and c["action"] == "create"}
    assert models == {"orders_clean", "daily_revenue"}

    lakebed(tmp_path, "init", "shop", "--example", "shop")  # an existing copy: fine, nothing overwritten
    (root / "sources" / "shop.yaml").write_text((SHOP / "sources" / "shop.yaml").read_text() + "# mine\n")
    lakebed(tmp_path, "init", "shop", "--example", "shop")
    assert (root / "sources" / "shop.yaml").read_text().endswith("# mine\n")


def test_project_option_from_another_folder(orders_project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert lakebed(elsewhere, "plan", ok=False).returncode == 1  # not in a project
    planned = changes(elsewhere, "--project", str(orders_project), "plan")
    assert planned["orders"]["action"] == "create"
    lakebed(elsewhere, "--project", str(orders_project), "apply")
    tables = json.loads(
        lakebed(elsewhere, "--project", str(orders_project), "tables", "--format", "json").stdout
    )
    assert [t["table"] for t in tables if t["kind"] == "table"] == ["orders"]
    assert tables[[t["table"] for t in tables].index("orders")]["location"] == str(
        orders_project / ".lakebed" / "tables" / "orders"
    )
    assert not (elsewhere / ".lakebed").exists()
    bad = lakebed(elsewhere, "--project", str(elsewhere), "plan", ok=False)
    assert bad.returncode == 2 and "not a lakebed project" in bad.stderr


def test_features_backfill_uses_the_project_views(orders_project: Path) -> None:
    lakebed(orders_project, "ingest", "data/orders", "--table", "orders")
    # Not registered yet: the view comes from the project's feature_views.
    done = lakebed(orders_project, "features", "backfill", "customer_orders:v1")
    assert "customer_orders:v1" in done.stdout and "2 event(s) read" in done.stdout
    outside = lakebed(orders_project.parent, "features", "backfill", "customer_orders:v1", ok=False)
    assert outside.returncode == 1 and "customer_orders" in outside.stderr
