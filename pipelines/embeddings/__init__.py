"""Embeddings of unstructured text and similarity search over them (docs/embeddings.md).

- :mod:`.embedder`: the ``Embedder`` protocol, the recorded ``EmbedderInfo`` and the registry of
  embedders (``wordllama``, the default; ``all-minilm-l6-v2`` with the sentence-transformers extra);
- :mod:`.chunking`: token windows of a document and their stable ids;
- :mod:`.step`: the embed step, an unstructured table's text into ``<table>__chunks``;
- :mod:`.spec`: what an embedding table records of its vectors (commit metadata);
- :mod:`.search` and :mod:`.index`: exact search over a pinned version, approximate through a cached HNSW
  index rebuilt from Delta.
"""
