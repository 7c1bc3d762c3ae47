"""Hot/cold tiering: a table's older rows live in a cold Delta table on object storage, transparently.

A tiered table is two Delta tables: the hot one (the catalog's URI, local; every write lands there) and the
cold one (``<cold root>/<table>``, e.g. ``s3://bucket/prefix/<table>``), split by a watermark on the
contract's ``tiering.column``: cold holds the rows below it. Watermarks are int64 in the column's units
(:mod:`.watermark`).

State lives in Delta application transactions, never in side files:

* cold ``tier:<table>`` = the watermark (the cold table is the truth about what it holds), and
  ``tier-hot:<table>`` = the hot version the last copy read;
* hot ``tier-op:<table>`` = the number of the last move or recall started (with ``tier-target:<table>``,
  the watermark it aims at), ``tier-done:<table>`` = the number of the last one finished, and with it
  ``tier-wm:<table>`` = the watermark and ``tier-cold:<table>`` = the cold version that goes with it.

Modules, by noun: :mod:`.storage` (where the tiers are, their state), :mod:`.watermark`, :mod:`.view`
(reads across tiers), :mod:`.plan` (status and move plans), :mod:`.files` (hot files by their tiering
values), :mod:`.actions` (Delta add/remove actions), :mod:`.store` (verified copies into the cold store),
:mod:`.cold_copy` (a move's cold commit), :mod:`.move` (the move/recall state machine), :mod:`.operations`
(move and recall as lineage runs), :mod:`.vacuum`, :mod:`.access` (what reads touched). This module is the
public API.
"""

from __future__ import annotations

from lakebed.pipelines.tiering.move import FAULT_ENV, MoveResult, Progress
from lakebed.pipelines.tiering.operations import describe, move, recall
from lakebed.pipelines.tiering.plan import MovePlan, TierStatus, plan_move, status
from lakebed.pipelines.tiering.storage import cold_uri, policy_of, storage_options
from lakebed.pipelines.tiering.vacuum import VacuumResult, vacuum
from lakebed.pipelines.tiering.view import Part, Tiers, open_tiers, view_schema
from lakebed.pipelines.tiering.watermark import from_units, literal, sql_units, to_units

__all__ = [
    "FAULT_ENV",
    "MovePlan",
    "MoveResult",
    "Part",
    "Progress",
    "TierStatus",
    "Tiers",
    "VacuumResult",
    "cold_uri",
    "describe",
    "from_units",
    "literal",
    "move",
    "open_tiers",
    "plan_move",
    "policy_of",
    "recall",
    "sql_units",
    "status",
    "storage_options",
    "to_units",
    "vacuum",
    "view_schema",
]
