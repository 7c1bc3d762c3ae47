"""Runs as OpenLineage sees them: START, then COMPLETE or FAIL, with every input and output in between.

A job (an ingest, a stream worker, a feature materialisation, a quality check, ...) wraps its work in
:func:`lineage_run`; the write path reports each Delta commit with :func:`record_output` and readers report
what they read with :func:`record_input`, so the COMPLETE event names every output at its Delta version
and every input at the version read. A commit made outside any run becomes a run of its own. Runs nest:
an inner run with another run id is a child (``parent`` facet), and a run made for a Dagster run names
that run as its parent.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

from lakebed.config import LakebedConfig, get_config
from lakebed.lineage.emit import get_emitter
from lakebed.lineage.events import DatasetRef, JobInfo, ParentRef, run_event

log = logging.getLogger("lakebed.lineage")
DAGSTER_NAMESPACE = "dagster"


class RunLike(Protocol):
    """What lineage needs of a run (``lakebed.pipelines.delta.RunContext`` has it)."""

    @property
    def job(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def code_version(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


class LineageRun:
    """One run being recorded: its inputs and outputs so far."""

    def __init__(
        self,
        job: JobInfo,
        run_id: str,
        *,
        parent: ParentRef | None,
        tags: Mapping[str, str],
        config: LakebedConfig,
    ) -> None:
        self.job = job
        self.run_id = run_id
        self.parent = parent
        self.tags = dict(tags)
        self.config = config
        self.inputs: dict[tuple[str, str, str | None], DatasetRef] = {}
        self.outputs: dict[tuple[str, str, str | None], DatasetRef] = {}
        self.columns: dict[str, dict[str, list[tuple[DatasetRef, str, str]]]] = {}

    def add_input(self, ref: DatasetRef) -> None:
        key = (ref.namespace, ref.name, ref.version)
        if key not in self.inputs or ref.quality is not None:
            self.inputs[key] = ref

    def add_output(self, ref: DatasetRef) -> None:
        self.outputs[(ref.namespace, ref.name, ref.version)] = ref

    def add_column_lineage(
        self, table: str, column: str, sources: Sequence[tuple[DatasetRef, str, str]]
    ) -> None:
        """Declare that output ``table``'s ``column`` derives from ``sources`` (input dataset, input column,
        ``"TYPE:SUBTYPE[:description]"`` transformation); emitted as the columnLineage facet."""
        known = self.columns.setdefault(table, {}).setdefault(column, [])
        known.extend(s for s in sources if s not in known)

    def _outputs(self) -> list[DatasetRef]:
        return [
            dataclasses.replace(ref, column_lineage=self.columns[ref.table])
            if ref.table in self.columns and not ref.column_lineage
            else ref
            for ref in self.outputs.values()
        ]

    def emit(self, event_type: str, error: BaseException | None = None) -> None:
        if not self.config.lineage_enabled:
            return
        try:
            emitter = get_emitter(self.config)
            emitter.emit(
                run_event(
                    event_type,
                    run_id=self.run_id,
                    job=self.job,
                    # A table the run read back after writing it is not one of its inputs.
                    inputs=[ref for key, ref in self.inputs.items() if key not in self.outputs],
                    outputs=self._outputs() if event_type != "START" else [],
                    parent=self.parent,
                    error=error,
                    tags=self.tags,
                    secrets=None,  # the emitter scrubs the serialised event
                )
            )
        except Exception as exc:  # lineage must never fail the data job
            log.warning("lineage event %s of run %s not recorded: %s", event_type, self.run_id, exc)

    @property
    def as_parent(self) -> ParentRef:
        return ParentRef(self.run_id, self.job.namespace, self.job.name)


_CURRENT: contextvars.ContextVar[LineageRun | None] = contextvars.ContextVar(
    "lakebed_lineage_run", default=None
)


def current_run() -> LineageRun | None:
    """The run being recorded in this context, if any."""
    return _CURRENT.get()


@contextmanager
def lineage_run(
    run: RunLike,
    *,
    job: str | None = None,
    processing: str = "BATCH",
    inputs: Sequence[DatasetRef] = (),
    parent: ParentRef | None = None,
    config: LakebedConfig | None = None,
) -> Iterator[LineageRun]:
    """Record ``run`` (job name default: ``run.job``): START now, COMPLETE on leaving, FAIL (with the error)
    on an exception. Inside a run with the same run id this is that run (no new events)."""
    active = _CURRENT.get()
    if _belongs(active, run.run_id):
        assert active is not None
        for ref in inputs:
            active.add_input(ref)
        yield active
        return
    config = config or get_config()
    if parent is None:
        parent = active.as_parent if active is not None else dagster_parent(run.tags)
    recorded = LineageRun(
        JobInfo(
            config.lineage_namespace, job or run.job, processing=processing, code_version=run.code_version
        ),
        run.run_id,
        parent=parent,
        tags=run.tags,
        config=config,
    )
    for ref in inputs:
        recorded.add_input(ref)
    recorded.emit("START")
    token = _CURRENT.set(recorded)
    try:
        yield recorded
    except BaseException as exc:
        recorded.emit("FAIL", error=exc)
        raise
    else:
        recorded.emit("COMPLETE")
    finally:
        _CURRENT.reset(token)


@contextmanager
def child_run(
    run: RunLike, *, job: str, inputs: Sequence[DatasetRef] = (), config: LakebedConfig | None = None
) -> Iterator[LineageRun]:
    """A child run of the current run (e.g. one micro-batch of a streaming job) with a fresh run id."""
    child = _ChildRun(run, str(uuid.uuid4()))
    with lineage_run(child, job=job, inputs=inputs, config=config) as recorded:
        yield recorded


class _ChildRun:
    def __init__(self, parent: RunLike, run_id: str) -> None:
        self.job, self.code_version, self.tags = parent.job, parent.code_version, parent.tags
        self.run_id = run_id


def record_output(run: RunLike, ref: DatasetRef, *, config: LakebedConfig | None = None) -> None:
    """Report a commit made by ``run``: an output of the current run when it is ``run``, else a run of its
    own (a child of the current run, if any)."""
    active = _CURRENT.get()
    if _belongs(active, run.run_id):
        assert active is not None
        active.add_output(ref)
        return
    with lineage_run(run, config=config) as recorded:
        recorded.add_output(ref)


def _belongs(active: LineageRun | None, run_id: str) -> bool:
    """Whether work of ``run_id`` is part of the ``active`` run: it is that run or its parent (the
    micro-batch runs of a stream worker commit under the worker's run id)."""
    if active is None:
        return False
    return active.run_id == run_id or (active.parent is not None and active.parent.run_id == run_id)


def record_input(ref: DatasetRef) -> None:
    """Report a dataset (at a version) read by the current run, if a run is being recorded."""
    active = _CURRENT.get()
    if active is not None:
        active.add_input(ref)


def dagster_parent(tags: Mapping[str, str]) -> ParentRef | None:
    """The Dagster run a run belongs to (``dagster.run_id`` / ``dagster.job`` tags), as its parent."""
    run_id = tags.get("dagster.run_id")
    if not run_id:
        return None
    return ParentRef(run_id, DAGSTER_NAMESPACE, tags.get("dagster.job") or "dagster")


__all__ = [
    "LineageRun",
    "RunLike",
    "child_run",
    "current_run",
    "dagster_parent",
    "lineage_run",
    "record_input",
    "record_output",
]
