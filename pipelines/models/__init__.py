"""Transformation models: derived tables declared in a project (docs/models.md)."""
