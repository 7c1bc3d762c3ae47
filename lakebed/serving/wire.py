"""Feast's wire format: references as Feast writes them, and the JSON of ``OnlineFeaturesResponse``.

The answer is serialised here, not through the response model (whose schema it follows; a test checks
each answer against the OpenAPI document): validating every value again would cost more than the read.
Values are JSON as Feast sends them: numbers, strings, booleans, lists; bytes in base64; instants in
RFC 3339 (UTC, ``Z``); a float NaN or infinity, which JSON cannot hold, is ``null`` (as orjson writes it). ``event_timestamps`` have Feast's adaptive precision (none, 3 or 6 fractional digits).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import functools
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from lakebed.errors import EntityRowsError, LakebedError
from lakebed.pipelines.features.online_read import OnlineVectors
from lakebed.schemas.features import FeatureRef

_FEAST_VERSIONED = re.compile(r"^(?P<view>[^:@]+)@v(?P<version>\d+):(?P<feature>.+)$")
_EPOCH_STAMP = "1970-01-01T00:00:00Z"
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY


@functools.lru_cache(maxsize=1024)
def feast_references(references: tuple[str, ...]) -> list[str]:
    """:func:`feast_reference` of each (requests repeat the same lists: worked out once per list)."""
    return [feast_reference(r) for r in references]


@functools.lru_cache(maxsize=1024)
def views_of(references: tuple[str, ...]) -> tuple[str, ...]:
    """The view versions (``view:vN``) ``view:vN:feature`` references name, in first-use order; a
    reference of another form names none (reading it fails with a clear error anyway)."""
    found = []
    for reference in references:
        try:
            parsed = FeatureRef.parse(reference)
        except LakebedError:
            continue
        found.append(f"{parsed.view}:v{parsed.version}")
    return tuple(dict.fromkeys(found))


def feast_reference(reference: str) -> str:
    """``view@vN:feature`` (Feast's versioned reference) → ``view:vN:feature``; anything else unchanged."""
    match = _FEAST_VERSIONED.match(reference)
    if match is None:
        return reference
    return f"{match['view']}:v{match['version']}:{match['feature']}"


_STAMPS: dict[int, str] = {}
"""Stamps already written: stored rows sit at hop ends, so a server sees few distinct ones."""


def rfc3339(epoch_us: int | None) -> str:
    """Microseconds since the epoch as Feast writes a timestamp: ``...:SSZ``, ``.mmmZ`` or ``.uuuuuuZ``."""
    if not epoch_us:
        return _EPOCH_STAMP
    text = _STAMPS.get(epoch_us)
    if text is None:
        if len(_STAMPS) >= 65_536:
            _STAMPS.clear()
        text = _STAMPS[epoch_us] = _format(epoch_us)
    return text


def _format(epoch_us: int) -> str:
    seconds, micros = divmod(epoch_us, 1_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if micros == 0:
        return base + "Z"
    if micros % 1_000 == 0:
        return f"{base}.{micros // 1_000:03d}Z"
    return f"{base}.{micros:06d}Z"


def _json_value(value: Any) -> Any:
    """JSON for the values orjson has no form of (instants, dates, numbers and lists it writes itself)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"a feature value of type {type(value).__name__} has no JSON form")


def online_response(
    vectors: OnlineVectors, entities: Mapping[str, Sequence[Any]], *, full_names: bool
) -> bytes:
    """The JSON bytes of Feast's ``OnlineFeaturesResponse`` for ``vectors``: the entity key columns as
    sent, then each feature (``<view>__<feature>`` with ``full_names``, else the feature's own name; a
    name two views share is an error then, as in Feast)."""
    names = list(vectors.columns if full_names else vectors.features)
    if not full_names and len(set(names)) < len(names):
        shared = sorted({n for n in names if names.count(n) > 1})
        raise EntityRowsError(
            f"features {shared} are named alike in several views: ask with full_feature_names=true"
        )
    results: list[dict[str, Any]] = []
    for values in entities.values():
        results.append(
            {
                "values": list(values),
                "statuses": ["PRESENT"] * len(values),
                "event_timestamps": [_EPOCH_STAMP] * len(values),
            }
        )
    written: dict[int, list[str]] = {}  # the features of one view share one list of stamps: written once
    for values, statuses, stamps in zip(vectors.values, vectors.statuses, vectors.feature_ts, strict=True):
        texts = written.get(id(stamps))
        if texts is None:
            texts = written[id(stamps)] = [rfc3339(s) for s in stamps]
        results.append({"values": values, "statuses": statuses, "event_timestamps": texts})
    body = {"metadata": {"feature_names": [*entities, *names]}, "results": results}
    return orjson.dumps(body, default=_json_value, option=_OPTIONS)


__all__ = ["feast_reference", "feast_references", "online_response", "rfc3339", "views_of"]
