"""Column lineage of a SQL model: for each output column, the input columns it is computed from and how
(``DIRECT:IDENTITY`` a column passed through, ``DIRECT:AGGREGATION`` an aggregate over them, else
``DIRECT:TRANSFORMATION``), from sqlglot's lineage over the query qualified with its inputs' schemas."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify

from lakebed.schemas.models import DIALECT, SqlModel

ColumnSources = dict[str, list[tuple[str, str, str]]]  # output column → (input table, column, transformation)


def column_lineage(model: SqlModel, schemas: Mapping[str, pa.Schema]) -> ColumnSources:
    """Output column → the (input table, input column, transformation) it derives from. A query sqlglot
    cannot resolve (a function it does not know, say) gives no lineage for the columns concerned rather
    than a wrong one."""
    import sqlglot

    schema: dict[str, object] = {table: {f.name: "VARCHAR" for f in s} for table, s in schemas.items()}
    try:
        tree = qualify(sqlglot.parse_one(model.sql, dialect=DIALECT), schema=schema, dialect=DIALECT)
    except SqlglotError:
        return {}
    if not isinstance(tree, exp.Query):
        return {}
    found: ColumnSources = {}
    for select in tree.selects:
        name = select.alias_or_name
        try:
            node = lineage(name, tree, schema=schema, dialect=DIALECT)
        except SqlglotError:
            continue
        kind = _kind(select)
        sources: list[tuple[str, str, str]] = []
        for leaf in node.walk():
            if leaf.downstream or not isinstance(leaf.source, exp.Table):
                continue
            column = leaf.expression.name if isinstance(leaf.expression, exp.Column) else leaf.name
            column = column.rsplit(".", 1)[-1].strip('"')
            entry = (leaf.source.name, column, kind)
            if leaf.source.name in schemas and entry not in sources:
                sources.append(entry)
        found[name] = sources
    return found


def _kind(select: exp.Expr) -> str:
    expression = select.this if isinstance(select, exp.Alias) else select
    if isinstance(expression, exp.Column):
        return "DIRECT:IDENTITY"
    if expression.find(exp.AggFunc) is not None:
        return "DIRECT:AGGREGATION"
    return "DIRECT:TRANSFORMATION"


__all__ = ["ColumnSources", "column_lineage"]
