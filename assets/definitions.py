"""The Dagster code location of the shop example project (``dagster dev -m lakebed.assets.definitions``).

Its state lives where lakebed's configuration for the current directory says when a run reads it (as for
``lakebed demo``), not in the package's example folder.
"""

from lakebed.dagster import definitions
from lakebed.examples import SHOP

defs = definitions(SHOP, process_home=True)
