"""``lakebed.FeatureStore``: the public Python API for models.

A thin layer over :mod:`lakebed.pipelines.features.retrieval`, ``.training`` and ``.online_read``::

    from lakebed import FeatureStore

    store = FeatureStore()
    train = store.get_historical_features(labels, features=["orders:v1:amount_sum_1h"])
    manifest = store.create_training_set(labels, ["orders:v1:amount_sum_1h"], name="churn-2025-06")
    again = store.training_set(manifest)  # identical rows, whatever was written since
    live = store.get_online_features(["orders:v1:amount_sum_1h"], {"customer_id": 42})
    row = store.get_online_feature_dict(["orders:v1:amount_sum_1h"], {"customer_id": 42})  # plain dict
    hits = store.search("documents", "how do returns work?", k=3)  # nearest chunks, best first

Feature references are ``view:vN:feature``; output columns are the entity rows' columns followed by one
``<view>__<feature>`` column per requested feature (see the retrieval module for the exact semantics).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lakebed.config import LakebedConfig, get_config
from lakebed.metrics import ONLINE_LOOKUPS

if TYPE_CHECKING:
    import pyarrow as pa

    from lakebed.pipelines.embeddings.search import SearcherCache
    from lakebed.pipelines.features.online_read import OnlinePlan, OnlineVectors
    from lakebed.pipelines.features.retrieval import ViewPlan
    from lakebed.pipelines.features.training import TrainingSetManifest
    from lakebed.schemas.features import FeatureView


class FeatureStore:
    """Point-in-time training data, online feature reads and reproducible training sets.

    ``config`` defaults to the process config (``lakebed.toml`` / ``LAKEBED_*``). ``online_store`` is any
    object implementing the ``OnlineStore`` protocol; by default the embedded SQLite store under the
    lakebed home, opened on first use.
    """

    def __init__(self, config: LakebedConfig | None = None, *, online_store: Any = None) -> None:
        self.config = config or get_config()
        self._online_store = online_store
        self._lock = threading.Lock()
        # View versions are immutable (a changed definition needs a new version), so their resolution is
        # cached per feature list: online reads then skip the registry entirely. ``_online`` holds the
        # same plans prepared for online reads (tables, keys, ttl, output columns, checked layouts).
        self._plans: dict[tuple[str, ...], list[ViewPlan]] = {}
        self._online: dict[tuple[str, ...], OnlinePlan] = {}
        self._online_read_module: ModuleType | None = None
        self._searchers: SearcherCache | None = None

    def __repr__(self) -> str:
        return f"FeatureStore(home={str(self.config.home)!r})"

    # Offline -----------------------------------------------------------------------------------------
    def get_historical_features(
        self,
        entity_rows: Any,
        features: Sequence[str],
        *,
        timestamp_column: str | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> pa.Table:
        """For each entity row ``(keys, ts)``, the feature row with the greatest ``feature_ts <= ts``
        and ``feature_ts > ts - ttl`` (else nulls). Every row, in input order; ``versions`` pins offline
        tables' Delta versions (``{"view:vN": version}``)."""
        from lakebed.pipelines.features import retrieval

        return retrieval.get_historical_features(
            entity_rows,
            features,
            timestamp_column=timestamp_column or retrieval.ENTITY_TIMESTAMP,
            versions=versions,
            config=self.config,
        )

    # Online ------------------------------------------------------------------------------------------
    @property
    def online_store(self) -> Any:
        if self._online_store is None:
            with self._lock:
                if self._online_store is None:
                    from lakebed.pipelines.features.online import default_online_store

                    self._online_store = default_online_store(self.config)
        return self._online_store

    def get_online_features(
        self, features: Sequence[str], entity_rows: Any, *, now: dt.datetime | None = None
    ) -> pa.Table:
        """The latest values of ``features`` for ``entity_rows`` (a table, DataFrame, ``{"key": [...]}``
        or a single ``{"key": value}``), in input order; values older than the view's ttl are null."""
        started = time.perf_counter()
        table = self._online_read().get_online_features(
            features,
            entity_rows,
            store=self.online_store,
            config=self.config,
            now=now,
            plans=self._online_plan(features),
        )
        ONLINE_LOOKUPS.observe(time.perf_counter() - started)
        return table

    def get_online_feature_dict(
        self, features: Sequence[str], entity: Mapping[str, Any], *, now: dt.datetime | None = None
    ) -> dict[str, Any]:
        """The latest values of ``features`` for one entity (``{"key": value, ...}``) as a plain dict:
        the entity's values, then one ``<view>__<feature>`` value per feature, None where the store has
        no row or the row is older than the view's ttl at ``now``. The same values as
        ``get_online_features(features, entity).to_pylist()[0]``, without building Arrow data: the
        lowest-latency read for serving a single prediction."""
        started = time.perf_counter()
        row = self._online_read().get_online_feature_dict(
            features,
            entity,
            store=self.online_store,
            config=self.config,
            now=now,
            plans=self._online_plan(features),
        )
        ONLINE_LOOKUPS.observe(time.perf_counter() - started)
        return row

    def get_online_vectors(
        self,
        features: Sequence[str],
        entities: Mapping[str, Sequence[Any]],
        *,
        now: dt.datetime | None = None,
    ) -> OnlineVectors:
        """The latest values of ``features`` for the entities ``{"key": [v1, v2, ...]}``, one column per
        feature with a status (``PRESENT``, ``NULL_VALUE``, ``NOT_FOUND``, ``OUTSIDE_MAX_AGE``) and the
        stored ``feature_ts`` of each value: what the feature server answers. The same values as
        :meth:`get_online_features`."""
        started = time.perf_counter()
        vectors = self._online_read().read_online_vectors(
            self._online_plan(features), entities, store=self.online_store, now=now
        )
        ONLINE_LOOKUPS.observe(time.perf_counter() - started)
        return vectors

    def warm(self) -> None:
        """Load the online read path and open the online store now, so that the first read is as fast as
        the others (a server calls this before it answers): also the registry reads that resolve a
        request's first feature list (they pull in pyarrow.dataset and pandas, about a second)."""
        from lakebed.pipelines.features import retrieval  # noqa: F401 - loaded for the first request

        self._online_read()
        _ = self.online_store

    def _online_read(self) -> ModuleType:
        # Imported on first use (it pulls in pyarrow, numpy, pydantic), then kept: an import statement
        # per online read would cost as much as a tenth of the read.
        if self._online_read_module is None:
            from lakebed.pipelines.features import online_read

            self._online_read_module = online_read
        return self._online_read_module

    def _online_plan(self, features: Sequence[str]) -> OnlinePlan:
        key = (features,) if isinstance(features, str) else tuple(features)
        online = self._online.get(key)
        if online is None:
            online = self._online_read().OnlinePlan(self._resolve(key))
            with self._lock:
                if len(self._online) > 256:
                    self._online.clear()
                self._online[key] = online
        return online

    def _resolve(self, features: Sequence[str]) -> list[ViewPlan]:
        key = (features,) if isinstance(features, str) else tuple(features)
        plans = self._plans.get(key)
        if plans is None:
            from lakebed.pipelines.features.retrieval import resolve_features

            plans = resolve_features(list(key), config=self.config)
            with self._lock:
                if len(self._plans) > 256:
                    self._plans.clear()
                self._plans[key] = plans
        return plans

    # Training sets -----------------------------------------------------------------------------------
    def create_training_set(
        self,
        entity_rows: Any,
        features: Sequence[str],
        *,
        name: str,
        timestamp_column: str | None = None,
        overwrite: bool = False,
    ) -> TrainingSetManifest:
        """Record a training set (entity rows' Parquet copy and hash, view versions, Delta versions) under
        ``HOME/training_sets/<name>/``; rebuild it with :meth:`training_set`."""
        from lakebed.pipelines.features.retrieval import ENTITY_TIMESTAMP
        from lakebed.pipelines.features.training import create_training_set

        return create_training_set(
            entity_rows,
            features,
            name=name,
            timestamp_column=timestamp_column or ENTITY_TIMESTAMP,
            overwrite=overwrite,
            config=self.config,
        )

    def training_set(self, manifest: TrainingSetManifest | str | os.PathLike[str]) -> pa.Table:
        """The rows of a training set, rebuilt exactly from its manifest (object, JSON path, folder or
        name)."""
        from lakebed.pipelines.features.training import training_set

        return training_set(manifest, config=self.config)

    # Similarity search -------------------------------------------------------------------------------
    def search(
        self,
        table_or_view: str,
        query: Any,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - the name users expect
        version: int | None = None,
        as_of: dt.datetime | str | None = None,
        exact: bool = False,
    ) -> pa.Table:
        """The ``k`` rows of an embedding table nearest ``query`` (a vector, or a text embedded with the
        table's recorded embedder), best first: the table's key columns, its text, ``score`` (cosine
        similarity) and ``distance``. A documents table name means its ``<name>__chunks`` table.

        ``version``/``as_of`` pin the Delta version (reproducible retrieval for training); ``exact=True``
        or a ``filter`` (``{"column": value}`` or ``{"column": [values]}``) searches exactly, otherwise the
        version's HNSW index answers (rebuilt from Delta when missing or corrupt). ``k`` is 1 to
        ``lakebed.pipelines.embeddings.search.MAX_K`` (1000). Raises ``SearchQueryError`` (bad ``k``,
        query or filter), ``QueryDimensionError`` (wrong vector dimension, names the expected one),
        ``TableNotFoundError`` and ``SearchError`` (a table without embeddings)."""
        from lakebed.pipelines.embeddings.search import SearcherCache, check_k

        check_k(k)
        if self._searchers is None:
            with self._lock:
                if self._searchers is None:
                    self._searchers = SearcherCache(self.config)
        searcher = self._searchers.get(table_or_view, version=version, as_of=as_of)
        return searcher.search(query, k, filter=filter, exact=exact)

    # Registry ----------------------------------------------------------------------------------------
    def list_feature_views(self) -> list[FeatureView]:
        """Every registered feature view version, by name then version."""
        from lakebed.pipelines.features import registry

        return [entry.view for entry in registry.list_views(config=self.config)]

    def get_feature_view(self, name: str, version: int) -> FeatureView:
        """The registered definition of ``name`` version ``version`` (a clear error if unknown)."""
        from lakebed.pipelines.features import registry

        return registry.get(name, version, config=self.config)


__all__ = ["FeatureStore"]
