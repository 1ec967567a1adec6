"""Device-side steps the algorithms build: mini-batch SGD epochs (FedAvg, FedProx, FedIns), online
SGD steps over a device's stream (TinyReptile, TinyMetaFed) and TinyOL's online head.

An algorithm's module builds them in its ``learner()``; this module imports torch, the algorithm
modules do not (a scenario validates without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from edge.online_head import OnlineHead, RunningNorm
from fedsim.core.algorithms.feature_norm import NormalizedLinear
from fedsim.core.models import sgd_step, task_loss
from fedsim.core.state import DeviceState

__all__ = ["LocalSgd", "OnlineHeadLearner", "OnlineSteps", "sgd_steps", "stream_order"]


@dataclass(frozen=True)
class LocalSgd:
    """Mini-batch SGD for ``epochs`` passes; ``mu > 0`` adds FedProx's proximal term;
    ``key_weight`` λ > 0 trains on (1 − λ)·loss + λ·``model.last_key_loss`` (FedIns's pools).

    FedProx (Li et al., 2020) minimises  CE(w) + mu/2 · ||w − w_t||²  where w_t is the global model
    received this round, which keeps heterogeneous devices from drifting far from it.
    """

    lr: float
    epochs: int
    batch_size: int
    mu: float = 0.0
    key_weight: float = 0.0
    stateful: ClassVar[bool] = False

    def vectorized(self) -> LocalSgd | None:
        """Itself if ``clients.vectorized`` may train many devices of it at once (FedProx's term
        and FedIns's key loss included); None for a subclass, which may train differently."""
        return self if type(self) is LocalSgd else None

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState | None = None,
    ) -> float:
        generator = torch.Generator().manual_seed(seed)
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        anchor = [p.detach().clone() for p in model.parameters()] if self.mu > 0 else []
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)
        model.train()
        total, seen = 0.0, 0
        for _ in range(self.epochs):
            order = torch.randperm(len(targets), generator=generator)
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = task_loss(model(inputs[batch]), targets[batch])
                objective = loss
                if anchor:
                    drift = sum(
                        ((p - a) ** 2).sum()
                        for p, a in zip(model.parameters(), anchor, strict=True)
                    )
                    objective = loss + 0.5 * self.mu * drift
                if self.key_weight > 0:
                    key_loss: torch.Tensor = model.last_key_loss  # type: ignore[assignment]
                    objective = (1 - self.key_weight) * objective + self.key_weight * key_loss
                torch.autograd.backward(objective)
                optimizer.step()
                total += loss.item() * len(batch)
                seen += len(batch)
        return total / max(seen, 1)


