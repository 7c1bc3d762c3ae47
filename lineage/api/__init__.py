"""A read-only HTTP API over the lineage store, for auditors and for tools that speak Marquez.

FastAPI and uvicorn; ``serve(store)`` answers on ``http://127.0.0.1:5005``. The routers, one per resource
(:mod:`.routes`): the Marquez-compatible ``/api/v1/namespaces``, ``.../datasets``, ``.../jobs``,
``/api/v1/runs`` and ``/api/v1/lineage``, and lakebed's version-exact and as-of routes under
``/api/v1/lakebed``. The response models (:mod:`.models`) generate the OpenAPI document at
``GET /openapi.json``. The bearer token, the read-only methods and the path rules are :mod:`.guard`'s;
errors and binding are :mod:`.app`'s.
"""

from __future__ import annotations

from lakebed.lineage.api.app import create_app, serve

__all__ = ["create_app", "serve"]
