"""One contract, one list of rules: what both engines (Polars and Great Expectations) evaluate.

:func:`compile_rules` turns a :class:`~lakebed.schemas.contract.TableContract` into a :class:`RuleSet`, once
per contract definition. Rule names are stable (``<column>_not_null``, ``<column>_between``,
``<column>_allowed``, ``<column>_regex``, ``<column>_unique``, ``<column>_type``, the custom rule's own
name, ``row_count``, ``unique_keys``, ``freshness``): they are what quarantined rows, results and
lineage assertions refer to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from lakebed.schemas.contract import TableContract
from lakebed.schemas.durations import format_duration

RuleKind = Literal[
    "not_null",
    "type",
    "between",
    "allowed",
    "regex",
    "unique",
    "expr",
    "row_count",
    "unique_keys",
    "freshness",
]
ROW_KINDS = ("not_null", "type", "between", "allowed", "regex", "unique", "expr")


@dataclass(frozen=True)
class Rule:
    """One check: ``level`` ``row`` rules judge each row (failing rows are quarantined when the severity is
    ``error``), ``table`` rules judge the data as a whole (an ``error`` blocks the commit)."""

    name: str
    kind: RuleKind
    severity: Literal["error", "warn"]
    description: str
    column: str | None = None
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def level(self) -> Literal["row", "table"]:
        return "row" if self.kind in ROW_KINDS else "table"

    @property
    def columns(self) -> tuple[str, ...]:
        if self.kind == "unique_keys":
            return tuple(self.params["columns"])
        if self.kind == "expr":
            return tuple(sorted(self.params["columns"]))
        return (self.column,) if self.column else ()


@dataclass(frozen=True)
class RuleSet:
    """The compiled rules of one contract."""

    table: str
    rules: tuple[Rule, ...]
    fingerprint: str

    @property
    def row_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.level == "row")

    @property
    def table_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.level == "table")

    def __bool__(self) -> bool:
        return bool(self.rules)

    def get(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)


@functools.lru_cache(maxsize=256)
def compile_rules(contract: TableContract) -> RuleSet:
    """The rules ``contract`` declares, in a stable order (columns in order, then custom, then table)."""
    from lakebed.schemas.rules import sql_columns

    rules: list[Rule] = []
    for column in contract.columns:
        c, severity = column.name, column.severity
        if not column.nullable:
            rules.append(Rule(f"{c}_not_null", "not_null", severity, f"{c} is not null", c))
        if column.min is not None or column.max is not None:
            low = "-inf" if column.min is None else repr(column.min)
            high = "+inf" if column.max is None else repr(column.max)
            rules.append(
                Rule(
                    f"{c}_between",
                    "between",
                    severity,
                    f"{c} between {low} and {high}",
                    c,
                    {"min": column.min, "max": column.max},
                )
            )
        if column.allowed is not None:
            values = list(column.allowed)
            rules.append(Rule(f"{c}_allowed", "allowed", severity, f"{c} in {values}", c, {"values": values}))
        if column.regex is not None:
            rules.append(
                Rule(
                    f"{c}_regex",
                    "regex",
                    severity,
                    f"{c} matches /{column.regex}/",
                    c,
                    {"pattern": column.regex},
                )
            )
        if column.unique:
            rules.append(Rule(f"{c}_unique", "unique", severity, f"{c} values are unique", c))
    for expr in contract.rules:
        rules.append(
            Rule(
                expr.name,
                "expr",
                expr.severity,
                expr.description or expr.sql,
                params={"sql": expr.sql, "columns": sorted(sql_columns(expr.sql))},
            )
        )
    table_rules = contract.table_rules
    if table_rules.row_count is not None:
        bounds = table_rules.row_count
        rules.append(
            Rule(
                "row_count",
                "row_count",
                bounds.severity,
                f"row count between {bounds.min if bounds.min is not None else 0} and "
                f"{bounds.max if bounds.max is not None else 'any'}",
                params={"min": bounds.min, "max": bounds.max},
            )
        )
    if table_rules.unique_keys is not None:
        keys = list(table_rules.unique_keys.columns or contract.keys)
        rules.append(
            Rule(
                "unique_keys",
                "unique_keys",
                table_rules.unique_keys.severity,
                f"keys {keys} are unique",
                params={"columns": keys},
            )
        )
    if table_rules.freshness is not None:
        fresh = table_rules.freshness
        rules.append(
            Rule(
                "freshness",
                "freshness",
                fresh.severity,
                f"newest {fresh.column} at most {format_duration(fresh.max_lag)} old",
                fresh.column,
                {"max_lag": fresh.max_lag},
            )
        )
    return RuleSet(table=contract.name, rules=tuple(rules), fingerprint=contract.fingerprint())


def type_rule(column: str, type_name: str) -> Rule:
    """The rule a value breaks when it cannot be converted to its column's declared type."""
    return Rule(f"{column}_type", "type", "error", f"{column} converts to {type_name}", column)


__all__ = ["ROW_KINDS", "Rule", "RuleKind", "RuleSet", "compile_rules", "type_rule"]
