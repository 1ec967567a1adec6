"""Named datasets, all available offline, split into train and test by the scenario's seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from fedsim.core.plugins import Plugins

__all__ = ["DATASETS", "TaskData", "load_task_data"]


@dataclass(frozen=True)
class TaskData:
    """Features as float32 ``[N, F]``, labels as int64 ``[N]``."""

    name: str
    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    num_classes: int
    licence: str

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


Loader = Callable[[int], TaskData]
DATASETS: Plugins[Loader] = Plugins("dataset")


@DATASETS.register("digits")
def _digits() -> Loader:
    def load(seed: int) -> TaskData:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()  # 1,797 8×8 handwritten digits, bundled with scikit-learn
        x = (bunch.data / 16.0).astype(np.float32)  # pixel counts 0..16 → [0, 1]
        y = bunch.target.astype(np.int64)
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=0.2, random_state=seed, stratify=y
        )
        return TaskData("digits", x_tr, y_tr, x_te, y_te, 10, "BSD-3-Clause (scikit-learn; UCI)")

    return load


@lru_cache(maxsize=8)
def load_task_data(name: str, seed: int) -> TaskData:
    """The dataset ``name`` split by ``seed``; cached per process (clients share it)."""
    return DATASETS.get(name, "task.dataset")(seed)
