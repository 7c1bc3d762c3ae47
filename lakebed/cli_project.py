"""``lakebed init | plan | apply``: a project folder made, compared with the lake, then applied to it.

Attached to the main CLI with ``register(main)``. Heavy layers are imported inside the commands, so
``lakebed --help`` stays fast.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lakebed.cli_output import OutputFormat, emit, format_option
from lakebed.errors import ProjectError

if TYPE_CHECKING:
    from lakebed.pipelines.project_plan import Change
    from lakebed.schemas.project import Project

EXAMPLES = ("shop",)
DEFINITIONS = "import lakebed.dagster\n\ndefs = lakebed.dagster.definitions(__file__)\n"
GITIGNORE = ".lakebed/\n"
# Left out of a copied example: state and caches of a project that was run in place.
_NOT_COPIED = (".lakebed", "__pycache__", ".git")

_LAKEBED_TOML = """\
# The lakebed project {title}: sources/, contracts/ and feature_views/ hold its definitions,
# `lakebed plan` shows what they change in the lake, `lakebed apply` registers them.
# Settings sections: [storage] [kafka] [lineage] [ingest]; state lives in .lakebed/.
[project]
name = {name}
"""

_SOURCES = """\
# What the project ingests, one entry per source. Paths are relative to the project folder.
# kind: files (csv, tsv, json, parquet: a file, folder or glob), unstructured (folders, zips) or stream.
#
# sources:
#   - table: orders
#     kind: files
#     path: data/orders
#     format: csv
#     contract: orders.yaml          # a file in contracts/
#     run: {sensor: true}            # or {schedule: "0 3 * * *"}; neither: on demand
sources: []
"""

_CONTRACTS = """\
# Table contracts

One YAML file per table; a source names its contract by file (`contract: orders.yaml`).

```yaml
name: orders
drift: strict            # or evolve: new nullable columns are let in
keys: [order_id]
columns:
  - {name: order_id, type: int64, nullable: false, unique: true}
  - {name: amount, type: float64, min: 0}
  - {name: ordered_at, type: timestamp}
rules:
  - {name: positive_amount, sql: "amount > 0"}
```
"""

_FEATURE_VIEWS = """\
# Feature views

One YAML file per view version (`name:vN`). A registered version never changes meaning: to change a
view, copy it with `version` bumped.

```yaml
name: customer_orders
version: 1
entities: [customer_id]
source: {table: orders}
event_time: ordered_at
hop: 1h
ttl: 2d
aggregations:
  - {name: orders_1d, function: count, window: 1d}
  - {name: spend_1d, function: sum, column: amount, window: 1d}
```
"""


def register(main: click.Group) -> None:
    """Attach ``init``, ``plan`` and ``apply`` to the ``lakebed`` group."""
    main.add_command(init)
    main.add_command(plan)
    main.add_command(apply)


# init ------------------------------------------------------------------------------------------------
@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--example", type=click.Choice(EXAMPLES), help="Copy an example project instead.")
def init(directory: Path, example: str | None) -> None:
    """Make DIRECTORY a lakebed project: lakebed.toml, sources/, contracts/, feature_views/, a Dagster
    definitions.py and a .gitignore. With --example, a copy of that example project (data included).
    Refuses a non-empty folder that is not already that project; safe to run again on it."""
    root = directory.expanduser().resolve()
    made = _copy_example(root, example) if example is not None else _scaffold(root)
    for name, text in ((".gitignore", GITIGNORE), ("definitions.py", DEFINITIONS)):
        made += _write_new(root / name, text)
    if made:
        click.echo(f"{root}: lakebed project {_project_name(root)!r} ({made} file(s) written)")
    else:
        click.echo(f"{root}: already lakebed project {_project_name(root)!r}, nothing to write")
    click.echo(f"next: cd {shlex.quote(str(directory))} && lakebed plan", err=True)


def _contents(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name != ".git"] if root.is_dir() else []


def _scaffold(root: Path) -> int:
    from lakebed.config import PROJECT_FILE

    if (root / PROJECT_FILE).is_file():
        return 0  # already a project: nothing of it is rewritten
    if _contents(root):
        raise click.ClickException(
            f"{root} is not empty and not a lakebed project (no {PROJECT_FILE}): give an empty or new folder"
        )
    files = {
        PROJECT_FILE: _LAKEBED_TOML.format(
            title=root.name, name=json.dumps(root.name)
        ),  # a TOML basic string
        "sources/sources.yaml": _SOURCES,
        "contracts/README.md": _CONTRACTS,
        "feature_views/README.md": _FEATURE_VIEWS,
    }
    return sum(_write_new(root / name, text) for name, text in files.items())


def _copy_example(root: Path, example: str) -> int:
    """Copy the example's files that ``root`` lacks; refuses a non-empty ``root`` that is another project."""
    from lakebed.config import PROJECT_FILE
    from lakebed.examples import SHOP

    source = {"shop": SHOP}[example]
    settings = root / PROJECT_FILE
    same = settings.is_file() and settings.read_bytes() == (source / PROJECT_FILE).read_bytes()
    if _contents(root) and not same:
        raise click.ClickException(
            f"{root} is not empty and not a copy of the {example} example: give an empty or new folder"
        )
    copied = 0
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or any(part in _NOT_COPIED for part in relative.parts):
            continue
        target = root / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    return copied


