"""Python models (docs/models.md): functions in ``models/*.py`` decorated with :func:`model`.

```python
import polars as pl
import lakebed

@lakebed.model(inputs=["orders_clean"], materialized="merge", keys=["customer_id"],
               columns={"spend": ["orders_clean.amount"]})
def customer_spend(orders_clean: pl.LazyFrame) -> pl.LazyFrame:
    return orders_clean.group_by("customer_id").agg(pl.col("amount").sum().alias("spend"))
```

The function receives one Polars LazyFrame per input (by parameter name) and returns Arrow (a table or a
record batch reader) or Polars (a DataFrame or a LazyFrame); the model's table is named after the function
unless ``name=`` says otherwise. Inputs are declared (they cannot be read from the code), and so is column
lineage (``columns``: output column → the ``table.column`` values it is computed from).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from lakebed.errors import InvalidTableNameError, ProjectError
from lakebed.schemas.loading import problems
from lakebed.schemas.models import Model, ModelOptions, TableRef, check_incremental
from lakebed.schemas.naming import validate_table_name

_MARK = "__lakebed_model__"
Function = TypeVar("Function", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Declared:
    name: str
    inputs: tuple[str, ...]
    columns: Mapping[str, tuple[tuple[str, str], ...]]
    options: ModelOptions
    line: int


@dataclass(frozen=True)
class PythonModel(Model):
    """A decorated function of a ``models/*.py`` file."""

    function: Callable[..., Any] = field(compare=False)
    columns: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def code(self) -> str:
        source = inspect.getsource(self.function)
        return json.dumps([source, list(self.inputs), {k: list(v) for k, v in self.columns.items()}])


def model(
    *,
    inputs: Sequence[str],
    name: str | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
    **options: Any,
) -> Callable[[Function], Function]:
    """Declare a Python model (see the module docstring); ``options`` are those of a SQL model's header."""

    def declare(function: Function) -> Function:
        where = f"{inspect.getsourcefile(function)}:{function.__code__.co_firstlineno}"
        table = name or function.__name__
        try:
            validate_table_name(table)
            tables = tuple(validate_table_name(t) for t in inputs)
        except InvalidTableNameError as exc:
            raise ProjectError(f"{where}: model {table!r}: {exc}") from None
        try:
            parsed = ModelOptions.model_validate(options)
        except ValidationError as exc:
            raise ProjectError(f"{where}: model {table!r}: {problems(exc)}") from None
        lineage = {
            out: tuple(_column(where, table, tables, ref) for ref in refs)
            for out, refs in (columns or {}).items()
        }
        try:
            inspect.signature(function).bind(**dict.fromkeys(tables))
        except TypeError as exc:
            raise ProjectError(
                f"{where}: model {table!r}: its function must take one parameter per input "
                f"({', '.join(tables)}): {exc}"
            ) from None
        setattr(function, _MARK, _Declared(table, tables, lineage, parsed, function.__code__.co_firstlineno))
        return function

    return declare


def _column(where: str, table: str, inputs: tuple[str, ...], ref: str) -> tuple[str, str]:
    source, _, column = ref.partition(".")
    if not column or source not in inputs:
        raise ProjectError(
            f"{where}: model {table!r}: columns: {ref!r} is not `<input table>.<column>` of an input "
            f"({', '.join(inputs)})"
        )
    return source, column


def read_python_models(path: Path) -> list[PythonModel]:
    """The models declared in ``path`` (a ``models/*.py`` file), imported as a module of its own."""
    module_name = f"lakebed_models.{path.parent.name}.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ProjectError(f"{path}: cannot load the Python model file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # decorators and dataclasses of the module look themselves up here
    try:
        spec.loader.exec_module(module)
    except ProjectError:
        raise
    except Exception as exc:
        raise ProjectError(f"{path}: the model file fails on import: {type(exc).__name__}: {exc}") from exc
    found: list[PythonModel] = []
    for value in vars(module).values():
        declared = getattr(value, _MARK, None)
        if not isinstance(declared, _Declared) or getattr(value, "__module__", None) != module_name:
            continue
        reads = tuple(TableRef(t, declared.line) for t in declared.inputs)
        built = PythonModel(
            declared.name, path, declared.options, reads, function=value, columns=declared.columns
        )
        check_incremental(built)
        found.append(built)
    return found


__all__ = ["PythonModel", "model", "read_python_models"]
