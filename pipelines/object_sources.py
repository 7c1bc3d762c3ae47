"""Files sources on an object store: ``s3://bucket/prefix``, one key, or a glob in the last part
(``s3://bucket/exports/*.csv``).

Objects are listed with the configuration's S3 settings. Each new or changed object (by ETag and size) is
downloaded into a local cache, ``<home>/remote/<bucket>/<key>`` (to a temporary name, then renamed; the
ETag and size it was downloaded at are kept in ``<home>/remote/.etags/<bucket>/<key>.json``), and
ingested by :func:`lakebed.pipelines.ingest.ingest_files` as a :class:`NamedFile` under its
``s3://bucket/key`` URL, so the manifest's skip-unchanged logic, rejects and lineage name the object.
"""

from __future__ import annotations

import fnmatch
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lakebed.config import LakebedConfig
from lakebed.errors import InputError, SourceNotFoundError, SourceUnavailableError
from lakebed.lineage.events import scrub
from lakebed.pipelines.formats import supported
from lakebed.pipelines.ingest import NamedFile, remote_cache

SCHEME = "s3://"
_GLOB = "*?["
_REFUSED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "403",
}
_CHUNK = 8 << 20


@dataclass(frozen=True)
class StoredObject:
    """One object a source matches, as listed (no download)."""

    bucket: str
    key: str
    size: int
    etag: str

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"


def is_object_url(path: str) -> bool:
    return path.startswith(SCHEME)


def list_objects(url: str, *, explicit_format: str | None, config: LakebedConfig) -> list[StoredObject]:
    """The objects ``url`` matches, sorted by key: the key itself, the supported files under a prefix
    (hidden parts skipped, as in a folder walk) or the names matching a glob in the last part.

    An empty prefix or glob raises :class:`SourceNotFoundError`, as an empty folder does; a missing bucket
    too. A store that cannot be reached or refuses the credentials raises :class:`SourceUnavailableError`.
    """
    bucket, prefix, pattern = _parse(url)
    listed = _list(bucket, prefix, url, config)
    if pattern is not None:
        matches = [
            o
            for o in listed
            if "/" not in (name := o.key[len(prefix) :])
            and (pattern.startswith(".") or not name.startswith("."))
            and fnmatch.fnmatchcase(name, pattern)
        ]
        if not matches:
            raise SourceNotFoundError("glob matches no objects", path=url)
        return matches
    exact = [o for o in listed if o.key == prefix and not prefix.endswith("/")]
    if exact:
        return exact
    folder = prefix if prefix.endswith("/") or not prefix else prefix + "/"
    matches = [
        o
        for o in listed
        if o.key.startswith(folder)
        and not o.key.endswith("/")  # a "folder" marker
        and not any(part.startswith(".") for part in o.key[len(folder) :].split("/"))
        and (explicit_format is not None or supported(Path(PurePosixPath(o.key).name)))
    ]
    if not matches:
        raise SourceNotFoundError("no CSV, JSON or Parquet objects under this prefix", path=url)
    return matches


def fetch_objects(url: str, *, explicit_format: str | None, config: LakebedConfig) -> list[NamedFile]:
    """The objects ``url`` matches as local copies named by their URLs; only objects whose ETag or size
    changed since the last download are downloaded again."""
    objects = list_objects(url, explicit_format=explicit_format, config=config)
    client = _client(config)
    return [NamedFile(path=_cached(client, o, url, config), name=o.url) for o in objects]


def _parse(url: str) -> tuple[str, str, str | None]:
    """``(bucket, prefix to list, glob of the last part or None)``."""
    bucket, _, key = url[len(SCHEME) :].partition("/")
    if not bucket or any(ch in bucket for ch in _GLOB):
        raise SourceNotFoundError("an s3:// path starts with a bucket name", path=url)
    head, slash, last = key.rpartition("/")
    if any(ch in head for ch in _GLOB):
        raise InputError("a glob may only be in the last part of an s3:// path", path=url)
    if any(ch in last for ch in _GLOB):
        return bucket, head + slash, last
    return bucket, key, None


