"""Centralised evaluation of the global model on the dataset's held-out test split."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedsim.core.models import task_loss

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module, x: NDArray[np.float32], y: NDArray[np.generic]
) -> tuple[float | None, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``x, y``; (None, mean squared error) for
    regression targets."""
    model.eval()
    outputs = model(torch.from_numpy(x))
    targets = torch.from_numpy(y)
    loss = task_loss(outputs, targets).item()
    if targets.is_floating_point():
        return None, loss
    accuracy = (outputs.argmax(dim=1) == targets).float().mean().item()
    return accuracy, loss
