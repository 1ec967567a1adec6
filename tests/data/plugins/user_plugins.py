"""A user's own model, dataset and cost model, as a scenario names them by dotted path
(``user_plugins:tiny_mlp``; tests/test_plugins.py puts this folder on the path)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from torch import nn

from devices.cost import CostModel, CyclesPerMac, FakeEnergy, Messages, SramFit
from fedsim.core.data import DatasetSource, TaskData


def tiny_mlp(num_features: int, num_outputs: int, seed: int) -> nn.Module:
    """A builder: one hidden layer of 8."""
    import torch

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(num_features, 8), nn.ReLU(), nn.Linear(8, num_outputs)
    )


def no_module(num_features: int, num_outputs: int, seed: int) -> list[int]:
    """A builder that forgets to return a model."""
    return [num_features, num_outputs]


def _two_blobs(seed: int) -> TaskData:
    """Two Gaussian classes in 4 dimensions: 200 training and 50 test samples."""
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        y = rng.integers(0, 2, n).astype(np.int64)
        x = rng.standard_normal((n, 4)).astype(np.float32) + y[:, None].astype(np.float32)
        return x, y

    x_train, y_train = draw(200)
    x_test, y_test = draw(50)
    return TaskData("two-blobs", x_train, y_train, x_test, y_test, 2, "CC0 (generated)")


TWO_BLOBS = DatasetSource(_two_blobs, "two Gaussian classes", "CC0", "generated")

# the datasheet's figures, but energy in round numbers: a cost model of parts mixed
MIXED_COSTS = CostModel(SramFit(), CyclesPerMac(), Messages(), FakeEnergy())
INCOMPLETE_COSTS = CostModel(SramFit(), CyclesPerMac(), Messages(), energy=object())  # type: ignore[arg-type]

NOT_A_THING = 42
