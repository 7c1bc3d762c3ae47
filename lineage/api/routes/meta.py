"""``/``: where the API description is."""

from __future__ import annotations

from fastapi import APIRouter, Request

from lakebed.lineage.api.models import Index
from lakebed.lineage.api.routes.responses import ALWAYS
from lakebed.version import __version__

router = APIRouter(tags=["Meta"], responses=ALWAYS)


@router.get("/", operation_id="getIndex", summary="Where the API description is")
def get_index(request: Request) -> Index:
    return Index(
        name="lakebed lineage API",
        version=__version__,
        openapi="/openapi.json",
        endpoints=sorted(request.app.openapi()["paths"]),
    )
