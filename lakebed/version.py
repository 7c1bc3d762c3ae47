"""lakebed's version and the URI it names itself by, at the bottom of the layers (importable from anywhere)."""

__version__ = "0.1.0"
PRODUCER = "https://github.com/lakebed/lakebed"
"""The URI lakebed names itself by as the producer of OpenLineage events and facets."""
