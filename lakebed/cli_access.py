"""Access commands of the ``lakebed`` CLI: ``access roles``, ``access token create``, ``access log``."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lakebed.cli_output import OutputFormat, emit, emit_arrow, format_option

if TYPE_CHECKING:
    from lakebed.schemas.access import AccessPolicy


@click.group()
def access() -> None:
    """Roles, tokens and the access log of the project's servers (access.yaml)."""


def _policy() -> tuple[AccessPolicy, Path | None]:
    """The project's policy (the defaults without an access.yaml) and its file."""
    from lakebed.config import find_project
    from lakebed.schemas.access import AccessPolicy, find_access, load_access

    root = find_project()
    path = find_access(root)
    return (load_access(path) if path is not None else AccessPolicy()), path


@access.command("roles")
@format_option
def roles(fmt: OutputFormat) -> None:
    """Every role (the defaults engineer, model and auditor, and the project's own) with what it may do,
    and the tokens of the project's access.yaml by name (never their hashes)."""
    policy, _ = _policy()
    rows = [
        {
            "role": name,
            "actions": ", ".join(grant.actions),
            "resources": ", ".join(grant.resources),
            "tokens": ", ".join(t.name for t in policy.tokens if t.role == name),
        }
        for name, role in policy.all_roles.items()
        for grant in (role.allow or ())
    ]
    emit(rows, ["role", "actions", "resources", "tokens"], fmt)


@access.group("token")
def token() -> None:
    """Tokens of the project's servers."""


@token.command("create")
@click.argument("name")
@click.option("--role", required=True, help="engineer, model, auditor or a role of access.yaml.")
def create_token(name: str, role: str) -> None:
    """Make a new random token for NAME acting as ROLE: prints the token once (give it to its user) and
    the access.yaml entry holding only its SHA-256."""
    from lakebed.access import token_digest
    from lakebed.schemas.access import ACCESS_FILE

    policy, path = _policy()
    if role not in policy.all_roles:
        raise click.BadParameter(
            f"unknown role {role!r}; roles are {sorted(policy.all_roles)}", param_hint="--role"
        )
    if any(t.name == name for t in policy.tokens):
        raise click.BadParameter(f"{path} already has a token named {name!r}", param_hint="NAME")
    value = secrets.token_urlsafe(32)
    click.echo(value)
    click.echo(
        f"# Add to {path or ACCESS_FILE} under `tokens:` (the token itself is not stored anywhere):\n"
        f"  - {{name: {name}, role: {role}, sha256: {token_digest(value)}}}",
        err=True,
    )


@access.command("log")
@click.option("--limit", "-n", type=int, default=50, show_default=True, help="Newest N requests.")
@click.option("--denied", is_flag=True, help="Only requests that were refused (401, 403).")
@format_option
def show_log(limit: int, denied: bool, fmt: OutputFormat) -> None:
    """The requests the project's servers answered, newest first: who, role, action, resource, allowed or
    denied, status (the access_log table; query it with `lakebed sql` too)."""
    from lakebed.pipelines.access_log import ACCESS_LOG
    from lakebed.pipelines.catalog import Catalog
    from lakebed.pipelines.read import sql

    if Catalog().find(ACCESS_LOG) is None:
        click.echo("no request answered yet (no access_log table)", err=True)
        emit([], ["requested_at"], fmt)
        return
    where = "WHERE NOT allowed" if denied else ""
    query = (
        "SELECT requested_at, server, principal, role, action, resource, allowed, status, method, path "
        f"FROM {ACCESS_LOG} {where} ORDER BY requested_at DESC LIMIT {int(limit)}"
    )
    emit_arrow(sql(query), fmt)
