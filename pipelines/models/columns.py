"""Column lineage of a SQL model: for each output column, the input columns it is computed from and how
(``DIRECT:IDENTITY`` a column passed through, ``DIRECT:AGGREGATION`` an aggregate over them, else
``DIRECT:TRANSFORMATION``), from sqlglot's lineage over the query qualified with its inputs' schemas."""

from __future__ import annotations

import functools
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
    than a wrong one. Worked out once per SQL and input columns (a process running a model again, such
    as Dagster's, pays for it once)."""
    names = tuple(sorted((table, tuple(s.names)) for table, s in schemas.items()))
    return {column: list(sources) for column, sources in _lineage(model.sql, names).items()}


@functools.lru_cache(maxsize=256)
def _lineage(
    sql: str, names: tuple[tuple[str, tuple[str, ...]], ...]
) -> dict[str, tuple[tuple[str, str, str], ...]]:
    import sqlglot

    schemas = dict(names)
    schema: dict[str, object] = {table: dict.fromkeys(columns, "VARCHAR") for table, columns in names}
    try:
        tree = qualify(sqlglot.parse_one(sql, dialect=DIALECT), schema=schema, dialect=DIALECT)
    except SqlglotError:
        return {}
    if not isinstance(tree, exp.Query):
        return {}
    found: dict[str, tuple[tuple[str, str, str], ...]] = {}
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
        found[name] = tuple(sources)
    return found


def _kind(select: exp.Expr) -> str:
    expression = select.this if isinstance(select, exp.Alias) else select
    if isinstance(expression, exp.Column):
        return "DIRECT:IDENTITY"
    if expression.find(exp.AggFunc) is not None:
        return "DIRECT:AGGREGATION"
    return "DIRECT:TRANSFORMATION"


__all__ = ["ColumnSources", "column_lineage"]