def _write_new(path: Path, text: str) -> int:
    """Write ``path`` unless it exists (a project's own files are never overwritten); 1 if written."""
    if path.exists():
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return 1


def _project_name(root: Path) -> str:
    from lakebed.config import PROJECT_FILE, read_project_file

    section = read_project_file(root / PROJECT_FILE).get("project")
    return str(section.get("name", root.name)) if isinstance(section, dict) else root.name


# plan and apply --------------------------------------------------------------------------------------
_STYLES = {"action": {"create": "green", "update": "yellow", "refuse": "bold red", "unchanged": "dim"}}


def _current_project() -> Project:
    from lakebed.config import find_project
    from lakebed.schemas.project import load_project

    root = find_project()
    if root is None:
        raise ProjectError(
            f"{Path.cwd()}: not in a lakebed project (no lakebed.toml here or above): "
            "run `lakebed init DIR`, or pass --project DIR"
        )
    return load_project(root)


def _emit(changes: tuple[Change, ...] | list[Change], fmt: OutputFormat, title: str) -> None:
    from lakebed.pipelines.project_plan import CHANGE_COLUMNS

    emit((c.row() for c in changes), CHANGE_COLUMNS, fmt, title=title, styles=_STYLES)


@click.command()
@format_option
def plan(fmt: OutputFormat) -> None:
    """Show what the project changes in the lake, changing nothing: new tables, contract changes,
    feature-view versions new, unchanged or refused. Exit 1 when a change is refused (e.g. a registered
    feature-view version edited without bumping its version) or the project is invalid."""
    from lakebed.config import get_config
    from lakebed.pipelines.project_plan import PlanRefusedError, refusal, summary
    from lakebed.pipelines.project_plan import plan as make_plan

    project = _current_project()
    result = make_plan(project, get_config())
    _emit(result.changes, fmt, f"plan of project {project.name} ({project.root})")
    click.echo(f"plan: {summary(result.changes)}", err=True)
    if result.refused:
        raise PlanRefusedError(refusal(result))


@click.command()
@format_option
def apply(fmt: OutputFormat) -> None:
    """Perform the plan: register each contract in the catalog and each new feature-view version in the
    registry. Never ingests data. Refuses (exit 1, nothing changed) when the plan refuses anything."""
    from lakebed.config import get_config
    from lakebed.pipelines.project_plan import apply as apply_plan
    from lakebed.pipelines.project_plan import plan as make_plan

    project = _current_project()
    config = get_config()
    done = apply_plan(make_plan(project, config), config)
    _emit(done, fmt, f"applied to the lake of project {project.name} ({config.home})")
    click.echo(f"apply: {len(done)} change(s) applied" if done else "apply: nothing to do", err=True)


__all__ = ["DEFINITIONS", "EXAMPLES", "apply", "init", "plan", "register"]
