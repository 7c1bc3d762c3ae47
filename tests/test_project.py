"""Loading a project: its files validated together, errors naming the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakebed.errors import ProjectError
from lakebed.schemas.project import FilesSource, StreamSource, load_project

CONTRACT = """name: orders
columns:
  - {name: order_id, type: int64, nullable: false}
  - {name: amount, type: float64}
"""
VIEW = """name: spend
version: 1
entities: [customer_id]
source: {topic: clicks, table: clicks}
event_time: ts
hop: 5m
ttl: 1d
aggregations:
  - {name: spend_1h, function: sum, column: amount, window: 1h}
"""
SOURCES = """sources:
  - table: orders
    kind: files
    path: data/orders
    format: csv
    contract: orders.yaml
    run: {schedule: "0 6 * * *"}
  - table: clicks
    kind: stream
    topic: clicks
"""


def _project(root: Path, *, sources: str = SOURCES, toml: str = '[project]\nname = "shop"\n') -> Path:
    for folder in ("sources", "contracts", "feature_views", "data/orders"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "lakebed.toml").write_text(toml)
    (root / "contracts" / "orders.yaml").write_text(CONTRACT)
    (root / "feature_views" / "spend.yaml").write_text(VIEW)
    (root / "sources" / "shop.yaml").write_text(sources)
    return root


def test_a_project_loads_whole(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path / "shop"))
    assert project.name == "shop" and project.root == (tmp_path / "shop").resolve()
    orders, clicks = project.sources
    assert isinstance(orders, FilesSource) and orders.run.schedule == "0 6 * * *"
    assert isinstance(clicks, StreamSource) and clicks.topic == "clicks"
    assert set(project.contracts) == {"orders"} and set(project.feature_views) == {"spend:v1"}
    assert project.resolve(orders.path) == str((tmp_path / "shop" / "data" / "orders").resolve())


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            SOURCES.replace("format: csv", "format: csv\n    colour: red"),
            "source orders: colour: Extra inputs",
        ),
        (SOURCES.replace("kind: files", "kind: ftp"), "source orders: "),
        (SOURCES.replace("orders.yaml", "missing.yaml"), "source orders: contract: no file 'missing.yaml'"),
        (
            SOURCES.replace("0 6 * * *", "0 25 * * *"),
            "source orders: run.schedule: cron expression '0 25 * * *'",
        ),
        (
            SOURCES.replace("path: data/orders", "path: /no/such/folder"),
            "source orders: path: '/no/such/folder'",
        ),
        (
            SOURCES + "  - {table: orders, kind: files, path: data/orders}\n",
            "another source writes table 'orders' with contract 'orders.yaml', this one with None",
        ),
        (SOURCES.replace("table: clicks", "table: taps"), "feature view spend:v1: source.table 'clicks'"),
        ("sources: {orders: 1}\n", "expected a mapping with a list `sources: [...]`"),
    ],
)
def test_bad_projects_name_the_file_and_the_entry(tmp_path: Path, sources: str, message: str) -> None:
    root = _project(tmp_path / "shop", sources=sources)
    with pytest.raises(ProjectError) as caught:
        load_project(root)
    text = str(caught.value)
    assert message in text, text
    assert str(root.resolve()) in text, text


def test_settings_problems_name_lakebed_toml(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"lakebed.toml: \[project\] is missing"):
        load_project(_project(tmp_path / "a", toml="[kafka]\nbootstrap = 'x:1'\n"))
    with pytest.raises(ProjectError, match=r"lakebed.toml: \[paths\]: widgets: Extra inputs"):
        load_project(_project(tmp_path / "b", toml='[project]\nname = "b"\n[paths]\nwidgets = "m"\n'))
    with pytest.raises(ProjectError, match="not a lakebed project"):
        load_project(tmp_path / "nothing")


def test_a_bad_contract_or_view_names_its_file(tmp_path: Path) -> None:
    root = _project(tmp_path / "shop")
    (root / "feature_views" / "spend.yaml").write_text(VIEW.replace("hop: 5m", "hop: soon"))
    with pytest.raises(ProjectError, match=r"spend.yaml: invalid feature view: hop"):
        load_project(root)


def test_the_shop_example_is_a_valid_project() -> None:
    from lakebed.examples import SHOP

    project = load_project(SHOP)
    assert project.name == "shop"
    assert {s.table for s in project.sources} == {
        "customers",
        "products",
        "orders",
        "web_events",
        "documents",
        "shop_events",
    }
    assert set(project.feature_views) == {
        "customer_activity:v1",
        "customer_orders:v1",
        "customer_spend_fast:v1",
    }
    assert list(project.models) == ["orders_clean", "daily_revenue"]
    assert project.models["daily_revenue"].inputs == ("orders_clean", "products")
    for source in project.sources:
        for path in getattr(source, "paths", ()) or [getattr(source, "path", "data")]:
            assert Path(project.resolve(path)).exists(), path


def _models(root: Path, **files: str) -> Path:
    (root / "models").mkdir(exist_ok=True)
    for name, text in files.items():
        (root / "models" / f"{name}.sql").write_text(text)
    return root


def test_models_load_in_dependency_order_and_may_feed_a_feature_view(tmp_path: Path) -> None:
    root = _models(
        _project(tmp_path / "shop"),
        daily="SELECT day, sum(amount) AS total FROM orders_clean GROUP BY day",
        orders_clean="SELECT order_id, amount, current_date AS day FROM orders WHERE amount > 0",
        spend_by_day="SELECT * FROM daily JOIN fv_spend_v1 ON true",
        taps="SELECT * FROM clicks",
    )
    (root / "feature_views" / "spend.yaml").write_text(VIEW.replace("table: clicks", "table: taps"))
    project = load_project(root)
    order = list(project.models)
    assert order.index("orders_clean") < order.index("daily") < order.index("spend_by_day")
    assert project.models["daily"].inputs == ("orders_clean",)
    assert project.models["spend_by_day"].inputs == ("daily", "fv_spend_v1")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"clean": "SELECT *\nFROM orderz"},
            r"clean\.sql:2: table 'orderz' is made by nothing in the project",
        ),
        (
            {"a": "SELECT * FROM b", "b": "SELECT * FROM c", "c": "SELECT * FROM a"},
            r"models read each other in a cycle: (a|b|c)\.sql → .*\.sql → .*\.sql",
        ),
        ({"orders": "SELECT 1 AS x"}, r"orders\.sql: model 'orders': table 'orders' is made by a source in"),
        ({"fv_spend_v1": "SELECT 1 AS x"}, r"is made by a feature view spend:v1"),
        ({"m": "/* lakebed\ncontract: nope.yaml */ SELECT 1"}, r"m\.sql: contract: no file 'nope\.yaml'"),
    ],
)
def test_bad_models_name_the_file(tmp_path: Path, files: dict[str, str], message: str) -> None:
    root = _models(_project(tmp_path / "shop"), **files)
    with pytest.raises(ProjectError, match=message) as caught:
        load_project(root)
    assert str(root.resolve()) in str(caught.value)
