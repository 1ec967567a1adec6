"""fedsim: a federated and edge learning simulator built on Flower.

Two floors (see ``DESIGN.md`` §2): ``fedsim.core`` is the ground floor that every other package may
import (scenario, errors, records, reduces, data, models); ``fedsim.runner``, ``fedsim.cli`` and the
other top-floor modules import ``clients``, ``server``, ``ontology`` and ``devices``. Nothing heavy
is imported here.
"""

import os

# Flower phones home unless told not to; fedsim never does, whatever the entry point.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

__version__ = "0.1.0"
__all__ = ["__version__"]
