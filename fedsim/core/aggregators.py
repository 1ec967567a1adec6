"""Which associative reduce each algorithm uses (the server's side of an algorithm).

On the ground floor because both the server (per-device mode) and cohort workers (which reply with
partial aggregates) need it.
"""

from __future__ import annotations

from collections.abc import Callable

from fedsim.core.plugins import Plugins
from fedsim.core.reduce import Aggregator, Arrays, ModelUpdate, WeightedMean, WeightedSum

__all__ = ["AGGREGATORS", "ModelAggregator", "aggregator_for"]

# Updates are (model arrays, number of training examples[, which tensors trained]).
ModelAggregator = Aggregator[ModelUpdate, WeightedSum, Arrays]
AGGREGATORS: Plugins[Callable[[], ModelAggregator]] = Plugins("algorithm")


@AGGREGATORS.register("fedavg")
def _fedavg() -> Callable[[], ModelAggregator]:
    return WeightedMean


@AGGREGATORS.register("fedprox")
def _fedprox() -> Callable[[], ModelAggregator]:
    return WeightedMean  # FedProx changes the local objective only; the server averages as FedAvg


def aggregator_for(kind: str) -> ModelAggregator:
    return AGGREGATORS.get(kind, "algorithm.kind")()
