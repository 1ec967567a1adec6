"""The model a scenario trains: what its algorithm builds (by default the scenario's ``task.model``
from the registry; FedIns builds the frozen SSF ViT with a pool around it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsim.core.algorithms import ModelTask
from fedsim.core.models import build_model

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.scenario import Scenario

__all__ = ["task_model"]


def task_model(scenario: Scenario, num_features: int, num_outputs: int, seed: int) -> nn.Module:
    name = scenario.task.model
    task = ModelTask(
        name,
        num_features,
        num_outputs,
        seed,
        scenario.seed,
        lambda: build_model(name, num_features, num_outputs, seed),
    )
    return scenario.algorithm.build_model(task)
