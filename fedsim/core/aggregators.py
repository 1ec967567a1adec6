"""Which associative reduce each algorithm uses (the server's side of an algorithm).

On the ground floor because both the server (per-device mode) and cohort workers (which reply with
partial aggregates) need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedsim.core.plugins import Plugins
from fedsim.core.prototypes import PrototypeArrays
from fedsim.core.reduce import Aggregator, Arrays, WeightedMean

__all__ = ["AGGREGATORS", "ModelAggregator", "aggregator_for", "server_step"]

# Updates are (model arrays, number of training examples[, which tensors trained]), or for
# prototype averaging a mission's per-class sums (``ClassSums``); the global state is the arrays.
ModelAggregator = Aggregator[Any, Any, Arrays]
AGGREGATORS: Plugins[Callable[[], ModelAggregator]] = Plugins("algorithm")


@AGGREGATORS.register("fedavg")
def _fedavg() -> Callable[[], ModelAggregator]:
    return WeightedMean


@AGGREGATORS.register("fedprox")
def _fedprox() -> Callable[[], ModelAggregator]:
    return WeightedMean  # FedProx changes the local objective only; the server averages as FedAvg


@AGGREGATORS.register("tinyreptile")
def _tinyreptile() -> Callable[[], ModelAggregator]:
    return WeightedMean  # the mean of φᵢ; the server's Reptile step (server_step) follows it


@AGGREGATORS.register("tinymetafed")
def _tinymetafed() -> Callable[[], ModelAggregator]:
    return WeightedMean  # of θ + sparse Δᵢ (unsent entries = θ), i.e. θ + mean of sparse Δᵢ


@AGGREGATORS.register("tinyol")
def _tinyol() -> Callable[[], ModelAggregator]:
    return WeightedMean  # of the heads (the only tensors devices train and send)


@AGGREGATORS.register("fedins")
def _fedins() -> Callable[[], ModelAggregator]:
    return WeightedMean  # element-wise mean of the pool tensors; the frozen backbone never votes


@AGGREGATORS.register("prototypes")
def _prototypes() -> Callable[[], ModelAggregator]:
    return PrototypeArrays  # per-class sums and counts added up (fedsim.core.prototypes)


def server_step(global_arrays: Arrays, averaged: Arrays, epsilon: float) -> Arrays:
    """θ ← θ + ε·(mean − θ): Reptile's outer step; ε = 1 returns the mean itself (FedAvg)."""
    if epsilon == 1.0:
        return averaged
    step = np.float32(epsilon)
    return [
        (g + step * (a - g)).astype(np.float32)
        for g, a in zip(global_arrays, averaged, strict=True)
    ]


def aggregator_for(kind: str, uniform: bool = False) -> ModelAggregator:
    """The kind's aggregator; ``uniform``: a mean that weighs every device alike."""
    aggregator = AGGREGATORS.get(kind, "algorithm.kind")()
    if uniform:
        if not isinstance(aggregator, WeightedMean):
            raise ValueError(f"{kind} has no uniform mean")
        return WeightedMean(uniform=True)
    return aggregator
