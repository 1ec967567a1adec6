"""Centralised evaluation of the global model on the dataset's held-out test split."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: nn.Module, x: NDArray[np.float32], y: NDArray[np.int64]) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``x, y``."""
    model.eval()
    logits = model(torch.from_numpy(x))
    targets = torch.from_numpy(y)
    loss = nn.functional.cross_entropy(logits, targets).item()
    accuracy = (logits.argmax(dim=1) == targets).float().mean().item()
    return accuracy, loss
