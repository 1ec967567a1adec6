"""Algorithms: one module each, one protocol (``base.Algorithm``), one table.

Adding a built-in algorithm is a module with its ``Algorithm`` subclass and one line below. A
user's algorithm needs no change here: an installed package lists it under the entry-point group
``fedsim.algorithms``, or a scenario names it as ``kind: "package.module:ClassName"``. Either way
its keys are validated as the built-ins' are, and ``fedsim validate`` proves it complete
(``check_algorithm``).
"""

from __future__ import annotations

from typing import Any

from fedsim.core.algorithms.base import (
    Algorithm,
    DeviceUpdate,
    Learner,
    ModelAggregator,
    ModelTask,
    NonFiniteUpdateError,
    Problem,
    Received,
    ServerRound,
    ServerState,
    missing_methods,
    step_toward,
)
from fedsim.core.errors import FedsimError, clip
from fedsim.core.plugins import Plugins

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "DeviceUpdate",
    "Learner",
    "ModelAggregator",
    "ModelTask",
    "NonFiniteUpdateError",
    "Problem",
    "Received",
    "ServerRound",
    "ServerState",
    "algorithm_class",
    "check_algorithm",
    "missing_methods",
    "step_toward",
]

ALGORITHMS: Plugins[type[Algorithm]] = Plugins("algorithm", group="fedsim.algorithms")
ALGORITHMS.lazy("fedavg", "fedsim.core.algorithms.fedavg:FedAvg")
ALGORITHMS.lazy("fedprox", "fedsim.core.algorithms.fedprox:FedProx")
ALGORITHMS.lazy("tinyol", "fedsim.core.algorithms.tinyol:TinyOL")
ALGORITHMS.lazy("tinyreptile", "fedsim.core.algorithms.tinyreptile:TinyReptile")
ALGORITHMS.lazy("tinymetafed", "fedsim.core.algorithms.tinymetafed:TinyMetaFed")
ALGORITHMS.lazy("prototypes", "fedsim.core.algorithms.prototypes:Prototypes")
ALGORITHMS.lazy("fedins", "fedsim.core.algorithms.fedins:FedIns")


def check_algorithm(cls: Any, kind: str, where: str = "algorithm.kind") -> type[Algorithm]:
    """``cls`` if it is a complete ``Algorithm``; otherwise a located error naming what lacks."""
    name = getattr(cls, "__qualname__", repr(cls))
    if not isinstance(cls, type) or not issubclass(cls, Algorithm):
        raise FedsimError(
            where,
            f"'{clip(kind)}' ({clip(str(name))}) is not an algorithm: not a subclass of "
            "fedsim.core.algorithms.Algorithm",
            "point kind at a class that subclasses Algorithm (docs/algorithms.md)",
        )
    missing = missing_methods(cls)
    if missing:
        raise FedsimError(
            where,
            f"algorithm '{clip(kind)}' ({clip(str(name))}) is incomplete: it does not define "
            f"{', '.join(missing)}, so a run could not use it",
            "subclass fedsim.core.algorithms.Algorithm and define "
            f"{', '.join(missing)} (docs/algorithms.md lists what each method must do)",
        )
    return cls


def algorithm_class(kind: str, where: str = "algorithm.kind") -> type[Algorithm]:
    """The complete ``Algorithm`` class that ``kind`` names (a built-in, an installed entry point,
    or ``package.module:Class``); a located error otherwise."""
    return check_algorithm(ALGORITHMS.get(kind, where), kind, where)
