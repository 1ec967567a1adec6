"""Missions whose classes recur across devices and rounds, as the federated-reconnaissance
reference environment deals them (Hendryx et al.; design §6.5).

By default a fleet deals every class to exactly one device once (``Fleet.mission_classes``), so a
class reaches the server a single time and any merge rule is exact. The reference environment
instead lets every client on every mission draw ``classes_per_mission`` classes at random among
those with training samples left, and hands it ``samples_per_class`` samples of each that nobody
has had yet: a class recurs on several clients, in one round and across rounds, with disjoint
samples. That is where the server's merge rule matters (``prototype_sums.reference_finalize``).

The plan is a deterministic function of the seed: rounds are drawn in order, devices in id order
within a round, whether or not a device takes part (the samples of a mission it sits out are never
learned), so every process computes the same missions without talking to the others.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedsim.core.seeds import derive_seed

__all__ = ["RecurringMissions"]


class RecurringMissions:
    """The rows of every (device, round) mission, drawn lazily up to the latest round asked."""

    def __init__(
        self,
        labels: NDArray[np.integer],
        devices: int,
        classes_per_mission: int,
        samples_per_class: int,
        seed: int,
    ) -> None:
        self.devices, self.per, self.limit, self.seed = (
            devices,
            classes_per_mission,
            samples_per_class,
            seed,
        )
        labels = np.asarray(labels, np.int64)
        num_classes = int(labels.max()) + 1 if len(labels) else 0
        # each class's training rows in a seeded order; the next mission takes the next ones
        self._rows = [
            np.random.default_rng(derive_seed(seed, "recurring-rows", c)).permutation(
                np.flatnonzero(labels == c)
            )
            for c in range(num_classes)
        ]
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._taken = np.zeros(len(self._rows), np.int64)
        self._rng = np.random.default_rng(derive_seed(self.seed, "recurring-missions"))
        self._plan: list[list[NDArray[np.int64]]] = []

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its lock and draws (a worker redraws the same plan)."""
        return {k: getattr(self, k) for k in ("devices", "per", "limit", "seed", "_rows")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def rows(self, device_id: int, round_: int) -> NDArray[np.int64]:
        """Training rows (sorted) of ``device_id``'s mission in ``round_`` (rounds count from 1);
        empty once every class's samples are used up."""
        with self._lock:
            while len(self._plan) < round_:
                self._plan.append([self._draw() for _ in range(self.devices)])
            return self._plan[round_ - 1][device_id]

    def _draw(self) -> NDArray[np.int64]:
        remaining = np.array([len(r) for r in self._rows], np.int64) - self._taken
        eligible = np.flatnonzero(remaining > 0)
        chosen = self._rng.choice(eligible, min(self.per, len(eligible)), replace=False)
        parts = []
        for c in np.sort(chosen).tolist():
            take = min(self.limit, int(remaining[c]))
            parts.append(self._rows[c][self._taken[c] : self._taken[c] + take])
            self._taken[c] += take
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
