"""Device-side learners: what one device does with the global model in one round."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fedsim.core.plugins import Plugins
from fedsim.core.scenario import AlgorithmSpec, FedProxSpec
from fedsim.core.state import DeviceState

__all__ = ["LEARNERS", "Learner", "LocalSgd"]


class Learner(Protocol):
    # True: ``state`` (the device's own, kept between rounds in the run's DeviceStateStore) is
    # loaded before and saved after each round; False: it is always empty and never stored.
    stateful: ClassVar[bool]

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        seed: int,
        state: DeviceState,
    ) -> float:
        """Train ``model`` in place on one device's data (may update ``state``); return the mean
        training loss."""
        ...


@dataclass(frozen=True)
class LocalSgd:
    """Mini-batch SGD for ``epochs`` passes; ``mu > 0`` adds FedProx's proximal term.

    FedProx (Li et al., 2020) minimises  CE(w) + mu/2 · ||w − w_t||²  where w_t is the global model
    received this round, which keeps heterogeneous devices from drifting far from it.
    """

    lr: float
    epochs: int
    batch_size: int
    mu: float = 0.0
    stateful: ClassVar[bool] = False

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        seed: int,
        state: DeviceState | None = None,
    ) -> float:
        generator = torch.Generator().manual_seed(seed)
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        anchor = [p.detach().clone() for p in model.parameters()] if self.mu > 0 else []
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        total, seen = 0.0, 0
        for _ in range(self.epochs):
            order = torch.randperm(len(targets), generator=generator)
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(model(inputs[batch]), targets[batch])
                objective = loss
                if anchor:
                    drift = sum(
                        ((p - a) ** 2).sum()
                        for p, a in zip(model.parameters(), anchor, strict=True)
                    )
                    objective = loss + 0.5 * self.mu * drift
                objective.backward()
                optimizer.step()
                total += loss.item() * len(batch)
                seen += len(batch)
        return total / max(seen, 1)


LearnerFactory = Callable[[AlgorithmSpec], Learner]
LEARNERS: Plugins[LearnerFactory] = Plugins("learner")


@LEARNERS.register("fedavg")
def _fedavg() -> LearnerFactory:
    return lambda spec: LocalSgd(spec.lr, spec.local_epochs, spec.batch_size)


@LEARNERS.register("fedprox")
def _fedprox() -> LearnerFactory:
    def make(spec: AlgorithmSpec) -> Learner:
        assert isinstance(spec, FedProxSpec)
        return LocalSgd(spec.lr, spec.local_epochs, spec.batch_size, mu=spec.mu)

    return make
