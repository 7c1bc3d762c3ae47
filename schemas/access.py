"""A project's access policy (``access.yaml``): roles, what each may do, and the tokens that act as them.

```yaml
roles:                        # optional: engineer, model and auditor exist by default (a role given here
  model:                      # replaces the default of that name)
    allow:
      - actions: [read_features_online, search]
        resources: ["customer_*", "documents"]     # name patterns (fnmatch) ...
      - actions: [read_table]
        resources: ["tag:public"]                  # ... or tags of the project's tables
tokens:                       # what `lakebed access token create NAME --role ROLE` prints: never the token
  - {name: churn-model, role: model, sha256: 9f86d081884c7d65...}
```

Deny by default: a request is allowed only when a grant of its role names its action and matches its
resource. Tokens are stored as the SHA-256 of the token (hex), never in clear. Resources are table names
(``read_table``, ``write_table``, ``search``, and the datasets of ``read_lineage``) or feature view
names, matched both as ``view`` and ``view:vN`` (``read_features_online``, ``read_features_offline``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lakebed.errors import ContractError, ProjectError
from lakebed.schemas.loading import problems, read_yaml

ACCESS_FILE = "access.yaml"
Action = Literal[
    "read_table", "write_table", "read_features_online", "read_features_offline", "read_lineage", "search"
]
ACTIONS: tuple[Action, ...] = (
    "read_table",
    "write_table",
    "read_features_online",
    "read_features_offline",
    "read_lineage",
    "search",
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Grant(_Strict):
    """Some actions on the resources matching any of ``resources`` (name patterns, or ``tag:NAME``)."""

    actions: tuple[Action, ...] = Field(min_length=1)
    resources: tuple[str, ...] = ("*",)

    @field_validator("resources")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('name at least one resource pattern ("*" is every resource)')
        blank = [v for v in value if not v.strip() or v.strip() == "tag:"]
        if blank:
            raise ValueError(f"resource patterns must not be empty: {blank}")
        return value

    def matches(self, resource: str, tags: tuple[str, ...] = ()) -> bool:
        for pattern in self.resources:
            if pattern.startswith("tag:"):
                if pattern[4:] in tags:
                    return True
            elif fnmatch.fnmatchcase(resource, pattern):
                return True
        return False


class Role(_Strict):
    description: str | None = None
    allow: tuple[Grant, ...] = ()


class TokenEntry(_Strict):
    """A token, known by the SHA-256 (hex) of its text."""

    name: str = Field(min_length=1)
    role: str
    sha256: str
    description: str | None = None

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _HEX64.match(value):
            raise ValueError(
                "must be the 64 lowercase hex digits of the token's SHA-256, never the token itself"
            )
        return value


DEFAULT_ROLES: Mapping[str, Role] = {
    "engineer": Role(
        description="Builds and runs the lake: every action on every resource.",
        allow=(Grant(actions=ACTIONS),),
    ),
    "model": Role(
        description="Reads features (online and offline) and searches embeddings; no raw tables, no lineage.",
        allow=(Grant(actions=("read_features_online", "read_features_offline", "search")),),
    ),
    "auditor": Role(
        description="Reads the whole lineage graph, read-only; table details stay masked unless granted.",
        allow=(Grant(actions=("read_lineage",)),),
    ),
}


class AccessPolicy(_Strict):
    roles: dict[str, Role] = Field(default_factory=dict)
    tokens: tuple[TokenEntry, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> AccessPolicy:
        roles = self.all_roles
        for index, token in enumerate(self.tokens):
            if token.role not in roles:
                raise ValueError(
                    f"tokens.{index} ({token.name}): unknown role {token.role!r}; roles are {sorted(roles)}"
                )
        for what in ("name", "sha256"):
            seen: dict[str, int] = {}
            for index, token in enumerate(self.tokens):
                value = getattr(token, what)
                if value in seen:
                    raise ValueError(
                        f"tokens.{index} ({token.name}): the same {what} as tokens.{seen[value]}"
                    )
                seen[value] = index
        return self

    @property
    def all_roles(self) -> dict[str, Role]:
        """The default roles, with those this policy defines put in their place or added."""
        return {**DEFAULT_ROLES, **self.roles}

    def allows(
        self, role: str, action: Action, resources: tuple[str, ...], tags: tuple[str, ...] = ()
    ) -> bool:
        """Whether ``role`` may do ``action`` on a resource known by any of the names ``resources``."""
        grants = self.all_roles[role].allow if role in self.all_roles else ()
        return any(action in g.actions and any(g.matches(r, tags) for r in resources) for g in grants)


def load_access(path: str | Path) -> AccessPolicy:
    """The policy in ``path``; a malformed file raises :class:`ProjectError` naming the file and field."""
    try:
        data = read_yaml(path, what="the access policy")
    except ContractError as exc:
        raise ProjectError(str(exc)) from None
    if data is None:
        return AccessPolicy()
    if not isinstance(data, dict):
        raise ProjectError(
            f"{path}: expected a mapping with `roles:` and `tokens:`, got {type(data).__name__}"
        )
    try:
        return AccessPolicy.model_validate(data)
    except ValidationError as exc:
        raise ProjectError(f"{path}: {problems(exc)}") from None


def find_access(project_root: str | Path | None) -> Path | None:
    """The project's ``access.yaml``, if it has one."""
    if project_root is None:
        return None
    path = Path(project_root) / ACCESS_FILE
    return path if path.is_file() else None


__all__ = [
    "ACCESS_FILE",
    "ACTIONS",
    "DEFAULT_ROLES",
    "AccessPolicy",
    "Action",
    "Grant",
    "Role",
    "TokenEntry",
    "find_access",
    "load_access",
]
