"""Aggregation as an associative reduce: ``zero / accumulate / merge / finalize``.

Written this way for every algorithm, so the server, cohort workers and gateways share the maths
(``DESIGN.md`` §3.1): a worker accumulates its devices into a partial, partials merge in any
grouping, and the server finalizes the merged partial into the new global state. Order matters only
at the level of float rounding; fedsim always reduces in ascending device id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["Aggregator", "Arrays", "WeightedMean", "WeightedSum", "reduce_all"]

Arrays = list[NDArray[np.float32]]
U = TypeVar("U", contravariant=True)
P = TypeVar("P")
G = TypeVar("G")


class Aggregator(Protocol, Generic[U, P, G]):
    def zero(self) -> P: ...
    def accumulate(self, partial: P, update: U) -> P: ...
    def merge(self, left: P, right: P) -> P: ...
    def finalize(self, global_state: G, partial: P) -> G: ...


@dataclass(frozen=True)
class WeightedSum:
    """Σ wᵢ·xᵢ per tensor (float64) and Σ wᵢ; ``sums`` is empty until the first update."""

    sums: tuple[NDArray[np.float64], ...]
    weight: float


class WeightedMean:
    """FedAvg's example-weighted mean of model arrays: θ ← Σ nᵢ·θᵢ / Σ nᵢ.

    Updates are ``(arrays, n_examples)``. If no update arrives (every device failed), the global
    state is kept.
    """

    def zero(self) -> WeightedSum:
        return WeightedSum((), 0.0)

    def accumulate(self, partial: WeightedSum, update: tuple[Arrays, int]) -> WeightedSum:
        arrays, weight = update
        if weight < 0:
            raise ValueError(f"negative example count {weight}")
        scaled = tuple(np.asarray(a, dtype=np.float64) * weight for a in arrays)
        return self.merge(partial, WeightedSum(scaled, float(weight)))

    def merge(self, left: WeightedSum, right: WeightedSum) -> WeightedSum:
        if not left.sums:
            return right
        if not right.sums:
            return left
        if len(left.sums) != len(right.sums):
            raise ValueError(f"cannot merge {len(left.sums)} tensors with {len(right.sums)}")
        sums = tuple(a + b for a, b in zip(left.sums, right.sums, strict=True))
        return WeightedSum(sums, left.weight + right.weight)

    def finalize(self, global_state: Arrays, partial: WeightedSum) -> Arrays:
        if not partial.sums or partial.weight == 0:
            return global_state
        return [(s / partial.weight).astype(np.float32) for s in partial.sums]


def reduce_all(aggregator: Aggregator[U, P, G], updates: Sequence[U]) -> P:
    """Accumulate ``updates`` in the given order (callers sort by device id)."""
    partial = aggregator.zero()
    for update in updates:
        partial = aggregator.accumulate(partial, update)
    return partial
