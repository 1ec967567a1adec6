"""fedsim: a federated and edge learning simulator built on Flower.

Two floors (see ``docs/design/design.md`` §2): ``fedsim.core`` is the ground floor that every
other package may import (scenario, errors, records, reduces, data, models); ``fedsim.runner``,
``fedsim.cli`` and the other top-floor modules import ``clients``, ``server``, ``ontology`` and
``devices``. Nothing heavy is imported here: ``fedsim.run`` and ``fedsim.Run`` (``fedsim.api``)
load on first use.

Docstrings cite the design by section, "design §6.1": docs/design/design.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Flower phones home unless told not to; fedsim never does, whatever the entry point.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

if TYPE_CHECKING:
    from fedsim.api import Run, run

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "run"]
_API = ("Run", "run")


def __getattr__(name: str) -> Any:
    """``fedsim.run`` and ``fedsim.Run``, imported when first asked for (they pull in pydantic
    and the scenario models; the CLI's ``--version`` and plugins importing fedsim need neither)."""
    if name in _API:
        from fedsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
