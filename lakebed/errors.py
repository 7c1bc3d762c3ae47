"""The lakebed error hierarchy.

Every error lakebed raises on purpose derives from :class:`LakebedError`. Errors about input carry the
location they came from (file, line, column, offset) so a user can go straight to the bad record.
"""

from __future__ import annotations


class LakebedError(Exception):
    """Root of every error lakebed raises on purpose."""


class ConfigError(LakebedError):
    """The configuration (lakebed.toml or LAKEBED_* environment) is invalid."""


class InvalidTableNameError(LakebedError):
    """A table name does not follow the naming rule."""


class TableNotFoundError(LakebedError):
    """No lakebed table of that name (or no such version of it) exists."""


class SchemaDriftError(LakebedError):
    """Incoming data does not fit the table's schema under its drift policy."""

    def __init__(self, message: str, *, table: str, columns: list[str]) -> None:
        super().__init__(message)
        self.table = table
        self.columns = columns


class ProjectError(LakebedError):
    """A project's files are invalid or do not fit together (names the file, the entry and the field)."""


class ModelError(LakebedError):
    """A model failed to build (names the model; its table is untouched)."""


class ContractError(LakebedError):
    """A table contract is invalid (names the contract and field)."""


class InputError(LakebedError):
    """Bad input data: carries the location of the problem."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: str | None = None,
        offset: int | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                path,
                f"line {line}" if line is not None else None,
                f"column {column!r}" if column is not None else None,
                f"offset {offset}" if offset is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message
        self.path = path
        self.line = line
        self.column = column
        self.offset = offset


class SourceNotFoundError(InputError):
    """A file, glob or folder to ingest does not exist or matches nothing."""


class SourceUnavailableError(InputError):
    """A source's store cannot be listed or read: unreachable, or it refused the credentials (names the
    bucket and prefix, never the credentials)."""


class UnknownFormatError(InputError):
    """A file's format cannot be determined or is not supported."""


class MalformedRecordError(InputError):
    """A record (CSV/JSON row) cannot be parsed or converted."""


class UnreadableFileError(MalformedRecordError):
    """A whole file yields no records: empty, only a header, not in its format or its text encoding."""


class CommitError(LakebedError):
    """A Delta commit failed; nothing of it is visible to readers."""


class QualityError(LakebedError):
    """A write was blocked, or a quality check failed: an ``error``-severity rule did not hold."""

    def __init__(self, message: str, *, table: str, rules: list[str]) -> None:
        super().__init__(message)
        self.table = table
        self.rules = rules


class LineageNotFoundError(LakebedError, LookupError):
    """A lineage query names a table, version, run or job the lineage store does not know."""


class TierError(LakebedError):
    """A tier move or recall cannot go on (the cold store is unreachable, a check failed, ...); the data
    is intact and the operation can be run again."""


class TierConflictError(TierError):
    """Another mover changed the table's tiers at the same moment; this one stopped cleanly."""


class ContentNotFoundError(LakebedError):
    """No row and no blob of the table holds bytes with that sha256."""


class ContentIntegrityError(LakebedError):
    """Stored bytes no longer match their sha256."""


class FeatureRefError(LakebedError, ValueError):
    """A feature reference is not of the form ``view:vN:feature``."""


class FeatureNotFoundError(LakebedError, LookupError):
    """A feature view has no feature of that name (the message lists the ones it has)."""


class FeatureViewChangedError(LakebedError):
    """A feature view's definition changed without a new version (names the view and the fields)."""


class FeatureViewNotFoundError(LakebedError, LookupError):
    """No registered feature view of that name, or no such version of it (lists what is registered)."""


class FeatureSourceError(LakebedError):
    """The raw table of a feature view cannot be processed incrementally (names the table and version)."""


class FeatureRetrievalError(LakebedError):
    """Features cannot be retrieved as asked (names the reference, view or column at fault)."""


class UnknownFeatureError(FeatureRetrievalError):
    """A feature reference names a view, view version or feature that does not exist."""


class EntityRowsError(FeatureRetrievalError):
    """The entity rows lack a key or timestamp column, or a column has an unusable type."""


class AccessDeniedError(LakebedError):
    """The request's role may not do this action on this resource (names both; an HTTP server answers 403)."""


class FeatureServerError(LakebedError):
    """The feature server refused a request or could not be reached (names the status and its message)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TrainingSetError(LakebedError):
    """A training set cannot be created or rebuilt."""


class TrainingSetIntegrityError(TrainingSetError):
    """A training set's stored entity rows no longer match the hash recorded in its manifest."""


class OnlineStoreError(LakebedError):
    """The online store cannot serve or store the rows as asked (names the view and the problem)."""


class BrokerError(LakebedError):
    """The embedded broker cannot be found, started or stopped."""


class TopicNotFoundError(LakebedError):
    """The Kafka topic does not exist (or has no partitions)."""


class ProduceError(LakebedError):
    """Messages could not be delivered to Kafka."""


class StreamFenced(LakebedError):
    """Another writer committed offsets of this worker's partitions since it last read them."""


class EmbeddingError(LakebedError):
    """Embeddings cannot be made or used as asked (names the table, column or embedder at fault)."""


class EmbedderNotFoundError(EmbeddingError, LookupError):
    """No embedder of that name, or its optional package is not installed (names the extra to install)."""


class EmbedderMismatchError(EmbeddingError):
    """A table's vectors were made by another embedder (or other weights) than the one given: vectors of
    two embedders are not comparable."""


class EmbeddingDimensionError(EmbeddingError, SchemaDriftError):
    """An embedder's dimension differs from the one recorded for the table's embedding column (names the
    column, the recorded and the given dimension)."""

    def __init__(self, message: str, *, table: str, column: str, expected: int, got: int) -> None:
        super().__init__(message, table=table, columns=[column])
        self.column = column
        self.expected = expected
        self.got = got


class SearchError(LakebedError):
    """A similarity search cannot run: the table holds no embeddings, or a recorded embedder is missing."""


class SearchQueryError(SearchError, ValueError):
    """A search request is invalid: ``k`` out of range, an empty or non-finite query, an unknown filter
    column (an HTTP layer answers 422)."""


class QueryDimensionError(SearchQueryError):
    """A query vector's dimension differs from the table's (an HTTP layer answers 400); ``expected`` is the
    table's dimension."""

    def __init__(self, message: str, *, expected: int, got: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got
