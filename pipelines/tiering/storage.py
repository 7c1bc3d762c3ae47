"""Where a table's tiers are, and the tier state kept in their Delta application transactions."""

from __future__ import annotations

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

from lakebed.config import LakebedConfig
from lakebed.errors import TierError
from lakebed.pipelines.catalog import TableEntry
from lakebed.schemas.tiering import TierPolicy


def cold_uri(table: str, config: LakebedConfig) -> str:
    return f"{config.cold_uri.rstrip('/')}/{table}"


def storage_options(uri: str, config: LakebedConfig) -> dict[str, str] | None:
    """delta-rs storage options for ``uri`` (the AWS_* settings for ``s3://``; none for local paths)."""
    return config.s3.to_storage_options() if uri.startswith("s3://") else None


def policy_of(entry: TableEntry) -> TierPolicy | None:
    return entry.contract.tiering if entry.contract is not None else None


def app_id(name: str, table: str) -> str:
    """The application id of the tier state ``name`` of ``table`` (``tier-op:<table>``, ...)."""
    return f"{name}:{table}"


def txn(table: DeltaTable, name: str, tiered: str) -> int | None:
    """The tier state ``name`` of the tiered table ``tiered`` as of ``table``'s loaded version."""
    return table.transaction_version(app_id(name, tiered))


def in_flight(hot: DeltaTable, table: str) -> bool:
    """Whether a move or recall was started and not finished, as of ``hot``'s loaded version."""
    return (txn(hot, "tier-op", table) or 0) != (txn(hot, "tier-done", table) or 0)


def open_table(uri: str, config: LakebedConfig, version: int | None = None) -> DeltaTable | None:
    """The Delta table at ``uri`` (None when there is none); a :class:`TierError` naming the store (never
    its secrets) when it cannot be reached."""
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options(uri, config))
    except DeltaTableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:  # an unreachable store, a missing bucket, wrong credentials
        raise TierError(f"cannot open the cold tier {where(uri)}: {scrub(str(exc), config)}") from exc


def table_exists(uri: str, config: LakebedConfig) -> bool:
    """Whether a Delta table exists at ``uri`` (False when the store cannot be reached)."""
    try:
        return open_table(uri, config) is not None
    except TierError:
        return False


def where(uri: str) -> str:
    """``uri`` as error messages name it (with the bucket first for ``s3://``)."""
    return uri if not uri.startswith("s3://") else f"s3://{uri[5:].split('/', 1)[0]} ({uri})"


def scrub(text: str, config: LakebedConfig) -> str:
    """``text`` (an error from a store) without the configuration's secrets, shortened."""
    from lakebed.lineage.events import scrub as scrub_secrets

    return scrub_secrets(text, config.secret_values())[:500]
