"""What an embedding table records of its vectors, in the metadata of every commit that writes them.

``lakebed.embedding`` holds a JSON :class:`EmbeddingSpec`: the vector column, the text and key columns a
search returns, and the embedder (name, dimension, weights digest, token limit). The spec of a table
*version* is the one of the newest commit at or below it that carries one, so a pinned version always
names the embedder its vectors came from, whatever was written since. Any writer of vectors (an embed step,
a feature view with an embedding column) makes its table searchable by recording one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from deltalake import DeltaTable

from lakebed.errors import EmbedderMismatchError, EmbeddingDimensionError
from lakebed.pipelines.embeddings.embedder import EmbedderInfo

METADATA_KEY = "lakebed.embedding"


@dataclass(frozen=True)
class EmbeddingSpec:
    """An embedding column, what a search returns beside it, and the embedder that made it."""

    column: str
    embedder: EmbedderInfo
    keys: tuple[str, ...]
    text_column: str | None = None
    chunking: dict[str, Any] = field(default_factory=dict)  # size, overlap, unit (an embed step's)
    source: str | None = None  # the table the texts came from

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    def to_json(self) -> str:
        return json.dumps(
            {
                "column": self.column,
                "embedder": self.embedder.to_dict(),
                "keys": list(self.keys),
                "text_column": self.text_column,
                "chunking": self.chunking,
                "source": self.source,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> EmbeddingSpec:
        raw = json.loads(text)
        return cls(
            column=raw["column"],
            embedder=EmbedderInfo(**raw["embedder"]),
            keys=tuple(raw["keys"]),
            text_column=raw.get("text_column"),
            chunking=dict(raw.get("chunking") or {}),
            source=raw.get("source"),
        )

    def check_embedder(self, table: str, given: EmbedderInfo) -> None:
        """Refuse ``given`` when it could not make vectors comparable with this table's."""
        if given.dimension != self.dimension:
            raise EmbeddingDimensionError(
                f"table {table!r} column {self.column!r} holds {self.dimension}-dimensional vectors of "
                f"embedder {self.embedder.name!r}; embedder {given.name!r} makes {given.dimension} dimensions",
                table=table,
                column=self.column,
                expected=self.dimension,
                got=given.dimension,
            )
        if (given.name, given.weights_digest) != (self.embedder.name, self.embedder.weights_digest):
            raise EmbedderMismatchError(
                f"table {table!r} column {self.column!r} was embedded by {self.embedder.name!r} "
                f"({self.embedder.weights_digest}), not {given.name!r} ({given.weights_digest}): embed into "
                "a new table"
            )


def read_spec(table: DeltaTable) -> EmbeddingSpec | None:
    """The spec of ``table`` at its loaded version (None when no commit up to it recorded one)."""
    loaded = table.version()
    for entry in table.history():
        if int(entry.get("version", -1)) <= loaded and METADATA_KEY in entry:
            return EmbeddingSpec.from_json(entry[METADATA_KEY])
    return None
