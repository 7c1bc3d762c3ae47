"""Asset checks from table contracts: one blocking ``contract`` check per table with quality rules.

The check runs every rule of the contract on the table's current version (:func:`check_table`, which also
records the results). A failing ``error`` rule fails the check with severity ERROR, so downstream assets
of a run do not materialise on bad data; only ``warn`` rules failing gives severity WARN (downstream runs).
Wiring only: the work is in pipelines/quality.py.
"""

from collections.abc import Iterable
from typing import Any

import dagster as dg

from lakebed.assets.resources import LakebedResource
from lakebed.pipelines.catalog import Catalog
from lakebed.pipelines.delta import open_delta, table_size
from lakebed.pipelines.quality import check_table, quarantine_table
from lakebed.quality.results import RuleResult
from lakebed.schemas.contract import TableContract
from lakebed.schemas.project import Project

CHECK_NAME = "contract"


def contract_check(table: str, contract: TableContract) -> dg.AssetChecksDefinition:
    """The blocking asset check of ``table`` (an asset of the same name) under ``contract``."""

    @dg.asset_check(
        asset=table,
        name=CHECK_NAME,
        blocking=True,
        description=f"Every quality rule of the {table} contract on the latest version.",
    )
    def _check(context: dg.AssetCheckExecutionContext, lakebed: LakebedResource) -> dg.AssetCheckResult:
        config = lakebed.config()
        run = check_table(
            table,
            contract=contract,
            run=lakebed.run_context(context, job=f"dagster:check:{table}"),
            config=config,
        )
        failures = run.failures
        errors = [r for r in failures if r.blocking]
        samples = next((r.samples for r in failures if r.samples), ())
        metadata: dict[str, Any] = {
            "lakebed/delta_version": run.version,
            "lakebed/check_id": run.check_id,
            "lakebed/failed_rules": [r.rule.name for r in failures],
            "lakebed/failed_rows": sum(r.failed_rows for r in failures),
            "lakebed/quarantined_rows": _quarantined(table, Catalog(config)),
            "lakebed/results": dg.MetadataValue.md(_results_markdown(run.results)),
        }
        if samples:
            metadata["lakebed/sample_rows"] = dg.MetadataValue.json(list(samples))
        return dg.AssetCheckResult(
            passed=not failures,
            severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description="; ".join(f"{r.rule.name}: {r.observed}" for r in failures) or None,
        )

    return _check


def _quarantined(table: str, catalog: Catalog) -> int:
    entry = catalog.find(quarantine_table(table))
    return table_size(open_delta(entry.uri))[0] if entry is not None else 0


def _results_markdown(results: Iterable[RuleResult]) -> str:
    lines = ["| rule | severity | passed | failed rows | observed |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.rule.name} | {r.rule.severity} | {r.passed} | {r.failed_rows} | {r.observed} |")
    return "\n".join(lines)


def contract_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    """A contract check for every table the project's sources write whose contract declares rules."""
    tables = dict.fromkeys(s.table for s in project.sources)
    return [
        contract_check(table, contract)
        for table in tables
        if (contract := project.contract_of(table)) is not None and contract.has_rules()
    ]
