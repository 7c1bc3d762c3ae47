"""The default embedder: WordLlama (``l2_supercat``, 256 dimensions), from the wheel that ships its weights.

WordLlama is a static embedding model: a text's vector is the mean of its tokens' rows of one embedding
matrix, so it runs on a CPU at thousands of chunks a second. Its wheel holds the weights in
``wordllama/weights`` but the tokenizer in ``wordllama/tokenizers``, beside where its loader looks first
(``wordllama/tokenizer``): the loader is pointed at the installed package folder as its ``cache_dir`` and
downloads are disabled, so a missing file is an error here, never a download.

The model has no hard input limit (it does not truncate); ``max_tokens`` is lakebed's: a mean over much
longer spans blurs what a chunk is about, and a batch pads to its longest text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lakebed.pipelines.embeddings.embedder import Tokens, offsets_tokens, weights_digest

if TYPE_CHECKING:
    import numpy as np

_CONFIG = "l2_supercat"
_DIMENSION = 256


class WordLlamaEmbedder:
    """WordLlama 0.4 ``l2_supercat`` at 256 dimensions, loaded offline from the installed wheel."""

    name = "wordllama"
    dimension = _DIMENSION
    max_tokens = 512

    def __init__(self) -> None:
        import wordllama
        from tokenizers import Tokenizer
        from wordllama import WordLlama

        self.package = Path(wordllama.__file__).resolve().parent
        self.model = WordLlama.load(
            config=_CONFIG, dim=_DIMENSION, cache_dir=self.package, disable_download=True
        )
        # The model's tokenizer pads every batch; chunking wants each document's own tokens, unpadded.
        self._tokenizer = Tokenizer.from_str(self.model.tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    @property
    def weight_files(self) -> tuple[Path, ...]:
        return (
            self.package / "weights" / f"{_CONFIG}_{_DIMENSION}.safetensors",
            self.package / "tokenizers" / f"{_CONFIG}_tokenizer_config.json",
        )

    @property
    def weights_digest(self) -> str:
        return weights_digest(self.weight_files)

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [offsets_tokens(e.ids, e.offsets) for e in encodings]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        vectors = self.model.embed(list(texts), norm=True)
        return np.asarray(vectors, dtype=np.float32)

    def embed_tokens(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        """The mean of each id sequence's embedding rows, normalised: what :meth:`embed` computes after
        tokenizing, without tokenizing again (and without padding)."""
        import numpy as np

        matrix = self.model.embedding
        top = matrix.shape[0] - 1
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for row, sequence in enumerate(ids):
            # One gather and sum per sequence: faster than np.add.reduceat over a batch's gathered rows.
            out[row] = matrix[np.clip(sequence, 0, top)].sum(axis=0) / max(len(sequence), 1)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out
