"""The request and response bodies of the feature server, as pydantic models (the OpenAPI document is
generated from them).

``/get-online-features`` takes and answers Feast's JSON (``GetOnlineFeaturesRequest``,
``OnlineFeaturesResponse`` of ``feast.feature_server``), so a client written for Feast's server works
unchanged; references are lakebed's ``view:vN:feature`` (Feast's ``view@vN:feature`` is read the same).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

Status = Literal["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]
EntityValue = int | float | str | bool | None


class OnlineFeaturesRequest(BaseModel):
    """Feast's ``GetOnlineFeaturesRequest``; ``feature_service`` is refused (lakebed names features)."""

    features: list[str] = Field(
        min_length=1, description="Feature references `view:vN:feature` (or Feast's `view@vN:feature`)."
    )
    entities: dict[str, list[EntityValue]] = Field(
        min_length=1, description='Entity key columns of equal length: `{"customer_id": [7, 42]}`.'
    )
    full_feature_names: bool = Field(
        default=False, description="Name features `<view>__<feature>` instead of `<feature>`."
    )
    feature_service: str | None = Field(default=None, description="Not supported: name the features.")
    include_feature_view_version_metadata: bool = Field(
        default=False, description="Accepted for Feast clients; references already carry the version."
    )


class FeatureVector(BaseModel):
    """One column of the answer: an entity key as sent, or a feature's values for every entity."""

    values: list[JsonValue]
    statuses: list[Status]
    event_timestamps: list[str] = Field(
        description="RFC 3339 instants: the stored row's `feature_ts`; `1970-01-01T00:00:00Z` for entity "
        "keys and rows not found (as Feast answers)."
    )


class OnlineFeaturesMetadata(BaseModel):
    feature_names: list[str] = Field(description="The entity key columns, then the features, in order.")


class OnlineFeaturesResponse(BaseModel):
    """Feast's ``OnlineFeaturesResponse``: ``results[i]`` is the column named ``feature_names[i]``."""

    metadata: OnlineFeaturesMetadata
    results: list[FeatureVector]


MAX_K = 1000
"""The largest ``k`` of a search (``lakebed.pipelines.embeddings.search.MAX_K``; a test keeps them equal)."""


class SearchRequest(BaseModel):
    """A similarity search over an embedding table at one Delta version."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(description="An embedding table, or a documents table (then its `<name>__chunks`).")
    query: str | list[float] = Field(
        description="A text (embedded with the embedder the table records) or a vector of its dimension."
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description=f"How many rows, 1 to {MAX_K}.")
    filter: dict[str, EntityValue | list[EntityValue]] | None = Field(
        default=None,
        description='Only rows with these values: `{"column": value}` or `{"column": [values]}`.',
    )
    version: int | None = Field(default=None, ge=0, description="Search this Delta version (reproducible).")
    as_of: dt.datetime | None = Field(default=None, description="Search the version current at this instant.")
    exact: bool = Field(default=False, description="Exact search instead of the approximate (HNSW) index.")


class SearchResponse(BaseModel):
    table: str = Field(description="The embedding table searched.")
    version: int = Field(description="Its Delta version: pass it as `version` to search the same rows again.")
    search: Literal["exact", "approximate"]
    embedder: dict[str, JsonValue] = Field(description="The embedder the table's vectors were made with.")
    results: list[dict[str, JsonValue]] = Field(
        description="Best first: the table's key columns, its text, `score` (cosine) and `distance`."
    )


class FeatureInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    reference: str = Field(description="`view:vN:feature`: what a request names.")
    function: str
    column: str | None
    window: str


class FeatureViewInfo(BaseModel):
    """A registered feature view version."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    entities: list[str]
    features: list[FeatureInfo]
    hop: str
    ttl: str
    source_table: str
    source_topic: str | None
    description: str | None
    online_rows: int | None = Field(description="Entities in the online store (None: not materialised).")
    latest_feature_ts: dt.datetime | None = Field(description="The newest `feature_ts` online.")


class FeatureViews(BaseModel):
    feature_views: list[FeatureViewInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


__all__ = [
    "FeatureInfo",
    "FeatureVector",
    "FeatureViewInfo",
    "FeatureViews",
    "Health",
    "OnlineFeaturesMetadata",
    "OnlineFeaturesRequest",
    "OnlineFeaturesResponse",
    "SearchRequest",
    "SearchResponse",
    "Status",
]
