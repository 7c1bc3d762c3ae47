"""The catalog of lakebed tables: name → URI, kind and contract.

The catalog is itself a small Delta table under the lakebed home. It is written directly with
deltalake (it is lakebed's own bookkeeping, not user data), so registering a table never recurses into
the write path.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TableNotFoundError
from lakebed.schemas.contract import TableContract
from lakebed.schemas.naming import validate_table_name
from lakebed.storage import arrow_dataset

_CATALOG_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("contract", pa.string()),
        pa.field("registered_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

TABLE_KINDS = ("table", "rejects", "system")

# Parsed catalog entries by catalog URI, with the catalog version they were read at.
_ENTRIES: dict[str, tuple[int, dict[str, TableEntry]]] = {}
# The open catalog table per URI with the identity of its first commit file: every commit looks tables up
# here, and opening a Delta table replays its log (≈ 10 ms for a catalog of 40 commits) where bringing an
# open one up to date lists only the newer commits (≈ 1.5 ms). A catalog removed and created again (a
# fresh home at the same path) has a new first commit file, so it is opened afresh.
_OPEN: dict[str, tuple[tuple[int, int], DeltaTable]] = {}
_OPEN_LOCK = threading.RLock()


@dataclass(frozen=True)
class TableEntry:
    """One catalog entry."""

    name: str
    uri: str
    kind: str
    contract: TableContract | None
    registered_at: dt.datetime


class Catalog:
    """Where every lakebed table lives. Thread-safe; cheap to construct."""

    _lock = threading.Lock()

    def __init__(self, config: LakebedConfig | None = None) -> None:
        self.config = config or get_config()
        self.uri = str(self.config.system_root / "catalog")

    def default_uri(self, name: str, *, kind: str = "table") -> str:
        root = self.config.system_root if kind == "system" else self.config.tables_root
        return str(Path(root) / validate_table_name(name))

    def _table(self) -> DeltaTable | None:
        """The catalog table at its latest version (None before the first registration)."""
        try:
            first = (Path(self.uri) / "_delta_log" / f"{0:020d}.json").stat()
        except FileNotFoundError:
            first = None
        with _OPEN_LOCK:
            cached = _OPEN.get(self.uri)
            identity = (first.st_ino, first.st_mtime_ns) if first is not None else None
            if cached is not None and cached[0] == identity:
                cached[1].update_incremental()
                return cached[1]
            try:
                table = DeltaTable(self.uri)
            except DeltaTableNotFoundError:
                return None
            if identity is not None:  # (a log cleaned up to a checkpoint has no first commit: not cached)
                _OPEN[self.uri] = (identity, table)
            return table

    def _load(self) -> dict[str, TableEntry]:
        # The open table is shared by every thread: it is read under the lock it is updated under.
        with _OPEN_LOCK:
            table = self._table()
            if table is None:
                return {}
            # Entries are parsed once per catalog version (every commit looks its table up here).
            version = table.version()
            cached = _ENTRIES.get(self.uri)
            if cached is not None and cached[0] == version:
                return cached[1]
            rows = arrow_dataset(table).to_table().to_pylist()
        entries = {
            row["name"]: TableEntry(
                name=row["name"],
                uri=row["uri"],
                kind=row["kind"],
                contract=TableContract.model_validate_json(row["contract"]) if row["contract"] else None,
                registered_at=row["registered_at"],
            )
            for row in rows
        }
        _ENTRIES[self.uri] = (version, entries)
        return entries

    def list(self, *, kind: str | None = None) -> list[TableEntry]:
        entries = sorted(self._load().values(), key=lambda e: e.name)
        return [e for e in entries if kind is None or e.kind == kind]

    def get(self, name: str) -> TableEntry:
        validate_table_name(name)
        entry = self._load().get(name)
        if entry is None:
            known = ", ".join(e.name for e in self.list()) or "none yet"
            raise TableNotFoundError(f"no lakebed table named {name!r} (known tables: {known})")
        return entry

    def find(self, name: str) -> TableEntry | None:
        return self._load().get(validate_table_name(name))

    def register(
        self,
        name: str,
        *,
        uri: str | None = None,
        kind: str = "table",
        contract: TableContract | None = None,
    ) -> TableEntry:
        """Add a table (or update its contract). Idempotent; safe against concurrent registrations."""
        validate_table_name(name)
        if kind not in TABLE_KINDS:
            raise ValueError(f"kind must be one of {TABLE_KINDS}, not {kind!r}")
        existing = self.find(name)
        if existing is not None and (contract is None or existing.contract == contract):
            return existing
        entry = TableEntry(
            name=name,
            uri=uri or (existing.uri if existing else self.default_uri(name, kind=kind)),
            kind=existing.kind if existing else kind,
            contract=contract if contract is not None else (existing.contract if existing else None),
            registered_at=existing.registered_at if existing else dt.datetime.now(dt.UTC),
        )
        with self._lock:
            self._upsert(entry, new=existing is None)
        return entry

    @retry(
        retry=retry_if_exception_type(CommitFailedError),
        stop=stop_after_attempt(8),
        wait=wait_random_exponential(multiplier=0.05, max=1),
        reraise=True,
    )
    def _upsert(self, entry: TableEntry, *, new: bool) -> None:
        """Write ``entry``: a new name is appended (a third of a merge's cost; the first commit of a local
        table is serialised by its creation lock, and a repeated row of one name reads as one entry), a
        changed contract is merged into its row."""
        row = pa.Table.from_pylist(
            [
                {
                    "name": entry.name,
                    "uri": entry.uri,
                    "kind": entry.kind,
                    "contract": entry.contract.model_dump_json() if entry.contract else None,
                    "registered_at": entry.registered_at,
                }
            ],
            schema=_CATALOG_SCHEMA,
        )
        with _OPEN_LOCK:  # the open table is shared: one thread at a time reads or writes through it
            table = self._table()
            if table is None:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                write_deltalake(self.uri, row, mode="append", name="lakebed_catalog")
                return
            if new:
                write_deltalake(table, row, mode="append")
                return
            (
                table.merge(row, predicate='t."name" = s."name"', source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )

    def drop(self, name: str) -> None:
        """Forget a table (its data stays where it is)."""
        self.get(name)
        DeltaTable(self.uri).delete(f"name = '{name}'")
