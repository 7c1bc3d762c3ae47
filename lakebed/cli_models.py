"""``lakebed run``: build a project's models (docs/models.md) in dependency order, from the CLI.

Attached to the main CLI with ``register(main)``; heavy layers are imported inside the command.
"""

from __future__ import annotations

import click

from lakebed.cli_output import OutputFormat, emit, format_option, progress_bar

RESULT_COLUMNS = ("model", "status", "rows", "version", "reason")
_STYLES = {"status": {"rebuilt": "green", "incremental": "cyan", "up_to_date": "dim"}}


def register(main: click.Group) -> None:
    main.add_command(run_models)


@click.command("run")
@click.option(
    "--select",
    "selection",
    default=None,
    help="Models to run, dbt-style: NAME, +NAME (with what it reads), NAME+ (with what reads it), "
    "+NAME+, tag:T; several separated by spaces. Default: all.",
)
@click.option(
    "--full-refresh", is_flag=True, help="Rebuild incremental and merge models from all their input rows."
)
@format_option
def run_models(selection: str | None, full_refresh: bool, fmt: OutputFormat) -> None:
    """Build the project's models in dependency order: each model's SELECT over its inputs, written through
    the write path (contract, quality rules, lineage). A model whose code and inputs are unchanged is up to
    date and skipped. Stops at the first model that fails (exit 1, its table untouched), naming it."""
    from lakebed.cli_project import current_project
    from lakebed.config import get_config
    from lakebed.errors import ModelError
    from lakebed.pipelines.models.run import ModelResult, run_model
    from lakebed.pipelines.models.select import select_models

    project = current_project()
    names = select_models(project, selection)
    config = get_config()
    results: list[ModelResult] = []
    progress = progress_bar()
    failure: Exception | None = None
    with progress:
        task = progress.add_task("models", total=len(names))
        for name in names:
            progress.update(task, description=f"model {name}")
            try:
                results.append(run_model(project, name, full_refresh=full_refresh, config=config))
            except Exception as exc:  # reported below with the model's name, after what did run
                failure = exc
                break
            progress.advance(task)
    emit(
        (r.as_dict() for r in results),
        RESULT_COLUMNS,
        fmt,
        title=f"models of project {project.name}",
        styles=_STYLES,
    )
    if failure is not None:
        left = names[len(results) + 1 :]
        after = f"; not run: {', '.join(left)}" if left else ""
        raise ModelError(f"model {names[len(results)]!r} failed: {failure}{after}") from failure
    built = sum(r.status != "up_to_date" for r in results)
    click.echo(f"run: {built} model(s) built, {len(results) - built} up to date", err=True)


__all__ = ["register", "run_models"]
