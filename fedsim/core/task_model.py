"""The model a scenario trains: ``task.model`` from the registry, or the model an algorithm builds
around a pre-trained part (FedIns: the frozen SSF ViT with a pool)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fedsim.core.algorithms import FedInsSpec
from fedsim.core.models import build_model

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.scenario import Scenario

__all__ = ["task_model"]


def task_model(scenario: Scenario, num_features: int, num_outputs: int, seed: int) -> nn.Module:
    spec = scenario.algorithm
    if isinstance(spec, FedInsSpec):
        from fedsim.core.backbone import BackboneConfig, load_backbone
        from fedsim.core.ssf import FedInsNet

        b = spec.backbone
        config = BackboneConfig(b.dataset, b.steps, dim=b.dim, depth=b.depth, seed=scenario.seed)
        backbone = load_backbone(config, math.isqrt(num_features))
        model = FedInsNet(backbone, num_outputs, spec.entries, spec.top_n, seed)
        for name, p in model.named_parameters():
            p.requires_grad_(not spec.frozen(name))
        return model
    return build_model(scenario.task.model, num_features, num_outputs, seed)
