"""Lineage: OpenLineage emission, the lineage store, auditor queries and graph rendering."""
