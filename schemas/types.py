"""Arrow types by name, and the mapping of any Arrow type onto what Delta Lake stores."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from lakebed.errors import ContractError

_SIMPLE: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float": pa.float32(),
    "float64": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
    "str": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "date32": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "timestamp_ntz": pa.timestamp("us"),
}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")
_LIST = re.compile(r"list<(.+)>")


def parse_type(name: str) -> pa.DataType:
    """Parse a type name used in contracts: ``int64``, ``string``, ``timestamp``, ``decimal(10,2)``,
    ``list<string>``. ``timestamp`` means microseconds in UTC; ``timestamp_ntz`` has no time zone."""
    key = name.strip().lower()
    if key in _SIMPLE:
        return _SIMPLE[key]
    if match := _DECIMAL.fullmatch(key):
        return pa.decimal128(int(match.group(1)), int(match.group(2)))
    if match := _LIST.fullmatch(key):
        return pa.list_(parse_type(match.group(1)))
    raise ContractError(f"unknown column type {name!r}; use one of {sorted(_SIMPLE)}, decimal(p,s), list<T>")


def type_name(dtype: pa.DataType) -> str:
    """The contract name of an Arrow type (inverse of :func:`parse_type` for Delta-compatible types)."""
    for name, candidate in _SIMPLE.items():
        if candidate == dtype:
            return name
    if pa.types.is_decimal(dtype):
        return f"decimal({dtype.precision},{dtype.scale})"
    if pa.types.is_list(dtype):
        return f"list<{type_name(dtype.value_type)}>"
    return str(dtype)


def delta_type(dtype: pa.DataType) -> pa.DataType:
    """The Arrow type Delta Lake stores for ``dtype`` (Delta has no unsigned ints, no nanoseconds,
    no large/view variants)."""
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if (
        pa.types.is_large_binary(dtype)
        or pa.types.is_binary_view(dtype)
        or pa.types.is_fixed_size_binary(dtype)
    ):
        return pa.binary()
    if pa.types.is_dictionary(dtype):
        return delta_type(dtype.value_type)
    if pa.types.is_unsigned_integer(dtype):
        return {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}.get(dtype.bit_width, pa.decimal128(20, 0))
    if pa.types.is_float16(dtype):
        return pa.float32()
    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", tz="UTC" if dtype.tz else None)
    if pa.types.is_date64(dtype):
        return pa.date32()
    if pa.types.is_time(dtype):
        return pa.string()
    if pa.types.is_null(dtype):
        return pa.string()
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype):
        return pa.list_(delta_type(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, delta_type(f.type), f.nullable) for f in dtype])
    if pa.types.is_map(dtype):
        return pa.map_(delta_type(dtype.key_type), delta_type(dtype.item_type))
    return dtype


def delta_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, delta_type(f.type), f.nullable) for f in schema])


def widens_to(source: pa.DataType, target: pa.DataType) -> bool:
    """True when every value of ``source`` is exactly representable as ``target`` (a safe, lossless
    cast), so data of type ``source`` may be written into a column of type ``target``."""
    if source == target or pa.types.is_null(source):
        return True
    if pa.types.is_integer(source) and pa.types.is_integer(target):
        return target.bit_width >= source.bit_width and pa.types.is_signed_integer(target)
    if pa.types.is_integer(source) and pa.types.is_floating(target):
        return source.bit_width <= 32 or target.bit_width == 64
    if pa.types.is_floating(source) and pa.types.is_floating(target):
        return target.bit_width >= source.bit_width
    return pa.types.is_date(source) and pa.types.is_timestamp(target)


def polars_dtype(arrow_type: pa.DataType) -> Any:
    """The Polars data type that holds values of ``arrow_type`` (as ``pl.from_arrow`` converts them)."""
    import polars as pl

    series = pl.from_arrow(pa.array([], arrow_type))
    assert isinstance(series, pl.Series)
    return series.dtype
