"""Data quality: contracts compiled into Polars rules and Great Expectations suites, quarantine, results."""
