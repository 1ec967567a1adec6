"""Federated TinyOL (Ren et al.; DESIGN.md §6.1): the model minus its last layer is a frozen
feature extractor (in flash); each device trains only the output layer, one SGD step per arriving
sample (batch 1), ``passes`` times over its stream, keeping nothing but the layer, with
``edge.online_head.OnlineHead`` (numpy, the firmware's reference). The server averages the layers
(FedAvg of heads). The one algorithm an attached microcontroller runs itself (``on_device``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from edge.online_head import OnlineHead
from fedsim.core.algorithms.base import Algorithm, Learner
from fedsim.core.specs import Epochs
from fedsim.core.state import DeviceState

if TYPE_CHECKING:
    from torch import nn

__all__ = ["OnlineHeadLearner", "TinyOL"]


class TinyOL(Algorithm):
    lr: float = Field(0.01, gt=0.0, description="per-sample SGD learning rate")
    passes: Epochs = Field(1, ge=1, description="passes over the device's stream per round")

    def learner(self) -> OnlineHeadLearner:
        return OnlineHeadLearner(self.lr, self.passes)

    @property
    def on_device(self) -> bool:
        return True

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def head_only(self) -> bool:
        return True

    def samples_processed(self, num_examples: int) -> int:
        return num_examples * self.passes


@dataclass(frozen=True)
class OnlineHeadLearner:
    """TinyOL on a simulated device: features from the frozen model body (computed as the device's
    extractor would, one forward pass), then ``OnlineHead`` takes one SGD step per sample on the
    last layer, ``passes`` times over the stream in order; the layer is written back into the
    model. Softmax cross-entropy for class labels, ½·squared error for regression targets."""

    lr: float
    passes: int
    stateful: ClassVar[bool] = False

    def train(
        self,
        model: nn.Module,
        x: NDArray[np.float32],
        y: NDArray[Any],
        seed: int,
        state: DeviceState | None = None,
    ) -> float:
        import torch
        from torch import nn

        from fedsim.core.algorithms.local import stream_order

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
        features = captured[0].numpy().astype(np.float32)
        order = stream_order(len(y), len(y) * self.passes, seed).numpy()
        weight, bias, total = self.steps(
            OnlineHead(
                head.weight.detach().numpy().copy(),
                head.bias.detach().numpy().copy(),
                self.lr,
                "mse" if y.dtype.kind == "f" else "softmax",
            ),
            features[order],
            y[order],
        )
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(weight))
            head.bias.copy_(torch.from_numpy(bias))
        return total / max(len(order), 1)

    def steps(
        self, online: OnlineHead, features: NDArray[np.float32], y: NDArray[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], float]:
        """One SGD step per sample, in the order given; the trained layer and the summed loss.
        (``clients.bridged`` runs these steps on a real device instead.)"""
        total = sum(online.step(features[i], y[i]) for i in range(len(y)))
        return online.weight, online.bias, total


_: type[Learner] = OnlineHeadLearner  # it satisfies the protocol
