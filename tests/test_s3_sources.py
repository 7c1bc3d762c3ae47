"""Files sources on ``s3://`` prefixes against a real S3 API (moto's server in a child process): objects
listed, downloaded when new or changed, and ingested under their URLs like local files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from s3_fixtures import ACCESS_KEY, REGION, SECRET_KEY, MotoServer

from lakebed.config import LakebedConfig, get_config, reset_config
from lakebed.dagster import definitions
from lakebed.errors import MalformedRecordError, SourceNotFoundError, SourceUnavailableError
from lakebed.lineage.emit import events_path
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.ingest import IngestResult
from lakebed.pipelines.ingest_manifest import MANIFEST_TABLE
from lakebed.pipelines.read import read_table
from lakebed.pipelines.sources import ingest_source, source_files
from lakebed.schemas.project import FilesSource, Project, load_project

pytest_plugins = ["s3_fixtures"]

CONTRACT = """\
name: sales
columns:
  - {name: id, type: int64, nullable: false}
  - {name: amount, type: float64}
"""


@dataclass
class Store:
    server: MotoServer
    bucket: str
    client: Any

    def put(self, key: str, body: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body.encode())

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def _aim(monkeypatch: pytest.MonkeyPatch, endpoint: str, *, secret_key: str = SECRET_KEY) -> LakebedConfig:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    reset_config()
    return get_config()


@pytest.fixture
def store(s3_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    _aim(monkeypatch, s3_server.endpoint)
    yield Store(s3_server, s3_bucket, s3_server.client())


def _project(root: Path, path: str, *, fmt: str | None = None, extra: str = "") -> Project:
    (root / "sources").mkdir(parents=True)
    (root / "contracts").mkdir()
    (root / "lakebed.toml").write_text('[project]\nname = "shop"\n')
    (root / "contracts" / "sales.yaml").write_text(CONTRACT)
    format_line = f"    format: {fmt}\n" if fmt else ""
    (root / "sources" / "sales.yaml").write_text(
        f"sources:\n  - table: sales\n    kind: files\n    path: {path}\n{format_line}"
        "    contract: sales.yaml\n    on_bad_rows: reject\n" + extra
    )
    return load_project(root)


def _source(project: Project) -> FilesSource:
    (source,) = project.sources
    assert isinstance(source, FilesSource)
    return source


def _ingest(project: Project) -> IngestResult:
    result = ingest_source(project, _source(project), config=get_config())
    assert isinstance(result, IngestResult)
    return result


def _rows(config: LakebedConfig) -> list[tuple[str, int, float]]:
    table = read_table("sales", config=config)
    rows = zip(
        table["_source_file"].to_pylist(), table["id"].to_pylist(), table["amount"].to_pylist(), strict=True
    )
    return sorted(rows)


def _manifest(config: LakebedConfig) -> dict[str, dict[str, Any]]:
    entry = Catalog(config).find(MANIFEST_TABLE)
    assert entry is not None
    rows = DeltaTable(entry.uri).to_pyarrow_table().filter(pc.field("table_name") == "sales")
    return {row["path"]: row for row in rows.to_pylist()}


def _lineage_inputs(config: LakebedConfig) -> list[tuple[str, str]]:
    events = [json.loads(line) for line in events_path(config).read_text().splitlines()]
    return sorted(
        (i["namespace"], i["name"]) for e in events if e["eventType"] == "COMPLETE" for i in e["inputs"]
    )


def test_a_prefix_is_ingested_under_the_objects_urls(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n2,2.5\n")
    store.put("exports/b.csv", "id,amount\n3,3.5\n")
    store.put("exports/readme.txt", "not data\n")
    store.put("exports/.hidden/c.csv", "id,amount\n9,9.0\n")
    store.put("exports-old/d.csv", "id,amount\n8,8.0\n")
    project = _project(tmp_path / "shop", store.url("exports/"))
    config = get_config()

    result = _ingest(project)

    a, b = store.url("exports/a.csv"), store.url("exports/b.csv")
    assert [(f.path, f.status) for f in result.files] == [(a, "ingested"), (b, "ingested")]
    assert _rows(config) == [(a, 1, 1.5), (a, 2, 2.5), (b, 3, 3.5)]
    assert set(_manifest(config)) == {a, b}
    assert _lineage_inputs(config) == [
        (f"s3://{store.bucket}", "exports/a.csv"),
        (f"s3://{store.bucket}", "exports/b.csv"),
    ]
    cached = config.home / "remote" / store.bucket / "exports" / "a.csv"
    assert cached.read_text() == "id,amount\n1,1.5\n2,2.5\n"


def test_a_prefix_without_the_slash_is_the_same_folder(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n")
    store.put("exports-old/d.csv", "id,amount\n8,8.0\n")
    project = _project(tmp_path / "shop", store.url("exports"))
    assert [f.name for f in source_files(project, _source(project))] == [store.url("exports/a.csv")]


def test_unchanged_objects_are_skipped_and_a_changed_one_replaced(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n2,2.5\n")
    store.put("exports/b.csv", "id,amount\n3,3.5\n")
    project = _project(tmp_path / "shop", store.url("exports/"))
    config = get_config()
    a, b = store.url("exports/a.csv"), store.url("exports/b.csv")
    _ingest(project)
    cached = config.home / "remote" / store.bucket / "exports" / "b.csv"
    downloaded = cached.stat().st_mtime_ns

    again = _ingest(project)
    assert [(f.path, f.status) for f in again.files] == [(a, "skipped"), (b, "skipped")]
    assert again.rows == 0
    assert cached.stat().st_mtime_ns == downloaded  # not downloaded again
    assert len(_rows(config)) == 3

    store.put("exports/a.csv", "id,amount\n1,10.0\n4,40.0\n5,50.0\n")
    changed = _ingest(project)
    assert [(f.path, f.status) for f in changed.files] == [(a, "replaced"), (b, "skipped")]
    assert _rows(config) == [(a, 1, 10.0), (a, 4, 40.0), (a, 5, 50.0), (b, 3, 3.5)]
    assert _manifest(config)[a]["rows"] == 3
    assert cached.stat().st_mtime_ns == downloaded


def test_a_bad_record_is_rejected_naming_the_object(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\nnot-a-number,2.5\n3,3.5\n")
    project = _project(tmp_path / "shop", store.url("exports/"))
    config = get_config()

    result = _ingest(project)

    a = store.url("exports/a.csv")
    assert result.rejected == 1
    assert _rows(config) == [(a, 1, 1.5), (a, 3, 3.5)]
    rejects = read_table("sales__rejects", config=config)
    assert rejects["source_path"].to_pylist() == [a]
    assert rejects["line"].to_pylist() == [3]


def test_an_unreadable_object_is_one_reject_naming_the_object(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n")
    store.put("exports/empty.csv", "")
    project = _project(tmp_path / "shop", store.url("exports/"))

    result = _ingest(project)

    assert [(f.path, f.status) for f in result.files] == [
        (store.url("exports/a.csv"), "ingested"),
        (store.url("exports/empty.csv"), "rejected"),
    ]
    rejects = read_table("sales__rejects", config=get_config())
    assert rejects["source_path"].to_pylist() == [store.url("exports/empty.csv")]


def test_a_bad_record_under_error_names_the_object_and_line(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\nnot-a-number,2.5\n")
    root = tmp_path / "shop"
    project = _project(root, store.url("exports/"))
    (root / "sources" / "sales.yaml").write_text(
        (root / "sources" / "sales.yaml").read_text().replace("on_bad_rows: reject", "on_bad_rows: error")
    )
    project = load_project(root)
    with pytest.raises(MalformedRecordError) as caught:
        _ingest(project)
    assert (caught.value.path, caught.value.line) == (store.url("exports/a.csv"), 3)
    assert str(get_config().home / "remote") not in str(caught.value)


def test_source_files_lists_objects_and_sees_new_and_changed_ones(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n")
    project = _project(tmp_path / "shop", store.url("exports/"))
    source = _source(project)

    (first,) = source_files(project, source)
    assert (first.name, first.size) == (store.url("exports/a.csv"), len("id,amount\n1,1.5\n"))
    assert isinstance(first.version, str) and first.version  # the ETag
    assert not (get_config().home / "remote").exists()  # listed, not downloaded

    store.put("exports/b.csv", "id,amount\n2,2.5\n")
    store.put("exports/a.csv", "id,amount\n1,9.5\n")
    a, b = source_files(project, source)
    assert [a.name, b.name] == [store.url("exports/a.csv"), store.url("exports/b.csv")]
    assert a.size == first.size and a.version != first.version


def test_a_glob_in_the_last_part_keeps_only_what_it_matches(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n")
    store.put("exports/b.json", '{"id": 2, "amount": 2.5}\n')
    store.put("exports/deeper/c.csv", "id,amount\n3,3.5\n")
    project = _project(tmp_path / "shop", store.url("exports/*.csv"))
    config = get_config()

    assert [f.name for f in source_files(project, _source(project))] == [store.url("exports/a.csv")]
    result = _ingest(project)
    assert [f.path for f in result.files] == [store.url("exports/a.csv")]
    assert _rows(config) == [(store.url("exports/a.csv"), 1, 1.5)]


def test_a_single_key_is_a_source(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n")
    store.put("exports/a.csv.bak", "id,amount\n2,2.5\n")
    project = _project(tmp_path / "shop", store.url("exports/a.csv"))
    result = _ingest(project)
    assert [f.path for f in result.files] == [store.url("exports/a.csv")]


def test_an_empty_prefix_is_no_files_like_an_empty_folder(store: Store, tmp_path: Path) -> None:
    store.put("elsewhere/a.csv", "id,amount\n1,1.5\n")
    project = _project(tmp_path / "shop", store.url("exports/"))
    with pytest.raises(SourceNotFoundError, match="no CSV, JSON or Parquet objects") as caught:
        _ingest(project)
    assert store.url("exports/") in str(caught.value)
    assert source_files(project, _source(project)) == []


def test_a_missing_bucket_is_named_and_the_secret_is_not(store: Store, tmp_path: Path) -> None:
    project = _project(tmp_path / "shop", "s3://no-such-bucket-lakebed/exports/")
    with pytest.raises(SourceNotFoundError) as caught:
        _ingest(project)
    message = str(caught.value)
    assert "no such bucket 'no-such-bucket-lakebed'" in message
    assert "s3://no-such-bucket-lakebed/exports/" in message
    assert SECRET_KEY not in message and SECRET_KEY not in repr(caught.value.__cause__)
    assert source_files(project, _source(project)) == []


def test_refused_credentials_are_an_error_naming_the_bucket(
    s3_server: MotoServer,
    s3_authenticating: tuple[str, str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bucket, _, _ = s3_authenticating
    _aim(monkeypatch, s3_server.endpoint)  # keys moto's IAM does not know
    project = _project(tmp_path / "shop", f"s3://{bucket}/exports/")
    for attempt in (lambda: _ingest(project), lambda: source_files(project, _source(project))):
        with pytest.raises(SourceUnavailableError, match="refused the credentials") as caught:
            attempt()
        assert f"s3://{bucket}/exports/" in str(caught.value)
        assert SECRET_KEY not in str(caught.value)


def test_an_unreachable_endpoint_is_an_error_naming_the_bucket(
    s3_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _aim(monkeypatch, f"http://127.0.0.1:{port}")
    project = _project(tmp_path / "shop", f"s3://{s3_bucket}/exports/")
    with pytest.raises(SourceUnavailableError, match="cannot reach the object store") as caught:
        _ingest(project)
    assert f"s3://{s3_bucket}/exports/" in str(caught.value) and SECRET_KEY not in str(caught.value)


def test_the_files_sensor_watches_a_prefix(store: Store, tmp_path: Path) -> None:
    store.put("exports/a.csv", "id,amount\n1,1.5\n")
    project = _project(tmp_path / "shop", store.url("exports/"), extra="    run: {sensor: true}\n")
    defs = definitions(project.root)
    sensor = defs.get_sensor_def("sales_files_sensor")
    with dg.instance_for_test() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
        assert [r.asset_selection for r in first.run_requests] == [[dg.AssetKey("sales")]]
        idle = sensor(
            dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=first.cursor)
        )
        assert idle.run_requests == []

        store.put("exports/a.csv", "id,amount\n1,9.5\n")  # same size, new ETag
        second = sensor(
            dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=first.cursor)
        )
        assert len(second.run_requests) == 1
        assert second.run_requests[0].run_key != first.run_requests[0].run_key

        job = defs.get_implicit_global_asset_job_def()
        run = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("sales")])
        assert run.success
    assert _rows(get_config()) == [(store.url("exports/a.csv"), 1, 9.5)]
