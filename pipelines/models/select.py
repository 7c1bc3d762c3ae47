"""Choosing models to run with dbt's selection syntax: ``NAME``, ``+NAME`` (with the models it reads,
transitively), ``NAME+`` (with the models that read it), ``+NAME+``, ``tag:T``; several, separated by spaces,
are a union. The result is in dependency order (the project's)."""

from __future__ import annotations

from lakebed.errors import ProjectError
from lakebed.schemas.project import Project


def select_models(project: Project, expression: str | None = None) -> list[str]:
    """The models ``expression`` selects (all of them when None or empty), in dependency order."""
    if not expression or not expression.strip():
        return list(project.models)
    chosen: set[str] = set()
    for token in expression.split():
        chosen |= _token(project, token)
    return [name for name in project.models if name in chosen]


def _token(project: Project, token: str) -> set[str]:
    if token.startswith("tag:"):
        tag = token.removeprefix("tag:")
        tagged = {n for n, m in project.models.items() if tag in m.options.tags}
        if not tagged:
            known = sorted({t for m in project.models.values() for t in m.options.tags})
            raise ProjectError(
                f"--select {token}: no model is tagged {tag!r} (tags: {', '.join(known) or 'none'})"
            )
        return tagged
    up, down = token.startswith("+"), token.endswith("+")
    name = token.strip("+")
    if name not in project.models:
        models = ", ".join(project.models) or "none"
        raise ProjectError(f"--select {token}: no model named {name!r} (models: {models})")
    found = {name}
    if up:
        found |= _closure(project, name, upstream=True)
    if down:
        found |= _closure(project, name, upstream=False)
    return found


def _closure(project: Project, start: str, *, upstream: bool) -> set[str]:
    reads = {n: {t for t in m.inputs if t in project.models} for n, m in project.models.items()}
    edges = reads if upstream else {n: {m for m, r in reads.items() if n in r} for n in reads}
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        for nxt in edges[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen


__all__ = ["select_models"]
