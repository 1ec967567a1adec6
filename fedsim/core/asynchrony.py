"""Asynchronous aggregation on the simulated clock: FedAsync and FedBuff.

Asynchrony is how the server orchestrates, not what a device computes: a device trains as its
algorithm says (FedAvg's local SGD, FedProx's proximal steps, TinyReptile's inner steps) from the
model version current when it started, and the server folds each update in when it arrives.

- **FedAsync** (Xie, Koyejo & Gupta, 2019): every arrival is mixed in at once,
  ``θ ← (1 − α_τ) θ + α_τ θ_i`` with ``α_τ = α · s(τ)``;
- **FedBuff** (Nguyen et al., AISTATS 2022): the server buffers ``K`` arrivals, then applies their
  staleness-weighted mean change, ``θ ← θ + η · (1/K) Σ s(τ_i) (θ_i − θ_start(i))``, where
  ``θ_start(i)`` is the version device ``i`` started from; at most ``C`` devices train at once.

``τ`` (staleness) is how many server updates happened between a device's start and its arrival.
``s`` is ``constant`` (1), ``polynomial`` ((1 + τ)^−a) or ``hinge`` (1 for τ ≤ b, else
1 / (a(τ − b) + 1)), as Xie et al. define them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["Arrival", "fedasync_update", "fedbuff_update", "staleness_weight"]

Arrays = list[NDArray[np.float32]]
Staleness = Literal["constant", "polynomial", "hinge"]


def staleness_weight(tau: int, kind: Staleness, a: float = 0.5, b: int = 4) -> float:
    """s(τ) of Xie et al.: constant 1; polynomial (1 + τ)^−a; hinge 1 up to b, then
    1 / (a(τ − b) + 1)."""
    if tau < 0:
        raise ValueError(f"staleness must be ≥ 0, got {tau}")
    if kind == "constant":
        return 1.0
    if kind == "polynomial":
        return float((1.0 + tau) ** -a)
    if kind == "hinge":
        return 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)
    raise ValueError(f"unknown staleness weighting '{kind}'")


@dataclass(frozen=True)
class Arrival:
    """One device's update as the server receives it: the model it sent, the version it started
    from (its arrays), the staleness weight at arrival, and which tensors it trained (a head-only
    device sends the others back as it got them: they are no update)."""

    arrays: Arrays
    start: Arrays
    weight: float
    trained: tuple[bool, ...] | None = None  # None: all

    def trains(self, i: int) -> bool:
        return self.trained is None or self.trained[i]


def fedbuff_update(global_arrays: Arrays, arrivals: Sequence[Arrival], server_lr: float) -> Arrays:
    """θ + η · (1/K) Σ s(τ_i) (θ_i − θ_start(i)), in float64, summed in arrival order. A tensor
    is averaged over the K_t arrivals that trained it (K when all did, as synchronous FedAvg
    averages each tensor over the devices that trained it); one nobody trained stays."""
    out = []
    for i, g in enumerate(global_arrays):
        change = np.zeros(np.shape(g), dtype=np.float64)
        count = 0
        for arrival in arrivals:
            if not arrival.trains(i):
                continue
            delta = arrival.arrays[i].astype(np.float64) - arrival.start[i].astype(np.float64)
            change += arrival.weight * delta
            count += 1
        if count == 0:
            out.append(g)
            continue
        out.append(np.asarray(g.astype(np.float64) + server_lr * change / count, np.float32))
    return out


def fedasync_update(global_arrays: Arrays, arrival: Arrival, alpha: float) -> Arrays:
    """(1 − α s(τ)) θ + α s(τ) θ_i, on the tensors the device trained (the others stay: mixing in
    what it got back unchanged would pull θ back to a stale version)."""
    mix = alpha * arrival.weight
    return [
        np.asarray((1.0 - mix) * g.astype(np.float64) + mix * a.astype(np.float64), np.float32)
        if arrival.trains(i)
        else g
        for i, (g, a) in enumerate(zip(global_arrays, arrival.arrays, strict=True))
    ]
