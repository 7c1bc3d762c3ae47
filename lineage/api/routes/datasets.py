"""``/api/v1/namespaces/{namespace}/datasets``: datasets and their versions (the Delta versions), each
version with the run that created it.

The more specific routes come first: a name may hold slashes (see :mod:`lakebed.lineage.api.params`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from lakebed.errors import LineageNotFoundError
from lakebed.lineage.api import marquez
from lakebed.lineage.api.models import Dataset, DatasetList, DatasetVersion, DatasetVersionList
from lakebed.lineage.api.params import Page, page
from lakebed.lineage.api.routes.responses import API
from lakebed.lineage.api.state import Store

router = APIRouter(prefix="/api/v1/namespaces/{namespace:segment}/datasets", tags=["Datasets"], responses=API)

Namespace = Annotated[str, Path(description="The namespace, e.g. `file`, percent-encoded.")]
Name = Annotated[str, Path(description="The dataset name, percent-encoded (`%2F` for `/`).")]
Paging = Annotated[Page, Depends(page)]


@router.get(
    "/{dataset:name}/versions/{version:segment}",
    operation_id="getDatasetVersion",
    summary="Retrieve one version of a dataset",
)
def get_dataset_version(
    store: Store,
    namespace: Namespace,
    dataset: Name,
    version: Annotated[str, Path(description="The dataset version (the Delta version).")],
) -> DatasetVersion:
    rows = [row for row in store.dataset_versions(namespace, dataset) if row["version"] == version]
    if not rows:
        raise LineageNotFoundError(
            f"no version {version!r} of dataset {namespace}:{dataset} in the lineage store"
        )
    return marquez.dataset_versions(store, namespace, dataset, rows[:1])[0]


@router.get(
    "/{dataset:name}/versions",
    operation_id="getDatasetVersions",
    summary="List the versions of a dataset, newest first, each with the run that created it",
)
def get_dataset_versions(
    store: Store, namespace: Namespace, dataset: Name, paging: Paging
) -> DatasetVersionList:
    rows, total = paging.of(store.dataset_versions(namespace, dataset))
    return DatasetVersionList(
        totalCount=total, versions=marquez.dataset_versions(store, namespace, dataset, rows)
    )


@router.get("/{dataset:name}", operation_id="getDataset", summary="Retrieve a dataset")
def get_dataset(store: Store, namespace: Namespace, dataset: Name) -> Dataset:
    row = marquez.dataset_row(store, namespace, dataset)
    return marquez.datasets(store, namespace, [row])[0]


@router.get("", operation_id="getDatasets", summary="List the datasets of a namespace")
def get_datasets(store: Store, namespace: Namespace, paging: Paging) -> DatasetList:
    marquez.known_namespace(store, namespace)
    rows, total = paging.of(store.datasets(namespace))
    return DatasetList(totalCount=total, datasets=marquez.datasets(store, namespace, rows))
