"""Table contracts: the declared shape of a lakebed table. Pure data, no I/O."""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from lakebed.errors import ContractError
from lakebed.schemas.loading import read_yaml, validate
from lakebed.schemas.naming import table_name_validator
from lakebed.schemas.rules import ExprRule, Scalar, Severity, TableRules, sql_columns
from lakebed.schemas.tiering import TierPolicy
from lakebed.schemas.types import parse_type, type_name

DriftPolicy = Literal["evolve", "strict"]


class ColumnSpec(BaseModel):
    """One column: its type (see :func:`lakebed.schemas.types.parse_type`), nullability and value rules.

    ``min``/``max`` bound the value (inclusive; ISO strings for dates and timestamps), ``allowed`` lists the
    permitted values, ``regex`` must match string values, ``unique`` forbids repeated values within the
    data checked. ``severity`` applies to all of this column's rules (``nullable: false`` included).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str
    nullable: bool = True
    description: str | None = None
    unique: bool = False
    min: Scalar | None = None
    max: Scalar | None = None
    allowed: tuple[Scalar, ...] | None = None
    regex: str | None = None
    severity: Severity = "error"

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        dtype = parse_type(self.type)
        textual = pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
        if self.regex is not None:
            if not textual:
                raise ValueError(f"regex needs a string column, {self.name!r} is {self.type}")
            _check_regex(self.regex)
        ordered = textual or pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
        ordered = ordered or pa.types.is_decimal(dtype) or pa.types.is_temporal(dtype)
        if (self.min is not None or self.max is not None) and not ordered:
            raise ValueError(f"min/max need an ordered column, {self.name!r} is {self.type}")
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is None:
                continue
            numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
            if numeric and not isinstance(value, int | float):
                raise ValueError(
                    f"{bound} of {self.type} column {self.name!r} must be a number, got {value!r}"
                )
            if pa.types.is_temporal(dtype):
                _parse_instant(value, f"{bound} of {self.name!r}")
        if self.min is not None and self.max is not None and _order_key(self.min) > _order_key(self.max):
            raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
        if self.allowed is not None:
            if not self.allowed:
                raise ValueError("allowed must list at least one value")
            for value in self.allowed:
                _check_value(value, dtype, f"allowed value {value!r} of {self.type} column {self.name!r}")
        return self

    def has_value_rules(self) -> bool:
        return bool(
            self.unique
            or self.min is not None
            or self.max is not None
            or self.allowed is not None
            or self.regex is not None
        )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        try:
            parse_type(value)
        except ContractError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def arrow_type(self) -> pa.DataType:
        return parse_type(self.type)


class TableContract(BaseModel):
    """The contract of a table: columns, keys, partitioning and the schema-drift policy.

    ``drift="evolve"`` lets new nullable columns in, ``"strict"`` rejects any column not declared.
    A column whose type changes is always an error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    columns: tuple[ColumnSpec, ...] = ()
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    drift: DriftPolicy = "evolve"
    description: str | None = None
    rules: tuple[ExprRule, ...] = ()
    table_rules: TableRules = TableRules()
    tiering: TierPolicy | None = None
    encoding: str | None = None  # text encoding of the table's CSV/JSON source files (default UTF-8)

    @field_validator("encoding")
    @classmethod
    def _valid_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown text encoding {value!r} (a Python codec name, e.g. latin-1)"
                ) from None
        return value

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return table_name_validator(value)

    @model_validator(mode="after")
    def _known_columns(self) -> TableContract:
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate columns {duplicates}")
        if self.columns:
            for group, cols in (("keys", self.keys), ("partition_by", self.partition_by)):
                unknown = [c for c in cols if c not in names]
                if unknown:
                    raise ValueError(f"{group} names unknown columns {unknown}")
        rule_names = [r.name for r in self.rules]
        repeated = sorted({n for n in rule_names if rule_names.count(n) > 1})
        if repeated:
            raise ValueError(f"duplicate rule names {repeated}")
        if not self.columns:
            return self
        for index, rule in enumerate(self.rules):
            unknown = sorted(sql_columns(rule.sql) - set(names))
            if unknown:
                raise ValueError(f"rules.{index} ({rule.name}): sql names unknown columns {unknown}")
        unique_keys = self.table_rules.unique_keys
        if unique_keys is not None:
            columns = unique_keys.columns or self.keys
            if not columns:
                raise ValueError("table_rules.unique_keys: give columns or declare the contract's keys")
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise ValueError(f"table_rules.unique_keys names unknown columns {unknown}")
        if self.tiering is not None:
            column = next((c for c in self.columns if c.name == self.tiering.column), None)
            if column is None:
                raise ValueError(f"tiering names unknown column {self.tiering.column!r}")
            dtype = column.arrow_type
            if not (pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) or pa.types.is_integer(dtype)):
                raise ValueError(
                    f"tiering needs a timestamp, date or integer column, {column.name!r} is {column.type}"
                )
        freshness = self.table_rules.freshness
        if freshness is not None:
            column = next((c for c in self.columns if c.name == freshness.column), None)
            if column is None:
                raise ValueError(f"table_rules.freshness names unknown column {freshness.column!r}")
            if not pa.types.is_temporal(column.arrow_type):
                raise ValueError(
                    f"table_rules.freshness needs a date or timestamp column, {column.name!r} is {column.type}"
                )
        return self

    def has_rules(self) -> bool:
        """Whether writes to this table run quality checks (declared rules or non-nullable columns)."""
        rules = self.table_rules
        return bool(
            self.rules
            or rules.row_count
            or rules.unique_keys
            or rules.freshness
            or any(not c.nullable or c.has_value_rules() for c in self.columns)
        )

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, c.nullable) for c in self.columns])

    def column_types(self) -> dict[str, pa.DataType]:
        return {c.name: c.arrow_type for c in self.columns}

    def fingerprint(self) -> str:
        """A stable hash of the definition (used to detect a changed contract)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()

    @classmethod
    def from_arrow(cls, name: str, schema: pa.Schema, **options: Any) -> TableContract:
        """A contract declaring ``schema``'s columns; ``options`` are other fields (keys, tiering, ...)."""
        columns = tuple(ColumnSpec(name=f.name, type=type_name(f.type), nullable=f.nullable) for f in schema)
        return cls.model_validate({"name": name, "columns": columns, **options})

    @classmethod
    def from_yaml(cls, path: str | Path) -> TableContract:
        """Load a contract from YAML; an invalid file names itself and the offending field."""
        return cls.from_dict(read_yaml(path, what="contract"), source=str(path))

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<contract>") -> TableContract:
        return validate(cls, data, source=source, what="contract")


