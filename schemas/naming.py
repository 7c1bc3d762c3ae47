"""The naming rule of lakebed tables."""

from __future__ import annotations

import re

from lakebed.errors import InvalidTableNameError

TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,127}")


def validate_table_name(name: str) -> str:
    """Return ``name`` if it is a valid table name (lowercase letter, then lowercase letters, digits,
    underscores; at most 128 characters); raise :class:`InvalidTableNameError` otherwise."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise InvalidTableNameError(
            f"invalid table name {name!r}: use a lowercase letter followed by lowercase letters, digits "
            "or underscores (at most 128 characters)"
        )
    return name


def table_name_validator(value: str) -> str:
    """:func:`validate_table_name` for pydantic field validators (they report a ValueError per field)."""
    try:
        return validate_table_name(value)
    except InvalidTableNameError as exc:
        raise ValueError(str(exc)) from None
