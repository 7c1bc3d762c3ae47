"""How the listing and query commands print: one ``--format table|json|csv`` option and one :func:`emit`.

- ``table`` (the default) is for reading: a rich table whose long names, keys and values wrap inside their
  column and are never cut. In a terminal it fits the terminal's width; in a pipe or a file it is as wide
  as its widest row (up to :data:`PIPE_WIDTH`, or ``$COLUMNS`` when set), so each row stays on one line
  for ``grep``. When a row has to wrap, lines separate the rows, so a wrapped name is not mistaken for two.
- ``json`` is ONE JSON array of objects, one object per row, keys in column order (the same keys as the
  csv header). Each object is on its own line, so the array also reads well line by line; an empty
  result is ``[]``.
- ``csv`` is a header row then one line per row (``csv`` module, ``\\n`` line ends).

Values are the same in json and csv: timestamps, dates and times ISO 8601, durations ISO 8601 (``P1DT2H``),
bytes base64, decimals as numbers, NaN and infinities as the strings ``NaN``, ``Infinity``, ``-Infinity``,
and lists and objects nested (inside a csv cell: as JSON text; empty for null).

Data goes to stdout; messages, warnings and errors go to stderr. Only stdlib and click are imported at
module level (rich when a table is printed), so ``lakebed --help`` stays fast.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

import click

if TYPE_CHECKING:
    import pyarrow as pa
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

OutputFormat = Literal["table", "json", "csv"]
FORMATS: tuple[str, ...] = get_args(OutputFormat)
# The widest a table gets in a pipe or a file before rows wrap.
PIPE_WIDTH = 400
NULL_CELL = "∅"

FORMAT_HELP = (
    "table: aligned columns for reading (long values wrap, never cut); json: one JSON array of objects; "
    "csv: a header row, then one line per row."
)

OUTPUT_EPILOG = """\b
Output: the listing and query commands (plan, apply, tables, history, show,
sql, quality check|results|rules|quarantine, lineage runs|history|producer,
features list|get-online|get-historical, tier status, search, embed) take
--format table|json|csv.
json is one JSON array of objects, one per row, keys as the csv header; csv
has a header row. Timestamps are ISO 8601, bytes base64, nested values JSON
(as text in csv). Data goes to stdout, messages and errors to stderr.

\b
Exit status:
  0  success
  1  an error (one line on stderr), or a failed check: `plan`/`apply` with
     a refused change or an invalid project, `quality check`
     with a failing error rule, `broker status` with no reachable broker,
     `lineage flush` with events still waiting for the backend
  2  a usage error: unknown command or option, bad option value
