"""Table contracts: the declared shape of a lakebed table. Pure data, no I/O."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import pyarrow as pa
from lakebed.schemas.loading import read_yaml, validate
from lakebed.schemas.naming import table_name_validator
from lakebed.schemas.types import parse_type, type_name
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from lakebed.errors import ContractError

DriftPolicy = Literal["evolve", "strict"]


class ColumnSpec(BaseModel):
    """One column: its type (see :func:`lakebed.schemas.types.parse_type`) and nullability."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str
    nullable: bool = True
    description: str | None = None

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
        return self

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, c.nullable) for c in self.columns])

    def column_types(self) -> dict[str, pa.DataType]:
        return {c.name: c.arrow_type for c in self.columns}

    def fingerprint(self) -> str:
        """A stable hash of the definition (used to detect a changed contract)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()

    @classmethod
    def from_arrow(cls, name: str, schema: pa.Schema, **options: object) -> TableContract:
        columns = tuple(ColumnSpec(name=f.name, type=type_name(f.type), nullable=f.nullable) for f in schema)
        return cls(name=name, columns=columns, **options)  # type: ignore[arg-type]

    @classmethod
    def from_yaml(cls, path: str | Path) -> TableContract:
        """Load a contract from YAML; an invalid file names itself and the offending field."""
        return cls.from_dict(read_yaml(path, what="contract"), source=str(path))

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<contract>") -> TableContract:
        return validate(cls, data, source=source, what="contract")


def load_contracts(folder: str | Path) -> dict[str, TableContract]:
    """Every ``*.yaml`` contract in ``folder``, by table name."""
    contracts: dict[str, TableContract] = {}
    for path in sorted(Path(folder).glob("*.y*ml")):
        contract = TableContract.from_yaml(path)
        contracts[contract.name] = contract
    return contracts


__all__ = ["ColumnSpec", "DriftPolicy", "TableContract", "load_contracts"]
