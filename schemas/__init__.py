"""Contracts: Arrow schemas of tables and events, column rules, feature-view specs. Pure data, no I/O."""

from pathlib import Path

CONTRACTS_DIR = Path(__file__).parent / "contracts"
FEATURE_VIEWS_DIR = Path(__file__).parent / "feature_views"
