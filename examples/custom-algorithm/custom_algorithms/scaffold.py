"""SCAFFOLD (Karimireddy et al., 2020, ICML), option II control variates.

The server keeps a control variate c, each device its own cᵢ (state that survives rounds). A
device starting from x takes K SGD steps y ← y − η_l·(g(y) − cᵢ + c), then sets
cᵢ⁺ = cᵢ − c + (x − y)/(K·η_l) and sends y and Δcᵢ = cᵢ⁺ − cᵢ. The server takes
x ← x + η_g·(mean y − x) and c ← c + (|S|/N)·mean Δcᵢ.

In fedsim the model carries c: ``build_model`` wraps the task's model with one control buffer
per parameter, so c travels down with x and Δc up with y (SCAFFOLD's doubled traffic is counted
in bytes_down/bytes_up), and the device's memory holds them. A device writes c + Δcᵢ into the
control buffers it sends; their mean is c + mean Δcᵢ, and ``server_step`` scales the step by the
round's |S|/N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fedsim.core.algorithms import (
    Learner,
    ModelAggregator,
    ModelTask,
    Problem,
    ServerRound,
    ServerState,
)
from fedsim.core.algorithms.fedavg import SgdEpochs
from fedsim.core.reduce import Arrays, WeightedMean
from fedsim.core.state import DeviceState

if TYPE_CHECKING:
    from torch import nn

    from fedsim.core.scenario import Scenario

__all__ = ["Scaffold", "ScaffoldNet"]

CONTROL = "control."  # the prefix of the control variates' tensors in the model


def _net(model: nn.Module) -> nn.Module:
    net: nn.Module = model.net  # type: ignore[assignment]
    return net


def ScaffoldNet(net: nn.Module) -> nn.Module:  # noqa: N802 - a module factory, named as a class
    """``net`` with a control buffer ``control.c<i>`` (zeros) for each of its parameters."""
    import torch
    from torch import nn

    class _Scaffold(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.control = nn.Module()
            for i, p in enumerate(net.parameters()):
                self.control.register_buffer(f"c{i}", torch.zeros_like(p))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net(x)
            return out

    return _Scaffold()


class Scaffold(SgdEpochs):
    """SCAFFOLD (Karimireddy et al., 2020). Scenario keys: FedAvg's plus ``eta`` (η_g)."""

    eta: float = Field(1.0, gt=0.0, description="server learning rate η_g")

    def build_model(self, task: ModelTask) -> nn.Module:
        return ScaffoldNet(task.build())

    def learner(self) -> Learner:
        return ScaffoldSteps(self.lr, self.local_epochs, self.batch_size)

    @property
    def state_copies(self) -> int:
        return 2  # x as received (for cᵢ⁺) and cᵢ; c is a buffer of the model

    def problems(self, scenario: Scenario) -> list[Problem]:
        if scenario.fleet.memory_policy == "head-only":
            return [
                (
                    "fleet.memory_policy",
                    "a device training only its head would send no control variate, so the "
                    "server's c would no longer be the mean of the devices' cᵢ",
                    "use memory_policy: skip (devices that cannot hold the model sit out)",
                )
            ]
        return []

    def aggregator(self) -> ModelAggregator:
        return WeightedMean(uniform=True)  # SCAFFOLD's means are over the sampled devices

    def server_step(
        self, global_arrays: Arrays, averaged: Arrays, info: ServerRound, state: ServerState
    ) -> Arrays:
        share = np.float32(info.delivered / info.fleet_size)
        eta = np.float32(self.eta)
        stepped = []
        for name, old, mean in zip(info.names, global_arrays, averaged, strict=True):
            rate = share if name.startswith(CONTROL) else eta
            stepped.append((old + rate * (mean - old)).astype(np.float32))
        return stepped


@dataclass(frozen=True)
class ScaffoldSteps:
    """The device side: corrected mini-batch SGD epochs, then the new control variate."""

    lr: float
    epochs: int
    batch_size: int
    stateful: ClassVar[bool] = True  # cᵢ is the device's own, kept between its rounds

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState,
    ) -> float:
        import torch

        from fedsim.core.models import task_loss

        params = list(_net(model).parameters())
        trains = [p for p in params if p.requires_grad]  # memory may allow only the head
        controls = list(model.control.buffers())  # type: ignore[union-attr]
        c = [t.detach().clone() for t in controls]
        mine = [
            torch.from_numpy(state[f"c{i}"]) if f"c{i}" in state else torch.zeros_like(p)
            for i, p in enumerate(params)
        ]
        start = [p.detach().clone() for p in params]
        generator = torch.Generator().manual_seed(seed)
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        model.train()
        total, seen, steps = 0.0, 0, 0
        for _ in range(self.epochs):
            order = torch.randperm(len(targets), generator=generator)
            for first in range(0, len(order), self.batch_size):
                batch = order[first : first + self.batch_size]
                loss = task_loss(model(inputs[batch]), targets[batch])
                grads = dict(zip(map(id, trains), torch.autograd.grad(loss, trains), strict=True))
                with torch.no_grad():
                    for p, ci, cg in zip(params, mine, c, strict=True):
                        if id(p) in grads:
                            p.add_(grads[id(p)] - ci + cg, alpha=-self.lr)
                total += loss.item() * len(batch)
                seen += len(batch)
                steps += 1
        with torch.no_grad():
            for i, (p, x0, ci, cg, slot) in enumerate(
                zip(params, start, mine, c, controls, strict=True)
            ):
                if not p.requires_grad or steps == 0:
                    continue  # no steps on it: cᵢ stays, and c + 0 travels
                updated = ci - cg + (x0 - p) / (steps * self.lr)
                slot.copy_(cg + (updated - ci))  # what travels: c + Δcᵢ
                state[f"c{i}"] = updated.numpy().astype(np.float32)
        return total / max(seen, 1)