def _check_value(value: object, dtype: pa.DataType, what: str) -> None:
    """``value`` (from a contract) fits a column of ``dtype``; ValueError naming ``what`` otherwise."""
    if pa.types.is_boolean(dtype):
        ok = isinstance(value, bool)
    elif pa.types.is_integer(dtype):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif pa.types.is_temporal(dtype):
        _parse_instant(value, what)
        ok = True
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"{what} does not fit the column's type")


def _check_regex(pattern: str) -> None:
    """The pattern compiles for the engine that runs it (Polars: Rust regex, no look-around)."""
    import polars as pl

    try:
        pl.Series([""], dtype=pl.String).str.contains(pattern)
    except Exception as exc:  # polars ComputeError
        raise ValueError(f"invalid regex {pattern!r}: {str(exc).strip().splitlines()[0]}") from None


def _parse_instant(value: object, what: str) -> dt.datetime | dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{what} must be an ISO date or timestamp, got {value!r}") from None


def _order_key(value: object) -> tuple[int, object]:
    return (0, float(value)) if isinstance(value, int | float) else (1, str(value))


def load_contracts(folder: str | Path) -> dict[str, TableContract]:
    """Every ``*.yaml`` contract in ``folder``, by table name."""
    contracts: dict[str, TableContract] = {}
    for path in sorted(Path(folder).glob("*.y*ml")):
        contract = TableContract.from_yaml(path)
        contracts[contract.name] = contract
    return contracts


__all__ = ["ColumnSpec", "DriftPolicy", "TableContract", "load_contracts"]
