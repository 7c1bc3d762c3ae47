"""Example projects shipped with lakebed (``lakebed init DIR --example shop``): data, not code."""

from pathlib import Path

SHOP = Path(__file__).parent / "shop"
"""The shop example: customers, orders, products, web events, documents and a clickstream with features."""
