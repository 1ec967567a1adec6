"""Server side of each algorithm: how replies are reduced into the next global model."""

from __future__ import annotations

from collections.abc import Callable

from fedsim.core.plugins import Plugins
from fedsim.core.reduce import Aggregator, Arrays, WeightedMean, WeightedSum

__all__ = ["AGGREGATORS", "ModelAggregator"]

# Updates are (model arrays, number of training examples).
ModelAggregator = Aggregator[tuple[Arrays, int], WeightedSum, Arrays]
AGGREGATORS: Plugins[Callable[[], ModelAggregator]] = Plugins("algorithm")


@AGGREGATORS.register("fedavg")
def _fedavg() -> Callable[[], ModelAggregator]:
    return WeightedMean


@AGGREGATORS.register("fedprox")
def _fedprox() -> Callable[[], ModelAggregator]:
    return WeightedMean  # FedProx changes the local objective only; the server averages as FedAvg
