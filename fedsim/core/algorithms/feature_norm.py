"""TinyOL's output layer with on-the-fly feature normalisation, as a torch layer (design §6.1).

A TinyOL device standardises each feature vector with running statistics (Welford's algorithm,
``edge.online_head.RunningNorm``) before its output layer sees it. For the federation to evaluate
and average what the devices learned, those statistics live in the layer itself:
``NormalizedLinear`` is a ``Linear`` whose input is standardised with its ``norm_mean``,
``norm_var`` and ``norm_count`` (non-trainable parameters, so they count as the head: they travel
with it, are averaged with it, and a device's memory counts them, 2·features + 1 floats, as
``OnlineHead.state_floats`` does).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EPS", "NormalizedLinear", "with_feature_norm"]

EPS = 1e-5  # RunningNorm's


class NormalizedLinear(nn.Linear):
    """y = W·(x − mean)/√(var + eps) + b; with fewer than two samples seen, var counts as 1 (as
    ``RunningNorm.var``), so a fresh layer only scales by 1/√(1 + eps)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        frozen = {"requires_grad": False}
        self.norm_mean = nn.Parameter(torch.zeros(in_features), **frozen)
        self.norm_var = nn.Parameter(torch.ones(in_features), **frozen)
        self.norm_count = nn.Parameter(torch.zeros(1), **frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = self.norm_var if float(self.norm_count) >= 2 else torch.ones_like(self.norm_var)
        scaled = (x - self.norm_mean) / torch.sqrt(var + EPS)
        return nn.functional.linear(scaled, self.weight, self.bias)


def with_feature_norm(model: nn.Module) -> nn.Module:
    """``model`` with its last ``Linear`` replaced by a ``NormalizedLinear`` of the same weights
    (fresh statistics); the rest is untouched."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
    if not isinstance(last, nn.Linear):
        raise TypeError("tinyol trains a linear output layer; this model ends in a Conv2d")
    layer = NormalizedLinear(last.in_features, last.out_features)
    with torch.no_grad():
        layer.weight.copy_(last.weight)
        if last.bias is not None:
            layer.bias.copy_(last.bias)
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is last:
                setattr(parent, name, layer)
                return model
    raise TypeError("the model's output layer is not a child module: cannot normalise its input")
