"""Reading specs (table contracts, feature views) from YAML with errors that name the file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lakebed.errors import ContractError

Model = TypeVar("Model", bound=BaseModel)


def read_yaml(path: str | Path, *, what: str) -> object:
    """The parsed YAML of ``path``; unreadable or malformed files raise :class:`ContractError`."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read {what}: {exc}") from exc


def validate(model: type[Model], data: object, *, source: str, what: str) -> Model:
    """``data`` validated as ``model``; problems raise one :class:`ContractError` naming ``source`` and
    every offending field."""
    if not isinstance(data, dict):
        raise ContractError(f"{source}: invalid {what}: expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ContractError(f"{source}: invalid {what}: {problems(exc)}") from exc


def problems(exc: ValidationError, *, skip: int = 0) -> str:
    """Every problem of ``exc`` as ``field.path: message``, leaving out the first ``skip`` path parts."""
    return "; ".join(_problem(err, skip) for err in exc.errors())


def _problem(error: Any, skip: int) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"][skip:])
    return f"{where}: {message}" if where else message
