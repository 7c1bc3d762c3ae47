"""``/api/v1/namespaces``: Marquez's namespaces (job namespaces and dataset namespaces alike)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from lakebed.lineage.api import marquez
from lakebed.lineage.api.models import Namespace, NamespaceList
from lakebed.lineage.api.params import Page, page
from lakebed.lineage.api.routes.responses import API
from lakebed.lineage.api.state import Store

router = APIRouter(prefix="/api/v1/namespaces", tags=["Namespaces"], responses=API)


@router.get("", operation_id="getNamespaces", summary="List namespaces")
def get_namespaces(store: Store, paging: Annotated[Page, Depends(page)]) -> NamespaceList:
    names, total = paging.of(store.namespaces())
    return NamespaceList(namespaces=[marquez.namespace_model(store, ns) for ns in names], totalCount=total)


@router.get("/{namespace:segment}", operation_id="getNamespace", summary="Retrieve a namespace")
def get_namespace(store: Store, namespace: str) -> Namespace:
    marquez.known_namespace(store, namespace)
    return marquez.namespace_model(store, namespace)
