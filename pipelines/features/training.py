"""Reproducible training sets: :func:`create_training_set` stores a copy of the entity rows under
``HOME/training_sets/<name>/`` with a :class:`TrainingSetManifest` recording the feature references, the
definition hash of every view version and the Delta version of every offline table read, and
:func:`training_set` rebuilds exactly the same rows from it with the point-in-time join of
:mod:`lakebed.pipelines.features.retrieval`, after checking the stored rows against their canonical hash
(:func:`entity_hash`: sha256 of an Arrow IPC stream of the rows in a form a Parquet round trip preserves).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from lakebed.config import LakebedConfig, get_config
from lakebed.errors import TrainingSetError, TrainingSetIntegrityError
from lakebed.lineage.events import file_dataset
from lakebed.lineage.runs import lineage_run
from lakebed.pipelines.delta import RunContext
from lakebed.pipelines.features.retrieval import (
    ENTITY_TIMESTAMP,
    as_arrow,
    check_columns,
    epoch_us,
    join_features,
    open_offline,
    plain_type,
    resolve_features,
)

MANIFEST_FILE = "manifest.json"
ENTITIES_FILE = "entities.parquet"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ViewPin(BaseModel):
    """One view version of a training set, read at one Delta version of its offline table."""

    model_config = ConfigDict(extra="allow", frozen=True)

    table: str
    delta_version: int
    definition_hash: str | None = None
    """The view version's definition hash when the set was created (checked on rebuild)."""