def _client(config: LakebedConfig) -> Any:
    import boto3
    from botocore.config import Config

    retries = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", config=retries, **config.s3.to_boto3_kwargs())


def _store_failures() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _list(bucket: str, prefix: str, url: str, config: LakebedConfig) -> list[StoredObject]:
    client = _client(config)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = [item for page in pages for item in page.get("Contents", [])]
    except _store_failures() as exc:
        raise _store_error(exc, bucket, url, config) from None
    return sorted(
        (StoredObject(bucket, item["Key"], int(item["Size"]), str(item.get("ETag", ""))) for item in items),
        key=lambda o: o.key,
    )


def _cached(client: Any, obj: StoredObject, url: str, config: LakebedConfig) -> Path:
    """The local copy of ``obj``, downloaded unless the cached copy has its ETag and size."""
    parts = obj.key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InputError("object key cannot be cached as a file (empty, '.' or '..' parts)", path=obj.url)
    root = remote_cache(config)
    target = root.joinpath(obj.bucket, *parts)
    stamp = root.joinpath(".etags", obj.bucket, *parts[:-1], parts[-1] + ".json")
    wanted = {"etag": obj.etag, "size": obj.size}
    if target.is_file() and target.stat().st_size == obj.size and _read_stamp(stamp) == wanted:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        response = client.get_object(Bucket=obj.bucket, Key=obj.key)
        size = 0
        with open(partial, "wb") as handle:
            body = response["Body"]
            while chunk := body.read(_CHUNK):
                handle.write(chunk)
                size += len(chunk)
        os.replace(partial, target)
    except OSError as exc:
        raise InputError(f"cannot write the local copy: {exc.strerror}", path=obj.url) from exc
    except _store_failures() as exc:
        raise _store_error(exc, obj.bucket, url, config, key=obj.key) from None
    finally:
        partial.unlink(missing_ok=True)  # gone already once renamed
    _write_stamp(stamp, {"etag": str(response.get("ETag", obj.etag)), "size": size})
    return target


def _read_stamp(stamp: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_stamp(stamp: Path, value: dict[str, Any]) -> None:
    stamp.parent.mkdir(parents=True, exist_ok=True)
    partial = stamp.with_name(f".{stamp.name}.{uuid.uuid4().hex}.part")
    partial.write_text(json.dumps(value))
    os.replace(partial, stamp)


def _store_error(
    exc: Exception, bucket: str, url: str, config: LakebedConfig, *, key: str | None = None
) -> InputError:
    """A lakebed error for a failed store call, naming the bucket and prefix, never the credentials."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    secrets = [
        s.get_secret_value()
        for s in (config.s3.access_key_id, config.s3.secret_access_key, config.s3.session_token)
        if s is not None
    ]
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            return SourceNotFoundError(f"no such bucket {bucket!r}", path=url)
        if code in ("NoSuchKey", "404") and key is not None:
            return SourceNotFoundError(f"object {key!r} vanished while being read", path=url)
        if code in _REFUSED:
            return SourceUnavailableError(
                f"the object store refused the credentials for bucket {bucket!r} ({code})", path=url
            )
        return SourceUnavailableError(
            scrub(f"the object store answered {code or 'an error'} for bucket {bucket!r}", secrets), path=url
        )
    if isinstance(exc, NoCredentialsError):
        return SourceUnavailableError(
            f"no credentials for bucket {bucket!r}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", path=url
        )
    if isinstance(exc, EndpointConnectionError):
        endpoint = scrub(config.s3.endpoint_url or "the default S3 endpoint", secrets)
        return SourceUnavailableError(
            f"cannot reach the object store at {endpoint} (bucket {bucket!r})", path=url
        )
    return SourceUnavailableError(
        scrub(f"cannot list or read bucket {bucket!r}: {type(exc).__name__}", secrets), path=url
    )
