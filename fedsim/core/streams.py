"""Orderings of one device's samples: class-incremental missions and online streams.

Partitions (``fedsim.core.partition``) decide *which* samples a device holds; these decide *in
what order* it sees them. Class-incremental "federated reconnaissance" gives each device missions
of new classes; on-device online learning (TinyOL) sees one sample at a time, possibly under
concept drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["Drift", "class_incremental_missions", "online_stream"]


def class_incremental_missions(
    labels: NDArray[np.int64],
    classes_per_mission: int,
    samples_per_class: int,
    seed: int,
    missions: int | None = None,
) -> list[NDArray[np.int64]]:
    """Index arrays into ``labels``: mission m holds ``samples_per_class`` samples of each of
    ``classes_per_mission`` classes that no earlier mission had, drawn without replacement.

    Classes with fewer than ``samples_per_class`` samples are never used. Stops when classes run
    out, or after ``missions``.
    """
    if classes_per_mission < 1 or samples_per_class < 1:
        raise ValueError("classes_per_mission and samples_per_class must be at least 1")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    usable = rng.permutation(classes[counts >= samples_per_class])
    limit = len(usable) // classes_per_mission
    out = []
    for m in range(limit if missions is None else min(missions, limit)):
        chosen = usable[m * classes_per_mission : (m + 1) * classes_per_mission]
        picks = [
            rng.choice(np.flatnonzero(labels == c), size=samples_per_class, replace=False)
            for c in chosen
        ]
        out.append(np.concatenate(picks).astype(np.int64))
    return out


@dataclass(frozen=True)
class Drift:
    """Concept drift in an online stream, starting after fraction ``at`` of its samples.

    ``label-swap``: classes ``a`` and ``b`` exchange labels (abrupt; the world changed).
    ``feature-shift``: inputs shift by ``scale``·(standard deviation) in a fixed random direction,
    growing linearly to full size by the end (gradual; e.g. a sensor ageing).
    """

    kind: Literal["label-swap", "feature-shift"]
    at: float = 0.5
    a: int = 0
    b: int = 1
    scale: float = 1.0


def online_stream(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    seed: int,
    drift: Drift | None = None,
    passes: int = 1,
) -> Iterator[tuple[NDArray[np.float32], int]]:
    """One ``(sample, label)`` at a time, in a seeded order (a new order each pass)."""
    rng = np.random.default_rng(seed)
    total = passes * len(y)
    start = int(drift.at * total) if drift else total
    direction = rng.standard_normal(x.shape[1:]).astype(np.float32)
    direction *= float(x.std()) / max(float(np.linalg.norm(direction)), 1e-12)
    step = 0
    for _ in range(passes):
        for i in rng.permutation(len(y)):
            sample, label = x[i], int(y[i])
            if drift is not None and step >= start:
                if drift.kind == "label-swap":
                    label = {drift.a: drift.b, drift.b: drift.a}.get(label, label)
                else:
                    grown = (step - start + 1) / max(total - start, 1)
                    sample = sample + drift.scale * grown * direction
            step += 1
            yield sample, label
