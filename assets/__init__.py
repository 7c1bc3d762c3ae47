"""The Dagster layer: Definitions, assets, sensors, schedules and resources (wiring only)."""
