"""The feature server: online features over HTTP for models at inference, on FastAPI and uvicorn.

* ``POST /get-online-features``: Feast's request and response (see :mod:`.models`).
* ``POST /search``: the ``k`` rows of an embedding table nearest a text or vector, at a pinned version
  or the latest (``FeatureStore.search``).
* ``GET /feature-views``: every registered view version, its features and how fresh its online rows are.
* ``GET /health``: alive; ``GET /ready``: the lake home, broker and object store reachable (else ``503``);
  ``GET /metrics``: Prometheus metrics (:mod:`lakebed.probes`).

Every request needs ``Authorization: Bearer <token>`` when ``LAKEBED_FEATURE_SERVER_TOKEN`` is set
(compared in constant time); without a token the server binds a loopback address only. Errors are JSON
``{"error": ..., "status": ...}``: ``400`` (a query vector of the wrong dimension, naming the expected
one), ``401`` (no or a wrong token), ``404`` (an unknown feature, view or table, named), ``413`` (a body
over 16 MiB), ``422`` (a malformed body; ``detail`` lists each problem), ``500`` (logged, never shown).

Reads are primary-key lookups in the embedded online store, microseconds each: the route runs them on the
event loop rather than paying a thread hop per request. Several worker processes (``workers``) each open
the store themselves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import SecretStr, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from lakebed.access import Gate, Principal, flushing, forbidden_message
from lakebed.config import LakebedConfig, get_config
from lakebed.errors import (
    AccessDeniedError,
    EntityRowsError,
    FeatureViewNotFoundError,
    QueryDimensionError,
    SearchError,
    SearchQueryError,
    TableNotFoundError,
    UnknownFeatureError,
)
from lakebed.feature_store import FeatureStore
from lakebed.http import (
    Error,
    NotedStatus,
    bearer_openapi,
    check_binding,
    error_body,
    error_response,
    internal_error,
    invalid_request,
    not_found,
    secret_value,
    server_options,
)
from lakebed.metrics import prepare_multiprocess
from lakebed.pipelines.table_metrics import table_registry
from lakebed.probes import RouteTimer, instrument
from lakebed.schemas.access import Action
from lakebed.serving import models as m
from lakebed.serving.wire import feast_references, online_response, views_of
from lakebed.version import __version__

log = logging.getLogger("lakebed.serving")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6566  # Feast's feature server's default port
REALM = "lakebed-features"
TOKEN_VARIABLE = "LAKEBED_FEATURE_SERVER_TOKEN"
ONLINE_PATH = "/get-online-features"
ONLINE: Action = "read_features_online"
MAX_BODY = 16 * 1024 * 1024
"""Bytes of the largest online request body (a larger one is answered ``413``)."""
BEARER_DESCRIPTION = f"A token of the project's access.yaml, or {TOKEN_VARIABLE}; required when configured."
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "No or a wrong bearer token."},
    403: {"model": Error, "description": "The token's role may not do this (names the action)."},
    404: {"model": Error, "description": "An unknown feature or feature view (named)."},
    422: {"model": Error, "description": "A malformed body; `detail` lists each problem."},
}


class FeatureServer(FastAPI):
    """The app. Every request meets the gate first (``/openapi.json`` included): who it is (``401``
    without a valid token) and, per route, whether its role may (``403`` naming the action otherwise);
    every answered request goes to the access log. Then a valid ``POST /get-online-features`` is answered
    directly, without FastAPI's routing, middleware and dependency machinery (which cost several times
    the read itself). The route declared on the app gives the same answers and the OpenAPI document; a
    body that does not validate is handed on to it, which answers ``422`` with FastAPI's account of each
    problem."""

    store: FeatureStore
    gate: Gate
    timer = RouteTimer("features", ONLINE_PATH, "POST")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        who = self.gate.identify(scope)
        if not isinstance(who, Principal):
            self.gate.record(scope, None, None, None, allowed=False, status=401)
            await who(scope, receive, send)
            return
        if scope["path"] == ONLINE_PATH and scope["method"] == "POST":
            body = await _read_body(receive)
            if body is None:
                self.gate.record(scope, who, ONLINE, None, allowed=True, status=413)
                await _send_answer(send, 413, error_body(413, f"the body is larger than {MAX_BODY} bytes"))
                return
            try:
                request = m.OnlineFeaturesRequest.model_validate_json(body)
            except ValidationError:
                receive = _replay(body)
            else:
                status, payload, views = _answer(self.store, request, self.gate, who)
                self.gate.record(scope, who, ONLINE, views, allowed=status != 403, status=status)
                await _send_answer(send, status, payload)
                self.timer.observe(status, started)
                return
        # Other routes decide on their action themselves (:func:`_authorise`) and note it in the state.
        decision: dict[str, Any] = {}
        scope["state"] = {**scope.get("state", {}), "principal": who, "access": decision}
        noted = NotedStatus(send)
        try:
            await super().__call__(scope, receive, noted)
        finally:
            allowed = decision.get("allowed", True)
            self.gate.record(
                scope,
                who,
                decision.get("action"),
                decision.get("resource"),
                allowed=allowed,
                status=noted.status,
            )

    def openapi(self) -> dict[str, Any]:
        return bearer_openapi(self, BEARER_DESCRIPTION)


async def _read_body(receive: Receive) -> bytes | None:
    """The request's body; None once it passes :data:`MAX_BODY` bytes."""
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send_answer(send: Send, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _answer(
    store: FeatureStore, body: m.OnlineFeaturesRequest, gate: Gate, who: Principal
) -> tuple[int, bytes, str | None]:
    """The status and JSON bytes of the answer to a valid online request, and the view versions it
    names (``403`` when the role may not read one of them online; a failure nobody foresaw is logged
    with its traceback and answered ``500``, never shown)."""
    views: str | None = None
    try:
        if body.feature_service is not None:
            raise EntityRowsError(
                f"feature services are not supported (got {body.feature_service!r}): list the features"
            )
        references = feast_references(tuple(body.features))
        named = views_of(tuple(references))
        views = ",".join(named)
        for key in named:
            if not gate.allows(who, ONLINE, key, key.partition(":")[0]):
                return 403, error_body(403, forbidden_message(who, ONLINE, key)), views
        vectors = store.get_online_vectors(references, body.entities)
        return 200, online_response(vectors, body.entities, full_names=body.full_feature_names), views
    except (EntityRowsError, UnknownFeatureError, FeatureViewNotFoundError) as exc:
        status = 422 if isinstance(exc, EntityRowsError) else 404
        return status, error_body(status, str(exc)), views
    except Exception:
        log.exception("feature server: POST %s failed", ONLINE_PATH)
        return 500, error_body(500, "internal error; the server log has the details"), views


def _authorise(request: Request, action: Action, resource: str, *aliases: str) -> None:
    """Raise :class:`AccessDeniedError` (``403``) unless the request's role may do ``action`` on
    ``resource``; the decision goes to the access log."""
    who: Principal = request.state.principal
    allowed = request.app.gate.allows(who, action, resource, *aliases)
    request.state.access.update(action=action, resource=resource, allowed=allowed)
    if not allowed:
        raise AccessDeniedError(forbidden_message(who, action, resource))


def create_app(
    config: LakebedConfig | None = None,
    *,
    token: str | SecretStr | None = None,
    store: FeatureStore | None = None,
    gate: Gate | None = None,
) -> FeatureServer:
    """The feature server over ``store`` (default: a :class:`FeatureStore` of ``config``).

    ``gate`` identifies requests and decides what their roles may do (:mod:`lakebed.access`); by default
    one of the single ``token`` (default: the config's ``feature_server_token``), acting as an engineer.
    Binding is :func:`serve`'s business."""
    config = config or (store.config if store is not None else get_config())
    app = FeatureServer(
        title="lakebed feature server",
        version=__version__,
        summary="Online features for models, in Feast's wire format.",
        description=(__doc__ or "").strip(),
        docs_url=None,
        redoc_url=None,
        lifespan=_warm,
    )
    app.store = store or FeatureStore(config)

    @app.post(
        ONLINE_PATH,
        response_model=m.OnlineFeaturesResponse,
        responses=ERRORS,
        tags=["Features"],
        summary="The latest feature values of some entities (Feast's request and response).",
    )
    async def get_online_features(request: Request, body: m.OnlineFeaturesRequest) -> Response:
        status, payload, views = _answer(app.store, body, app.gate, request.state.principal)
        request.state.access.update(action=ONLINE, resource=views, allowed=status != 403)
        return Response(payload, status_code=status, media_type="application/json")

    @app.post(
        "/search",
        response_model=m.SearchResponse,
        tags=["Search"],
        summary="The k rows of an embedding table nearest a text or a vector.",
        responses={
            400: {
                "model": Error,
                "description": "A query vector of the wrong dimension (names the expected one).",
            },
            **ERRORS,
        },
    )
    def search(request: Request, body: m.SearchRequest) -> Response:
        # A plain function: FastAPI runs it on a worker thread, since an exact search over a large table,
        # or the first load of a version and its index, takes longer than the event loop should wait.
        base = body.table.removesuffix("__chunks")
        _authorise(request, "search", body.table, base if base != body.table else f"{base}__chunks")
        found = app.store.search(
            body.table,
            body.query,
            body.k,
            filter=body.filter,
            version=body.version,
            as_of=body.as_of,
            exact=body.exact,
        )
        meta = found.schema.metadata or {}
        answer = {
            "table": meta[b"lakebed.table"].decode(),
            "version": int(meta[b"lakebed.version"]),
            "search": meta[b"lakebed.search"].decode(),
            "embedder": orjson.loads(meta[b"lakebed.embedder"]),
            "results": found.to_pylist(),
        }
        return Response(
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    @app.get("/feature-views", response_model=m.FeatureViews, tags=["Features"], responses={401: ERRORS[401]})
    def feature_views(request: Request) -> m.FeatureViews:
        """The view versions the role may read online."""
        who: Principal = request.state.principal
        request.state.access.update(action=ONLINE, resource="*")
        readable = [v for v in app.store.list_feature_views() if app.gate.allows(who, ONLINE, v.key, v.name)]
        return m.FeatureViews(feature_views=[_view_info(app.store, v) for v in readable])

    @app.get("/health", response_model=m.Health, tags=["Meta"], responses={401: ERRORS[401]})
    async def health() -> m.Health:
        return m.Health(version=__version__)

    instrument(
        app,
        server="features",
        config=lambda: app.store.config,
        collectors=table_registry(lambda: app.store.config, ("freshness",)),
    )
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(FeatureViewNotFoundError, not_found)
    app.add_exception_handler(TableNotFoundError, not_found)
    app.add_exception_handler(AccessDeniedError, _forbidden)
    app.add_exception_handler(SearchError, _search_refused)
    app.add_exception_handler(Exception, internal_error)
    app.gate = gate or Gate(realm=REALM, token=resolve_token(config, token))
    return app


@contextlib.asynccontextmanager
async def _warm(app: FastAPI) -> AsyncIterator[None]:
    """Before the first request: load the online read path and open the store, then move everything
    loaded so far out of the garbage collector's reach (``gc.freeze``). Requests allocate a few dozen
    short-lived objects each; without the freeze every so often a full collection would walk the
    hundreds of thousands of objects of the loaded libraries, a pause of tens of milliseconds."""
    server = app if isinstance(app, FeatureServer) else None
    if server is not None:
        server.store.warm()
    gc.collect()
    gc.freeze()
    async with flushing(server.gate.access_log if server is not None else None):
        yield


def _view_info(store: FeatureStore, view: Any) -> m.FeatureViewInfo:
    online = store.online_store
    table = view.offline_table
    known = table in online.views() if hasattr(online, "views") else False
    latest = online.latest_feature_ts(table) if known else None
    return m.FeatureViewInfo(
        name=view.name,
        version=view.version,
        entities=list(view.entities),
        features=[
            m.FeatureInfo(
                name=a.name,
                reference=f"{view.key}:{a.name}",
                function=a.function,
                column=a.column,
                window=_duration(a.window),
            )
            for a in view.aggregations
        ],
        hop=_duration(view.hop),
        ttl=_duration(view.ttl),
        source_table=view.source.table,
        source_topic=view.source.topic,
        description=view.description,
        online_rows=online.count(table) if known and hasattr(online, "count") else None,
        latest_feature_ts=latest,
    )


def _duration(value: dt.timedelta) -> str:
    from lakebed.schemas.features import format_duration

    return format_duration(value)


def resolve_token(config: LakebedConfig, token: str | SecretStr | None) -> str | None:
    """The token to require: ``token``, else the config's; None when neither is set (or blank)."""
    return secret_value(token if token is not None else config.feature_server_token)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):
        return await internal_error(request, exc)
    message = (
        f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404 else exc.detail
    )
    return error_response(exc.status_code, message, exc.headers)


async def _search_refused(request: Request, exc: Exception) -> JSONResponse:
    """A wrong query dimension is ``400`` (naming the expected one); another bad request (``k``, an empty
    query, an unknown filter column) ``422``; a table without embeddings ``404``."""
    if isinstance(exc, QueryDimensionError):
        return error_response(400, str(exc))
    return error_response(422 if isinstance(exc, SearchQueryError) else 404, str(exc))


async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    return error_response(403, str(exc))


def app_from_environment() -> FeatureServer:
    """The app of the process's config and project: what each uvicorn worker process builds."""
    from lakebed.pipelines.access_log import server_gate

    config = get_config()
    return create_app(config, gate=server_gate(config, realm=REALM, token=resolve_token(config, None)))


def serve(
    config: LakebedConfig | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    token: str | SecretStr | None = None,
    request_log: bool = False,
) -> None:
    """Serve the feature server with uvicorn until interrupted (Ctrl-C or SIGTERM); ``workers`` > 1 runs
    that many processes on the one port, each with its own connection to the online store and its own
    access log writer. Who may do what comes from the project's ``access.yaml`` (and the single
    ``token``, default ``LAKEBED_FEATURE_SERVER_TOKEN``). ``request_log`` is uvicorn's log line per
    request (off by default: at thousands of requests a second it would cost more than the reads; the
    access log keeps every request anyway)."""
    import uvicorn

    from lakebed.pipelines.access_log import server_gate

    config = config or get_config()
    secret = resolve_token(config, token)
    options = server_options(host, port, access_log=request_log)
    if workers > 1:
        prepare_multiprocess(config)  # before the workers start: each writes its metrics there
        # Workers are fresh processes: they find the config, the project and the token in the environment.
        gate = server_gate(config, realm=REALM, token=secret, log=False)
        check_binding(host, gate.required, service="the feature server", variable=TOKEN_VARIABLE)
        if secret is not None:
            os.environ[TOKEN_VARIABLE] = secret
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)
    else:
        gate = server_gate(config, realm=REALM, token=secret)
        check_binding(host, gate.required, service="the feature server", variable=TOKEN_VARIABLE)
        uvicorn.run(create_app(config, gate=gate), **options)


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "FeatureServer", "create_app", "serve"]
