"""Transformation models of a project (docs/models.md): their options and their SQL files.

A SQL model is ``models/<name>.sql``: one DuckDB ``SELECT`` over lakebed tables by name, with its options in
a leading ``/* lakebed ... */`` YAML comment or in a ``<name>.yaml`` sidecar. :func:`read_sql_model` parses
it (sqlglot, DuckDB dialect) into the tables it reads, each with the line naming it, so a project can check
its models before anything runs; every problem is a :class:`~lakebed.errors.ProjectError` naming the file
(and the line, for SQL).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sqlglot import exp

from lakebed.errors import InvalidTableNameError, ProjectError
from lakebed.schemas.contract import DriftPolicy
from lakebed.schemas.loading import problems
from lakebed.schemas.naming import validate_table_name

DIALECT = "duckdb"
_HEADER = re.compile(r"\A\s*/\*\s*lakebed\b(?P<body>.*?)\*/", re.DOTALL)
# DuckDB functions that read files or other databases: a model reads lakebed tables, whose versions lineage
# records; files come in through a source.
_FILE_READERS = re.compile(r"^(read_\w+|\w+_scan|sniff_csv|glob)$", re.IGNORECASE)
Materialized = Literal["table", "incremental", "merge"]


class ModelOptions(BaseModel):
    """How a model is materialised and described (the YAML header or sidecar)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    materialized: Materialized = "table"
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    contract: str | None = None  # a file in the project's contracts folder
    drift: DriftPolicy | None = None
    description: str | None = None
    owners: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # The input whose new rows an incremental or merge run reads (the other inputs are read whole); needed
    # when the model reads several tables.
    incremental_on: str | None = None

    @model_validator(mode="after")
    def _merge_keys(self) -> ModelOptions:
        if self.materialized == "merge" and not self.keys:
            raise ValueError("materialized: merge needs keys (the columns rows are upserted by)")
        return self


@dataclass(frozen=True)
class TableRef:
    """A table a model reads, with the line of the model file naming it."""

    name: str
    line: int


