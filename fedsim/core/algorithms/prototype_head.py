"""The nearest-prototype head as a torch module (its state travels as the model's arrays)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PrototypeHead"]


class PrototypeHead(nn.Module):
    """Buffers ``sums [classes, dim]`` and ``counts [classes]``; forward gives −‖e − mean‖² for
    seen classes and −inf for classes no device has reported yet."""

    sums: torch.Tensor
    counts: torch.Tensor

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(classes, dim))
        self.register_buffer("counts", torch.zeros(classes))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        seen = self.counts > 0
        means = self.sums / self.counts.clamp(min=1.0)[:, None]
        scores = -(torch.cdist(embeddings, means) ** 2)
        return scores.masked_fill(~seen[None, :], float("-inf"))