def stream_order(n: int, length: int, seed: int) -> torch.Tensor:
    """The order a device's stream presents its ``n`` samples: ``length`` indices, a seeded
    permutation repeated (a fresh one each pass) when the round needs more than ``n``."""
    generator = torch.Generator().manual_seed(seed)
    passes = [torch.randperm(n, generator=generator) for _ in range(-(-length // n))]
    return torch.cat(passes)[:length]


def sgd_steps(
    model: nn.Module,
    params: list[nn.Parameter],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    lr: float,
    batch_size: int,
) -> tuple[float, int]:
    """Plain SGD on ``params`` over ``order`` in batches; (sum of batch losses × size, samples)."""
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        loss = task_loss(model(inputs[batch]), targets[batch])
        if params:
            sgd_step(params, loss, lr)
        total += loss.item() * len(batch)
    return total, len(order)


@dataclass(frozen=True)
class OnlineSteps:
    """TinyReptile's device side: from θ, ``steps`` SGD steps of ``batch_size`` samples each,
    taken from the device's stream in order (batch 1: each sample is used once, as it arrives,
    and dropped: nothing is kept but the model)."""

    lr: float
    steps: int
    batch_size: int
    stateful: ClassVar[bool] = False

    def vectorized(self) -> OnlineSteps | None:
        """Itself if ``clients.vectorized`` may train many devices of it at once; None for a
        subclass, which may train differently."""
        return self if type(self) is OnlineSteps else None

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState | None = None,
    ) -> float:
        order = stream_order(len(y), self.steps * self.batch_size, seed)
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        total, seen = sgd_steps(
            model, params, torch.from_numpy(x), torch.from_numpy(y), order, self.lr, self.batch_size
        )
        return total / max(seen, 1)


@dataclass(frozen=True)
class OnlineHeadLearner:
    """TinyOL on a simulated device: features from the frozen model body (computed as the device's
    extractor would, one forward pass), then ``OnlineHead`` takes one SGD step per sample on the
    last layer, ``passes`` times over the stream in order; the layer is written back into the
    model. Softmax cross-entropy for class labels, ½·squared error for regression targets.

    A ``NormalizedLinear`` output layer (``TinyOL.normalize``) standardises each feature with its
    running statistics first (``RunningNorm``, resumed from the layer's, updated sample by sample
    and written back). The statistics depend on the features alone, not on the weights, so the
    stream is standardised before the steps: an attached device (``BridgedHeadLearner.steps``)
    then runs the same plain steps on the same inputs. Nothing but the last layer changes."""

    lr: float
    passes: int
    stateful: ClassVar[bool] = False

    def vectorized(self) -> OnlineHeadLearner | None:
        """Itself if ``batched_head.BatchedOnlineHead`` may train many devices of it at once; None
        for a subclass (``BridgedHeadLearner`` steps on a real device)."""
        return self if type(self) is OnlineHeadLearner else None

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState | None = None,
    ) -> float:
        head = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
        if not isinstance(head, nn.Linear):
            raise TypeError("tinyol trains a linear output layer; this model ends in a Conv2d")
        captured: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            with torch.no_grad():
                model.eval()
                model(torch.from_numpy(x))
        finally:
            hook.remove()
        order = stream_order(len(y), len(y) * self.passes, seed).numpy()
        features = captured[0].numpy().astype(np.float32)[order]
        norm = None
        if isinstance(head, NormalizedLinear):
            norm = _resumed_norm(head)
            features = np.stack([_standardised(norm, f) for f in features])
        weight, bias, total = self.steps(
            OnlineHead(
                head.weight.detach().numpy().copy(),
                head.bias.detach().numpy().copy(),
                self.lr,
                "mse" if y.dtype.kind == "f" else "softmax",
            ),
            features,
            y[order],
        )
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(weight))
            head.bias.copy_(torch.from_numpy(bias))
            if isinstance(head, NormalizedLinear) and norm is not None:  # for mypy: both
                head.norm_mean.copy_(torch.from_numpy(norm.mean))
                head.norm_var.copy_(torch.from_numpy(norm.var))
                head.norm_count.fill_(float(norm.count))
        return total / max(len(order), 1)

    def steps(
        self, online: OnlineHead, features: NDArray[np.float32], y: NDArray[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], float]:
        """One SGD step per sample, in the order given; the trained layer and the summed loss.
        (``attached.BridgedHeadLearner`` runs these steps on a real device instead.)"""
        total = sum(online.step(features[i], y[i]) for i in range(len(y)))
        return online.weight, online.bias, total


def _resumed_norm(head: NormalizedLinear) -> RunningNorm:
    """The running statistics a ``NormalizedLinear`` holds (the federation's, averaged)."""
    return RunningNorm.resume(
        head.norm_mean.detach().numpy(),
        head.norm_var.detach().numpy(),
        round(float(head.norm_count)),
    )


def _standardised(norm: RunningNorm, feature: NDArray[np.float32]) -> NDArray[np.float32]:
    """What ``OnlineHead`` with a norm feeds its layer: update the statistics, then apply them."""
    norm.update(feature)
    return norm.apply(feature)
