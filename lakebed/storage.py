"""Where a Delta table's files are, and how Arrow opens them. At the bottom of the layers, so the write
path, the readers and the lineage store open tables the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from urllib.request import url2pathname

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    """The folder of a local table from its URI: a path, or a ``file://`` URL (percent-decoded)."""
    return Path(url2pathname(urlsplit(uri).path)) if uri.startswith("file://") else Path(uri)


def arrow_dataset(table: DeltaTable, schema: pa.Schema | None = None) -> ds.Dataset:
    """``table`` at its loaded version as a pyarrow dataset. A local table's files are opened by Arrow's
    own local filesystem rather than delta-rs' Python filesystem handler (``DeltaStorageHandler``, the
    default of ``to_pyarrow_dataset``): an Arrow worker thread that releases a Python-backed file after a
    scan needs the GIL, and when that happens while the interpreter finalizes, the thread is unwound
    through a C++ destructor and the process aborts (docs/design.md, "Clean exits")."""
    import pyarrow.fs as pafs

    uri = table.table_uri
    if not is_local(uri):
        return table.to_pyarrow_dataset(schema=schema)
    filesystem = pafs.SubTreeFileSystem(str(local_path(uri)), pafs.LocalFileSystem())
    return table.to_pyarrow_dataset(schema=schema, filesystem=filesystem)