class TrainingSetManifest(BaseModel):
    """What rebuilds a training set exactly: features, pinned table versions and the entity rows' hash."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    features: list[str]
    views: dict[str, ViewPin]
    entity_hash: str = Field(description="sha256 (hex) of the canonical Arrow IPC stream of the entity rows")
    entity_rows: str = Field(description="Path of the Parquet copy of the entity rows")
    entity_row_count: int
    timestamp_column: str = ENTITY_TIMESTAMP
    created_at: dt.datetime
    lakebed_version: str | None = None
    manifest_version: int = 1

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def training_set_dir(name: str, config: LakebedConfig | None = None) -> Path:
    if not _NAME.fullmatch(name):
        raise TrainingSetError(
            f"invalid training set name {name!r}: use letters, digits, '_', '-' or '.' (at most 128)"
        )
    return (config or get_config()).home / "training_sets" / name


def create_training_set(
    entity_rows: Any,
    features: Sequence[str],
    *,
    name: str,
    timestamp_column: str = ENTITY_TIMESTAMP,
    overwrite: bool = False,
    config: LakebedConfig | None = None,
) -> TrainingSetManifest:
    """Record a reproducible training set: the entity rows (a Parquet copy and their hash), the feature
    references, and the Delta version of every offline table read. Writes
    ``HOME/training_sets/<name>/entities.parquet`` and ``manifest.json`` beside it.
    Rebuild the rows with :func:`training_set`."""
    import pyarrow.parquet as pq

    from lakebed.version import __version__

    config = config or get_config()
    folder = training_set_dir(name, config)
    manifest_path = folder / MANIFEST_FILE
    if manifest_path.exists() and not overwrite:
        raise TrainingSetError(
            f"training set {name!r} already exists ({manifest_path}); choose another name or overwrite=True"
        )
    # A lineage run: the offline tables at the versions pinned in, the training set out.
    with lineage_run(RunContext(job=f"training_set:{name}"), config=config) as lineage:
        entities = as_arrow(entity_rows)
        plans = resolve_features(features, config=config, reserved=entities.column_names)
        check_columns(entities, plans, timestamp_column)
        epoch_us(entities.column(timestamp_column), timestamp_column)  # type check before writing anything
        pins = {}
        for plan in plans:
            table = open_offline(plan, None, config)
            pins[plan.key] = ViewPin(
                table=plan.table, delta_version=table.version(), definition_hash=plan.spec.definition_hash()
            )
        digest = entity_hash(entities)

        folder.mkdir(parents=True, exist_ok=True)
        entities_path = folder / ENTITIES_FILE
        partial = folder / f".{ENTITIES_FILE}.{os.getpid()}.tmp"
        pq.write_table(entities, partial, compression="zstd")
        stored = pq.read_table(partial)
        if entity_hash(stored) != digest:
            partial.unlink(missing_ok=True)
            raise TrainingSetError(
                f"the entity rows of training set {name!r} do not survive a Parquet round trip unchanged "
                f"(schema {entities.schema}); convert unusual column types first"
            )
        partial.replace(entities_path)
        manifest = TrainingSetManifest(
            name=name,
            features=list(features),
            views=pins,
            entity_hash=digest,
            entity_rows=str(entities_path),
            entity_row_count=entities.num_rows,
            timestamp_column=timestamp_column,
            created_at=dt.datetime.now(dt.UTC),
            lakebed_version=__version__,
        )
        partial_manifest = folder / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
        partial_manifest.write_text(manifest.to_json())
        partial_manifest.replace(manifest_path)
        lineage.add_output(file_dataset(folder, sha256=digest, rows=entities.num_rows))
    return manifest


def load_manifest(
    source: TrainingSetManifest | str | os.PathLike[str], *, config: LakebedConfig | None = None
) -> tuple[TrainingSetManifest, Path]:
    """A manifest and the folder it lives in, from a manifest, its JSON file, its folder or its name."""
    config = config or get_config()
    if isinstance(source, TrainingSetManifest):
        path = Path(source.entity_rows)
        folder = path.parent if path.exists() else training_set_dir(source.name, config)
        return source, folder
    path = Path(source)
    if not path.exists() and isinstance(source, str) and _NAME.fullmatch(source):
        path = training_set_dir(source, config)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise TrainingSetError(f"no training set manifest at {str(source)!r}")
    try:
        manifest = TrainingSetManifest.model_validate_json(path.read_text())
    except ValueError as exc:
        raise TrainingSetError(f"invalid training set manifest {path}: {exc}") from exc
    return manifest, path.parent


def training_set(
    manifest: TrainingSetManifest | str | os.PathLike[str], *, config: LakebedConfig | None = None
) -> pa.Table:
    """Rebuild a training set: the stored entity rows (hash verified) joined point-in-time with each
    offline table read at the Delta version recorded in the manifest. Identical rows every time."""
    import pyarrow.parquet as pq

    config = config or get_config()
    manifest, folder = load_manifest(manifest, config=config)
    path = Path(manifest.entity_rows)
    if not path.exists():
        path = folder / ENTITIES_FILE
    if not path.exists():
        raise TrainingSetError(f"the entity rows of training set {manifest.name!r} are missing ({path})")
    entities = pq.read_table(path)
    digest = entity_hash(entities)
    if digest != manifest.entity_hash:
        raise TrainingSetIntegrityError(
            f"the entity rows of training set {manifest.name!r} ({path}) have changed: sha256 {digest} "
            f"but the manifest records {manifest.entity_hash}"
        )
    plans = resolve_features(manifest.features, config=config, reserved=entities.column_names)
    missing = [p.key for p in plans if p.key not in manifest.views]
    if missing:
        raise TrainingSetError(f"training set {manifest.name!r}: manifest pins no Delta version of {missing}")
    tables = {}
    for plan in plans:
        pin = manifest.views[plan.key]
        if pin.table != plan.table:
            raise TrainingSetError(
                f"training set {manifest.name!r}: view {plan.key} was read from table {pin.table!r} "
                f"but now lives in {plan.table!r}"
            )
        if pin.definition_hash and pin.definition_hash != plan.spec.definition_hash():
            raise TrainingSetError(
                f"training set {manifest.name!r}: feature view {plan.key} is registered with a different "
                f"definition than when the set was created (hash {plan.spec.definition_hash()[:12]}, "
                f"recorded {pin.definition_hash[:12]})"
            )
        tables[plan.key] = open_offline(plan, pin.delta_version, config)
    check_columns(entities, plans, manifest.timestamp_column)
    return join_features(entities, plans, tables, manifest.timestamp_column)


# Canonical hash of entity rows ----------------------------------------------------------------------
class _HashSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


_HASH_CHUNK_ROWS = 65_536


def canonical_entities(table: pa.Table) -> pa.Table:
    """The canonical form hashed for training sets.

    Same column names and order, metadata dropped, types made plain where a Parquet round trip may change
    them (dictionaries decoded; large/view strings and binaries plain; second and millisecond timestamps
    as microseconds; time32 as time64[us]; date64 as date32), and every column null-free: a column with
    nulls becomes its values with nulls filled by the type's zero plus a ``<name>\\x00valid`` uint8
    column, so bytes under null slots and bitmap padding, which Arrow leaves unspecified, never reach
    the hash.
    """
    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        kind = array.type
        if pa.types.is_dictionary(kind):
            array = array.dictionary_decode()
            kind = array.type
        plain = _canonical_type(kind)
        if plain != kind:
            array = array.cast(plain)
        if pa.types.is_boolean(plain):
            array = array.cast(pa.uint8())
        if array.null_count:
            valid = array.is_valid().cast(pa.uint8())
            array = _zero_filled(array)
            fields.append(pa.field(name, array.type))
            arrays.append(array)
            fields.append(pa.field(name + "\x00valid", pa.uint8()))
            arrays.append(valid)
        else:
            fields.append(pa.field(name, array.type))
            arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _canonical_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind) and kind.unit in ("s", "ms"):
        return pa.timestamp("us", tz=kind.tz)
    if pa.types.is_time32(kind):
        return pa.time64("us")
    if pa.types.is_date64(kind):
        return pa.date32()
    return plain_type(kind)


_INT_OF_WIDTH = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}


def _zero_filled(array: pa.Array) -> pa.Array:
    """``array`` with its null slots holding the type's zero (and no validity bitmap)."""
    kind = array.type
    if pa.types.is_string(kind):
        return pc.fill_null(array, pa.scalar("", kind))
    if pa.types.is_binary(kind):
        return pc.fill_null(array, pa.scalar(b"", kind))
    if pa.types.is_fixed_size_binary(kind):
        return pc.fill_null(array, pa.scalar(b"\x00" * kind.byte_width, kind))
    if pa.types.is_decimal(kind):
        return pc.fill_null(array, pa.scalar(decimal.Decimal(0)).cast(kind))
    width = kind.bit_width if pa.types.is_primitive(kind) else None
    if width in _INT_OF_WIDTH:
        storage = _INT_OF_WIDTH[width]
        return pc.fill_null(array.view(storage), pa.scalar(0, storage)).view(kind)
    return array  # nested types: Arrow's own representation


def entity_hash(table: pa.Table) -> str:
    """sha256 (hex) of the Arrow IPC stream of :func:`canonical_entities` in 65,536-row batches."""
    canonical = canonical_entities(table)
    sink = _HashSink()
    stream = pa.PythonFile(sink, mode="w")
    options = pa.ipc.IpcWriteOptions(compression=None)
    with pa.ipc.new_stream(stream, canonical.schema, options=options) as writer:
        for batch in canonical.to_batches(max_chunksize=_HASH_CHUNK_ROWS):
            writer.write_batch(batch)
    return sink.digest.hexdigest()


__all__ = [
    "TrainingSetManifest",
    "ViewPin",
    "canonical_entities",
    "create_training_set",
    "entity_hash",
    "load_manifest",
    "training_set",
    "training_set_dir",
]
