"""``lakebed.FeatureClient``: :class:`~lakebed.FeatureStore`'s online reads, over HTTP from a feature server::

    from lakebed import FeatureClient

    client = FeatureClient("http://features.internal:6566", token=os.environ["FEATURES_TOKEN"])
    row = client.get_online_feature_dict(["customer_orders:v1:orders_1d"], {"customer_id": 42})
    table = client.get_online_features(["customer_orders:v1:orders_1d"], {"customer_id": [7, 42]})

Answers have the columns :meth:`FeatureStore.get_online_features` gives (the entity keys, then one
``<view>__<feature>`` column per feature, null where the row is missing or older than the view's ttl);
column types are those of the JSON values (integers as int64, decimals as float64, instants as strings).
One keep-alive connection per thread; a request on a connection the server closed is retried once.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from lakebed.errors import (
    EntityRowsError,
    FeatureServerError,
    SearchError,
    SearchQueryError,
    UnknownFeatureError,
)

_RETRIED = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    http.client.CannotSendRequest,
)


class FeatureClient:
    """A client of ``lakebed serve features`` at ``url`` (``http://host:port``), with its bearer ``token``."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FeatureServerError(f"feature server URL must be http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"FeatureClient({self.url!r})"  # never the token

    # Online reads ------------------------------------------------------------------------------------
    def get_online_features(self, features: Sequence[str], entity_rows: Any) -> Any:
        """The latest values of ``features`` for ``entity_rows`` (a table, DataFrame, ``{"key": [...]}``
        or one ``{"key": value}``), in input order, as a pyarrow Table."""
        import pyarrow as pa

        from lakebed.pipelines.features.retrieval import as_arrow

        entities = as_arrow(entity_rows).to_pydict()
        answer = self._online(features, entities)
        names = answer["metadata"]["feature_names"]
        return pa.table(
            {name: result["values"] for name, result in zip(names, answer["results"], strict=True)}
        )

    def get_online_feature_dict(self, features: Sequence[str], entity: Mapping[str, Any]) -> dict[str, Any]:
        """The latest values of ``features`` for one entity ``{"key": value}`` as a plain dict: its keys,
        then one ``<view>__<feature>`` value per feature (None where missing or stale)."""
        answer = self._online(features, {k: [v] for k, v in entity.items()})
        names = answer["metadata"]["feature_names"]
        return {name: result["values"][0] for name, result in zip(names, answer["results"], strict=True)}

    def get_online_response(
        self,
        features: Sequence[str],
        entities: Mapping[str, Sequence[Any]],
        *,
        full_feature_names: bool = True,
    ) -> dict[str, Any]:
        """The server's answer as sent (Feast's ``OnlineFeaturesResponse``: names, values, statuses and
        event timestamps)."""
        return self._online(features, entities, full_feature_names=full_feature_names)

    def _online(
        self,
        features: Sequence[str],
        entities: Mapping[str, Sequence[Any]],
        *,
        full_feature_names: bool = True,
    ) -> dict[str, Any]:
        refs = [features] if isinstance(features, str) else list(features)
        body = {
            "features": refs,
            "entities": {k: list(v) for k, v in entities.items()},
            "full_feature_names": full_feature_names,
        }
        answer: dict[str, Any] = self._request("POST", "/get-online-features", body)
        return answer

    # Search ------------------------------------------------------------------------------------------
    def search(
        self,
        table: str,
        query: str | Sequence[float],
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - the name FeatureStore.search uses
        version: int | None = None,
        as_of: Any = None,
        exact: bool = False,
    ) -> Any:
        """:meth:`FeatureStore.search` over HTTP: the ``k`` rows of ``table`` nearest ``query`` (a text or
        a vector), best first, as a pyarrow Table whose schema metadata names the table and the Delta
        version searched (``lakebed.table``, ``lakebed.version``), as the in-process result's does."""
        import pyarrow as pa

        body: dict[str, Any] = {
            "table": table,
            "query": query if isinstance(query, str) else [float(v) for v in query],
            "k": k,
        }
        if filter is not None:
            body["filter"] = dict(filter)
        if version is not None:
            body["version"] = version
        if as_of is not None:
            body["as_of"] = as_of.isoformat() if hasattr(as_of, "isoformat") else str(as_of)
        if exact:
            body["exact"] = True
        answer = self._request("POST", "/search", body)
        rows = pa.Table.from_pylist(answer["results"])
        return rows.replace_schema_metadata(
            {
                "lakebed.table": answer["table"],
                "lakebed.version": str(answer["version"]),
                "lakebed.search": answer["search"],
                "lakebed.embedder": json.dumps(answer["embedder"], sort_keys=True),
            }
        )

    # Registry and health -----------------------------------------------------------------------------
    def list_feature_views(self) -> list[dict[str, Any]]:
        """Every registered feature view version (name, version, entities, features, freshness)."""
        views: list[dict[str, Any]] = self._request("GET", "/feature-views")["feature_views"]
        return views

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._request("GET", "/health")
        return answer

    # HTTP --------------------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body, default=str).encode("utf-8")
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request(method, self._prefix + path, body=data, headers=self._headers)
                response = connection.getresponse()
                payload = response.read()
                break
            except _RETRIED:
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
            except OSError as exc:
                connection.close()
                self._local.connection = None
                raise FeatureServerError(f"cannot reach the feature server at {self.url}: {exc}") from exc
        if response.status == 200:
            return json.loads(payload)
        raise _error(response.status, payload, path)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error(status: int, payload: bytes, path: str) -> Exception:
    try:
        message = str(json.loads(payload)["error"])
    except (ValueError, KeyError, TypeError):
        message = payload.decode("utf-8", errors="replace")[:500]
    if path == "/search" and status in (400, 404, 422):
        return SearchQueryError(message) if status != 404 else SearchError(message)
    if status == 404:
        return UnknownFeatureError(message)
    if status in (400, 422):
        return EntityRowsError(message)
    return FeatureServerError(f"the feature server answered {status}: {message}", status=status)


__all__ = ["FeatureClient"]