@dataclass(frozen=True)
class Model:
    """What every model has: its table name, its file, its options and the tables it reads."""

    name: str
    path: Path
    options: ModelOptions
    reads: tuple[TableRef, ...]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The tables read, each once, in the order the model first names them."""
        return tuple(dict.fromkeys(ref.name for ref in self.reads))

    @property
    def incremental_input(self) -> str | None:
        """The input whose new rows an incremental or merge run reads (None for ``table`` models)."""
        if self.options.materialized == "table":
            return None
        return self.options.incremental_on or self.inputs[0]

    @functools.cached_property
    def code_version(self) -> str:
        """A digest of the model's code and options: it changes exactly when what the model makes may.
        Worked out once per loaded model (a Python model's code is its source, read from its file)."""
        text = json.dumps([self.code(), self.options.model_dump_json()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def code(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class SqlModel(Model):
    """One parsed SQL model file."""

    sql: str

    def code(self) -> str:
        return self.sql


def read_sql_model(path: Path) -> SqlModel:
    """The model in ``path`` (``<name>.sql``), its options (header or sidecar) and the tables it reads."""
    try:
        name = validate_table_name(path.stem)
    except InvalidTableNameError as exc:
        raise ProjectError(f"{path}: the file name is the model's table name: {exc}") from None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read the model: {exc}") from None
    options = _options(path, text)
    model = SqlModel(name, path, options, _reads(path, _parse(path, text)), text)
    check_incremental(model)
    return model


def check_incremental(model: Model) -> None:
    """An incremental or merge model names the input whose new rows it reads when it reads several."""
    chosen, inputs = model.options.incremental_on, model.inputs
    if chosen is not None and chosen not in inputs:
        raise ProjectError(
            f"{model.path}: incremental_on: {chosen!r} is not a table the model reads ({inputs})"
        )
    if model.options.materialized != "table" and chosen is None and len(inputs) != 1:
        raise ProjectError(
            f"{model.path}: materialized: {model.options.materialized} reads the new rows of one input: "
            f"name it with incremental_on (the model reads {', '.join(inputs) or 'no table'})"
        )


def _options(path: Path, text: str) -> ModelOptions:
    header = _HEADER.match(text)
    found: list[tuple[str, object]] = []
    if header is not None:
        found.append((f"{path} (header)", _yaml(path, header.group("body"))))
    for sidecar in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if sidecar.is_file():
            try:
                found.append((str(sidecar), _yaml(sidecar, sidecar.read_text(encoding="utf-8"))))
            except OSError as exc:
                raise ProjectError(f"{sidecar}: cannot read the model's options: {exc}") from None
    merged: dict[str, object] = {}
    given: dict[str, str] = {}
    for where, data in found:
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ProjectError(f"{where}: model options must be a mapping, not {type(data).__name__}")
        for key, value in data.items():
            if key in given:
                raise ProjectError(f"{where}: option {key!r} is also given in {given[key]}: give it once")
            given[key] = where
            merged[key] = value
    try:
        return ModelOptions.model_validate(merged)
    except ValidationError as exc:
        where = " and ".join(w for w, _ in found) or str(path)
        raise ProjectError(f"{where}: model options: {problems(exc)}") from None


def _yaml(path: Path, body: str) -> object:
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path}: the model's options are not valid YAML: {exc}") from None


def _parse(path: Path, text: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(text, dialect=DIALECT) if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line = first.get("line")
        where = f"{path}:{line}" if line else str(path)
        raise ProjectError(f"{where}: the SQL does not parse: {first.get('description') or exc}") from None
    if len(statements) != 1:
        raise ProjectError(f"{path}: a SQL model is one SELECT statement, found {len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        kind = statement.key.upper()
        raise ProjectError(
            f"{path}: a SQL model is one SELECT statement, not {kind} (lakebed writes the table)"
        )
    return statement


def _reads(path: Path, statement: exp.Query) -> tuple[TableRef, ...]:
    """The lakebed tables ``statement`` reads (names of its CTEs are not tables)."""
    ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
    refs: list[tuple[tuple[int, int], TableRef]] = []
    for table in statement.find_all(exp.Table):
        position = _position(table)
        line = position[0]
        where = f"{path}:{line}" if line else str(path)
        if not isinstance(table.this, exp.Identifier):
            function = (
                table.this.sql_name() if isinstance(table.this, exp.Func) else table.this.sql(DIALECT)
            ).lower()
            if _FILE_READERS.match(function.split("(")[0]):
                raise ProjectError(
                    f"{where}: {function}(...) reads files: a model reads lakebed tables by name "
                    "(bring files in with a source)"
                )
            continue  # a table function computing rows (range, generate_series, unnest)
        if table.args.get("db") or table.args.get("catalog"):
            raise ProjectError(
                f"{where}: table {table.sql(DIALECT)}: lakebed tables are named without a schema or catalog"
            )
        if table.name in ctes:
            continue
        try:
            refs.append((position, TableRef(validate_table_name(table.name), line)))
        except InvalidTableNameError as exc:
            raise ProjectError(f"{where}: {exc}") from None
    return tuple(ref for _, ref in sorted(refs, key=lambda r: r[0]))


def _position(node: exp.Expression) -> tuple[int, int]:
    """(line, offset) of the name of ``node`` in the model file (0 when the parser kept none)."""
    meta = node.this.meta if isinstance(node.this, exp.Expression) else {}
    line, start = meta.get("line", 0), meta.get("start", 0)
    return (line if isinstance(line, int) else 0, start if isinstance(start, int) else 0)


__all__ = [
    "DIALECT",
    "Materialized",
    "Model",
    "ModelOptions",
    "SqlModel",
    "TableRef",
    "check_incremental",
    "read_sql_model",
]