"""

Command = TypeVar("Command", bound=Callable[..., object])


def format_option(command: Command) -> Command:
    """``--format table|json|csv`` (default ``table``), passed to the command as ``fmt``."""
    option = click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help=FORMAT_HELP,
    )
    return option(command)


def emit(
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str],
    fmt: OutputFormat,
    *,
    title: str | None = None,
    table_columns: Sequence[str] | None = None,
    styles: Mapping[str, Mapping[str, str]] | None = None,
    count: bool = False,
) -> int:
    """Print ``rows`` (read once, as they come) in ``fmt``; returns how many there were.

    ``columns`` are the keys of json objects and the csv header, in order. For ``table`` only:
    ``table_columns`` shows a subset, ``styles`` colours cells by column and value, ``count`` adds a
    ``N row(s)`` line, and ``title`` goes above the table.
    """
    if fmt == "json":
        return _write_json(rows, columns)
    if fmt == "csv":
        return _write_csv(rows, columns)
    return _print_table(rows, table_columns or columns, title=title, styles=styles or {}, count=count)


def emit_arrow(data: pa.Table | pa.RecordBatchReader, fmt: OutputFormat, *, title: str | None = None) -> int:
    """Print an Arrow table or record batch stream in ``fmt``, one record batch at a time (json and csv
    never hold more than one batch's rows as Python objects). Tables end with a ``N row(s)`` line."""
    columns = unique_names(list(data.schema.names))
    return emit(_arrow_rows(data, columns), columns, fmt, title=title, count=True)


def _arrow_rows(data: pa.Table | pa.RecordBatchReader, columns: list[str]) -> Iterator[dict[str, object]]:
    batches = data.to_batches() if hasattr(data, "to_batches") else data
    for batch in batches:
        for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
            yield dict(zip(columns, values, strict=True))


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique as DuckDB does (``a, a`` → ``a, a_1``), so no value is lost to a repeated
    key in a json object."""
    originals, used = set(names), set[str]()
    unique: list[str] = []
    for name in names:
        candidate, n = name, 0
        while candidate in used or (candidate != name and candidate in originals):
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        unique.append(candidate)
    return unique


# Values ----------------------------------------------------------------------------------------------
def json_value(value: object) -> object:
    """``value`` as JSON data (see the module docstring for each type)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return iso_duration(value)
    if isinstance(value, tuple) and type(value).__name__ == "MonthDayNano":
        months, days, nanoseconds = value  # an Arrow month_day_nano interval (DuckDB's INTERVAL)
        rest = iso_duration(dt.timedelta(days=days, microseconds=nanoseconds // 1000))
        return f"P{months}M{'' if rest == 'PT0S' else rest[1:]}" if months else rest
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    return str(value)


def text_value(value: object) -> str:
    """``value`` as one csv cell: strings as they are, other values as their JSON text, null as ``""``."""
    data = json_value(value)
    if data is None:
        return ""
    return data if isinstance(data, str) else json.dumps(data)


def cell_text(value: object) -> str:
    """``value`` in a table cell: as in csv, but null is ``∅``, bytes are ``<N bytes>`` and a list of
    plain values is comma-separated."""
    if value is None:
        return NULL_CELL
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value):,} bytes>"
    if isinstance(value, list | tuple) and not any(isinstance(v, list | tuple | Mapping) for v in value):
        return ", ".join(cell_text(v) for v in value)
    return text_value(value)


def iso_duration(value: dt.timedelta) -> str:
    """``value`` as an ISO 8601 duration: ``P1DT2H30M``, ``PT0.5S``, ``-PT1M``."""
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if value.microseconds:
        clock += f"{seconds}.{value.microseconds:06d}".rstrip("0") + "S"
    elif seconds:
        clock += f"{seconds}S"
    if not value.days and not clock:
        return "PT0S"
    return f"{sign}P{f'{value.days}D' if value.days else ''}{f'T{clock}' if clock else ''}"


# Writers ---------------------------------------------------------------------------------------------
def _write_json(rows: Iterable[Mapping[str, object]], columns: Sequence[str]) -> int:
    out = sys.stdout
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n" if count else "\n")
        out.write(json.dumps({c: json_value(row.get(c)) for c in columns}))
        count += 1
    out.write("\n]\n" if count else "]\n")
    out.flush()
    return count


def _write_csv(rows: Iterable[Mapping[str, object]], columns: Sequence[str]) -> int:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([text_value(row.get(c)) for c in columns])
        count += 1
    sys.stdout.flush()
    return count


def _print_table(
    rows: Iterable[Mapping[str, object]],
    columns: Sequence[str],
    *,
    title: str | None,
    styles: Mapping[str, Mapping[str, str]],
    count: bool,
) -> int:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title) if title else None, title_justify="left")
    for column in columns:
        table.add_column(Text(column), overflow="fold", no_wrap=False)
    shown = 0
    for row in rows:
        cells = [(cell_text(row.get(c)), styles.get(c, {})) for c in columns]
        table.add_row(*(Text(text, style=style.get(text, "")) for text, style in cells))
        shown += 1
    table_console(table).print(table)
    if count:
        click.echo(f"{shown:,} row(s)")
    return shown


def table_console(table: Table) -> Console:
    """A console for ``table`` on stdout: the terminal's width in a terminal; in a pipe or a file,
    ``$COLUMNS`` when set, else the table's own width (at least 80, at most :data:`PIPE_WIDTH`). When
    the table must wrap at that width, it draws a line between rows."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        wide = console.options.update_width(PIPE_WIDTH)
        console = Console(width=max(80, min(console.measure(table, options=wide).maximum, PIPE_WIDTH)))
    natural = console.measure(table, options=console.options.update_width(PIPE_WIDTH)).maximum
    if natural > console.width:
        table.show_lines = True
    return console


def stderr_console() -> Console:
    """A console for progress bars and notes: stderr, so stdout carries only data."""
    from rich.console import Console

    return Console(stderr=True)


def progress_bar() -> Progress:
    """lakebed's progress bar on stderr (step, bar, done/total, time), shown on a terminal only."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


__all__ = [
    "progress_bar",
    "FORMATS",
    "OUTPUT_EPILOG",
    "OutputFormat",
    "cell_text",
    "emit",
    "emit_arrow",
    "format_option",
    "iso_duration",
    "json_value",
    "stderr_console",
    "table_console",
    "text_value",
    "unique_names",
]
