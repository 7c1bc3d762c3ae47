"""Chunks: windows of a document's tokens, each with a stable id.

Sizes and overlaps are counted in the **embedder's tokens** (not characters), so a chunk always fits the
embedder's limit: a text longer than ``max_tokens`` is split into overlapping windows, never cut. A chunk's
text is the document's characters from its first token's start to its last token's end.

A chunk's id is a sha256 over the document's ``source_path`` and ``sha256``, the chunking settings (size,
overlap and the embedder's name and weights digest: they decide the tokens) and the chunk's index. Re-ingesting
an unchanged document therefore yields the same ids, and a changed document (or other settings) new ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lakebed.errors import EmbeddingError
from lakebed.pipelines.embeddings.embedder import EmbedderInfo, Tokens

CHUNK_UNIT = "tokens"


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut: ``size`` tokens per chunk, consecutive chunks sharing ``overlap`` tokens."""

    size: int = 256
    overlap: int = 32

    def check(self, embedder: EmbedderInfo) -> None:
        """Refuse settings that could not work: a chunk larger than the embedder takes, an overlap that
        would never advance."""
        if self.size < 1:
            raise EmbeddingError(f"chunk size must be at least 1 token, not {self.size}")
        if not 0 <= self.overlap < self.size:
            raise EmbeddingError(
                f"chunk overlap must be >= 0 and < the size ({self.size}), not {self.overlap}"
            )
        if self.size > embedder.max_tokens:
            raise EmbeddingError(
                f"chunk size {self.size} exceeds embedder {embedder.name!r}'s limit of "
                f"{embedder.max_tokens} tokens"
            )

    def fingerprint(self, embedder: EmbedderInfo) -> str:
        """What decides a document's chunks besides the document: recorded on each chunk row."""
        return f"{CHUNK_UNIT}:{self.size}:{self.overlap}:{embedder.name}:{embedder.weights_digest}"


@dataclass(frozen=True)
class Chunk:
    """One window of a document: its index, character span, text and token span."""

    index: int
    start: int
    end: int
    text: str
    first_token: int
    last_token: int  # exclusive

    @property
    def token_count(self) -> int:
        return self.last_token - self.first_token


def chunk_tokens(text: str, tokens: Tokens, settings: ChunkSettings) -> list[Chunk]:
    """The windows of ``text``: the first ``size`` tokens, then windows starting ``size - overlap`` tokens
    later, the last one ending at the last token (no window lies inside the previous one)."""
    count = len(tokens.ids)
    chunks: list[Chunk] = []
    first = 0
    while first < count:
        last = min(first + settings.size, count)
        start, end = tokens.offsets[first][0], tokens.offsets[last - 1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end], first, last))
        if last == count:
            break
        first = last - settings.overlap
    return chunks


def chunk_id(source_path: str, sha256: str, fingerprint: str, index: int) -> str:
    """The stable id of chunk ``index`` of a document (see the module docstring)."""
    key = "\0".join(("lakebed-chunk-v1", source_path, sha256, fingerprint, str(index)))
    return hashlib.sha256(key.encode()).hexdigest()
