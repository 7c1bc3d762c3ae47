"""SQL model files: options from the header or a sidecar, the tables read (with lines), and every bad file
refused with an error naming the file (and the line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakebed.errors import ProjectError
from lakebed.schemas.models import ModelOptions, TableRef, read_sql_model

REVENUE = """/* lakebed
materialized: merge
keys: [day, category]
incremental_on: orders_clean
tags: [finance]
description: Daily revenue by product category.
*/
WITH paid AS (
  SELECT * FROM orders_clean WHERE status = 'paid'
)
SELECT date_trunc('day', o.ordered_at) AS day, p.category, sum(o.quantity * o.unit_price) AS revenue
FROM paid o
JOIN products p USING (sku), range(3) r
GROUP BY ALL
"""


def _model(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.sql"
    path.write_text(text)
    return path


def test_header_options_tables_read_and_lines(tmp_path: Path) -> None:
    model = read_sql_model(_model(tmp_path, "revenue_by_category", REVENUE))
    assert model.name == "revenue_by_category"
    assert model.options == ModelOptions(
        materialized="merge",
        keys=("day", "category"),
        incremental_on="orders_clean",
        tags=("finance",),
        description="Daily revenue by product category.",
    )
    # the CTE `paid` and the table function `range` are not tables
    assert model.reads == (TableRef("orders_clean", 9), TableRef("products", 13))
    assert model.inputs == ("orders_clean", "products")
    assert model.incremental_input == "orders_clean"


def test_sidecar_options_and_code_version(tmp_path: Path) -> None:
    path = _model(tmp_path, "clean", "SELECT * FROM orders\n")
    plain = read_sql_model(path)
    assert plain.options == ModelOptions() and plain.options.materialized == "table"
    path.with_suffix(".yaml").write_text("materialized: incremental\nowners: [data@shop.example]\n")
    sided = read_sql_model(path)
    assert sided.options.materialized == "incremental" and sided.options.owners == ("data@shop.example",)
    assert sided.code_version != plain.code_version  # options are part of the code version
    path.write_text("SELECT * FROM orders WHERE quantity > 0\n")
    assert read_sql_model(path).code_version != sided.code_version
    assert read_sql_model(path).code_version == read_sql_model(path).code_version


@pytest.mark.parametrize(
    ("name", "text", "sidecar", "message"),
    [
        ("broken", "SELECT a,\nFROM orders WHERE (b\n", None, r"broken\.sql:2: the SQL does not parse"),
        ("two", "SELECT 1; SELECT 2", None, r"two\.sql: a SQL model is one SELECT statement, found 2"),
        ("ddl", "CREATE TABLE x AS SELECT 1", None, r"ddl\.sql: .* not CREATE"),
        (
            "files",
            "SELECT *\nFROM read_parquet('x/*.parquet')",
            None,
            r"files\.sql:2: read_parquet.* reads files",
        ),
        (
            "schema",
            "SELECT * FROM\n\n main.orders",
            None,
            r"schema\.sql:3: table main\.orders: .*without a schema",
        ),
        (
            "merge",
            "/* lakebed\nmaterialized: merge */ SELECT 1 AS a",
            None,
            r"merge\.sql \(header\): .*needs keys",
        ),
        ("unknown", "/* lakebed\nmaterialised: table */ SELECT 1", None, r"materialised: Extra inputs"),
        (
            "yaml",
            "/* lakebed\nkeys: [a */ SELECT 1",
            None,
            r"yaml\.sql: the model's options are not valid YAML",
        ),
        (
            "twice",
            "/* lakebed\ntags: [a] */ SELECT 1",
            "tags: [b]\n",
            r"twice\.yaml: option 'tags' is also given in",
        ),
        ("Bad-Name", "SELECT 1", None, r"Bad-Name\.sql: the file name is the model's table name"),
        (
            "several",
            "/* lakebed\nmaterialized: incremental */ SELECT * FROM a JOIN b USING (k)",
            None,
            r"several\.sql: materialized: incremental reads the new rows of one input: name it with "
            r"incremental_on \(the model reads a, b\)",
        ),
        (
            "other",
            "/* lakebed\nincremental_on: c */ SELECT * FROM a",
            None,
            r"other\.sql: incremental_on: 'c' is not a table the model reads",
        ),
    ],
)
def test_bad_model_files_name_the_file_and_line(
    tmp_path: Path, name: str, text: str, sidecar: str | None, message: str
) -> None:
    path = _model(tmp_path, name, text)
    if sidecar is not None:
        path.with_suffix(".yaml").write_text(sidecar)
    with pytest.raises(ProjectError, match=message):
        read_sql_model(path)
