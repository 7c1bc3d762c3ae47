"""The store behind the API, and the dependency that hands it to a route.

Requests use the store one at a time, each after a refresh (cheap when no event arrived: it loads new
lines of the event file into the store's own Delta table, never a change to lineage), so an answer is
built from one consistent state. The lock is held while the route runs and its answer is serialised;
drawings are rendered after it is released (see :class:`.routes.lakebed.Drawing`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from lakebed.lineage.store import LineageStore


@dataclass
class LineageState:
    store: LineageStore
    lock: anyio.Lock = field(default_factory=anyio.Lock)


def lineage_state(request: Request) -> LineageState:
    state = request.app.state.lineage
    if not isinstance(state, LineageState):
        raise TypeError("the app has no lineage store (build it with create_app)")
    return state


async def refreshed_store(request: Request) -> AsyncIterator[LineageStore]:
    """The store, refreshed and held for this request alone."""
    state = lineage_state(request)
    async with state.lock:
        await run_in_threadpool(state.store.refresh)
        yield state.store


Store = Annotated[LineageStore, Depends(refreshed_store, scope="function")]

__all__ = ["LineageState", "Store", "lineage_state", "refreshed_store"]
