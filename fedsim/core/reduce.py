"""Aggregation as an associative reduce: ``zero / accumulate / merge / finalize``.

Written this way for every algorithm, so the server, cohort workers and gateways share the maths
(design §3.1): a worker accumulates its devices into a partial, partials merge in any
grouping, and the server finalizes the merged partial into the new global state.

Float addition is not associative, so the *grouping* is fixed too: a round's cohort, sorted by
device id, is cut into blocks of ``block_size(len(cohort))`` consecutive positions; each block is
accumulated device by device, and block partials are merged in ascending block order. A cohort
worker owns whole blocks and a per-device server rebuilds the same blocks from replies, so both
execution modes, with any number of workers, yield bit-identical global states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MAX_BLOCKS",
    "WEIGHT_BYTES",
    "Aggregator",
    "Arrays",
    "ModelUpdate",
    "Packed",
    "WeightedMean",
    "WeightedSum",
    "block_size",
    "merge_blocks",
    "reduce_all",
    "reduce_blocks",
]

Arrays = list[NDArray[np.float32]]
WEIGHT_BYTES = 8  # a float64 weight per tensor, and the total, on a gateway's uplink
Packed = dict[str, NDArray[Any]]  # a partial as named arrays, for a Flower ArrayRecord
U = TypeVar("U", contravariant=True)
P = TypeVar("P")
G = TypeVar("G")


class Aggregator(Protocol, Generic[U, P, G]):
    def zero(self) -> P: ...
    def accumulate(self, partial: P, update: U) -> P: ...
    def merge(self, left: P, right: P) -> P: ...
    def finalize(self, global_state: G, partial: P) -> G: ...
    def pack(self, partial: P) -> Packed: ...
    def unpack(self, packed: Packed) -> P: ...


@dataclass(frozen=True)
class WeightedSum:
    """Σ wᵢ·xᵢ per tensor (float64), Σ wᵢ per tensor over the updates that trained it, and Σ wᵢ
    over all updates; ``sums`` is empty until the first update."""

    sums: tuple[NDArray[np.float64], ...]
    weight: float
    weights: tuple[float, ...] = ()

    def uplink(self, dtype: str) -> tuple[WeightedSum, int]:
        """As a gateway's parent receives it, and its bytes: each tensor some device trained as
        its weighted mean in ``dtype`` with its weight in float64; the parent rebuilds the sums."""
        if not self.sums:
            return self, 0
        sums, nbytes = [], WEIGHT_BYTES
        for s, w in zip(self.sums, self.weights, strict=True):
            if w > 0:
                mean = np.asarray(s / w).astype(dtype)
                nbytes += mean.nbytes + WEIGHT_BYTES
                sums.append(mean.astype(np.float64) * w)
            else:
                sums.append(np.zeros_like(s))
        return WeightedSum(tuple(sums), self.weight, self.weights), nbytes


# An update: (arrays, n_examples), or with a third item saying which tensors it trained (a device
# that trained only its head sends the others back unchanged; they get no vote).
ModelUpdate = tuple[Arrays, int] | tuple[Arrays, int, tuple[bool, ...]]


class WeightedMean:
    """FedAvg's example-weighted mean of model arrays: θ ← Σ nᵢ·θᵢ / Σ nᵢ, per tensor over the
    devices that trained it (as HeteroFL averages each parameter over the clients holding it).

    Updates are ``(arrays, n_examples)`` or ``(arrays, n_examples, trained)``. A tensor no update
    trained (every device failed, or trained only the head) keeps its global value. ``uniform``:
    every device weighs 1 whatever its examples (FedIns's reference code).
    """

    def __init__(self, uniform: bool = False) -> None:
        self.uniform = uniform

    def zero(self) -> WeightedSum:
        return WeightedSum((), 0.0)

    def accumulate(self, partial: WeightedSum, update: ModelUpdate) -> WeightedSum:
        arrays, weight = update[0], update[1]
        trained = update[2] if len(update) == 3 else (True,) * len(arrays)
        if weight < 0:
            raise ValueError(f"negative example count {weight}")
        if self.uniform:
            weight = 1
        # np.asarray around the product: a 0-d tensor (BatchNorm's num_batches_tracked) times a
        # float is a numpy scalar, which Flower's Array refuses when the partial is packed
        scaled = tuple(
            np.asarray(np.asarray(a, dtype=np.float64) * weight) if t else np.zeros(np.shape(a))
            for a, t in zip(arrays, trained, strict=True)
        )
        weights = tuple(float(weight) if t else 0.0 for t in trained)
        return self.merge(partial, WeightedSum(scaled, float(weight), weights))

    def merge(self, left: WeightedSum, right: WeightedSum) -> WeightedSum:
        if not left.sums:
            return right
        if not right.sums:
            return left
        if len(left.sums) != len(right.sums):
            raise ValueError(f"cannot merge {len(left.sums)} tensors with {len(right.sums)}")
        sums = tuple(np.asarray(a + b) for a, b in zip(left.sums, right.sums, strict=True))
        weights = tuple(a + b for a, b in zip(left.weights, right.weights, strict=True))
        return WeightedSum(sums, left.weight + right.weight, weights)

    def finalize(self, global_state: Arrays, partial: WeightedSum) -> Arrays:
        if not partial.sums or partial.weight == 0:
            return global_state
        return [
            np.asarray(s / w, dtype=np.float32) if w > 0 else global_state[i]
            for i, (s, w) in enumerate(zip(partial.sums, partial.weights, strict=True))
        ]

    def pack(self, partial: WeightedSum) -> Packed:
        packed = {f"sum-{i}": s for i, s in enumerate(partial.sums)}
        packed["weight"] = np.asarray(partial.weight, dtype=np.float64)
        packed["weights"] = np.asarray(partial.weights, dtype=np.float64)
        return packed

    def unpack(self, packed: Packed) -> WeightedSum:
        count = sum(1 for key in packed if key.startswith("sum-"))
        sums = tuple(np.asarray(packed[f"sum-{i}"], dtype=np.float64) for i in range(count))
        weights = tuple(float(w) for w in np.asarray(packed["weights"]).reshape(-1))
        return WeightedSum(sums, float(packed["weight"]), weights)


def reduce_all(aggregator: Aggregator[U, P, G], updates: Sequence[U]) -> P:
    """Accumulate ``updates`` in the given order (callers sort by device id)."""
    partial = aggregator.zero()
    for update in updates:
        partial = aggregator.accumulate(partial, update)
    return partial


MAX_BLOCKS = 64  # partials per round: bounds the reply bytes and allows up to 64 workers


def block_size(cohort: int) -> int:
    """Devices per reduction block for a round of ``cohort`` devices (depends on nothing else)."""
    return max(1, -(-cohort // MAX_BLOCKS))


def reduce_blocks(
    aggregator: Aggregator[U, P, G], updates: Iterable[tuple[int, U]], block: int
) -> dict[int, P]:
    """Accumulate ``(position, update)`` pairs, in ascending position, into per-block partials.

    Positions are places in the round's sorted cohort; a failed device simply has no update.
    """
    partials: dict[int, P] = {}
    last = -1
    for position, update in updates:
        if position <= last:
            raise ValueError(f"positions must ascend: {position} after {last}")
        last = position
        b = position // block
        partials[b] = aggregator.accumulate(partials.get(b, aggregator.zero()), update)
    return partials


def merge_blocks(aggregator: Aggregator[U, P, G], partials: Mapping[int, P]) -> P:
    """Merge block partials left to right in ascending block order."""
    total = aggregator.zero()
    for b in sorted(partials):
        total = aggregator.merge(total, partials[b])
    return total
