"""Contracts: Arrow schemas of tables and events, column rules, feature-view specs, projects. Pure data."""
