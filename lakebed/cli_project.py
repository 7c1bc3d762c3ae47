"""``lakebed init | plan | apply``: a project folder made, compared with the lake, then applied to it.

Attached to the main CLI with ``register(main)``. Heavy layers are imported inside the commands, so
``lakebed --help`` stays fast.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lakebed.cli_output import OutputFormat, emit, format_option
from lakebed.errors import ProjectError

if TYPE_CHECKING:
    from lakebed.pipelines.project_plan import Change
    from lakebed.schemas.project import Project


def register(main: click.Group) -> None:
    """Attach ``init``, ``plan`` and ``apply`` to the ``lakebed`` group."""
    main.add_command(init)
    main.add_command(plan)
    main.add_command(apply)


# init ------------------------------------------------------------------------------------------------
@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--example", type=click.Choice(["shop"]), help="Copy an example project instead.")
def init(directory: Path, example: str | None) -> None:
    """Make DIRECTORY a lakebed project: lakebed.toml, sources/, contracts/, feature_views/, a Dagster
    definitions.py and a .gitignore. With --example, a copy of that example project (data included).
    Refuses a non-empty folder that is not already that project; safe to run again on it."""
    from lakebed.scaffold import init_project, project_name

    root = directory.expanduser().resolve()
    made = init_project(root, example)
    if made:
        click.echo(f"{root}: lakebed project {project_name(root)!r} ({made} file(s) written)")
    else:
        click.echo(f"{root}: already lakebed project {project_name(root)!r}, nothing to write")
    click.echo(f"next: cd {shlex.quote(str(directory))} && lakebed plan", err=True)


# plan and apply --------------------------------------------------------------------------------------
_STYLES = {"action": {"create": "green", "update": "yellow", "refuse": "bold red", "unchanged": "dim"}}


def current_project() -> Project:
    """The project the command runs in (``--project``, ``LAKEBED_PROJECT`` or the nearest lakebed.toml)."""
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

    project = current_project()
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

    project = current_project()
    config = get_config()
    done = apply_plan(make_plan(project, config), config)
    _emit(done, fmt, f"applied to the lake of project {project.name} ({config.home})")
    click.echo(f"apply: {len(done)} change(s) applied" if done else "apply: nothing to do", err=True)


__all__ = ["apply", "init", "plan", "register"]
