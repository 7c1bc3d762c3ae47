"""lakebed's feature server (``lakebed serve features``) and its Python client.

:mod:`.app` is the FastAPI application and ``serve``; :mod:`.models` its request and response bodies;
:mod:`.wire` Feast's JSON; :mod:`.client` :class:`~lakebed.FeatureClient`, which needs neither FastAPI nor
uvicorn.
"""
