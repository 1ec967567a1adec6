"""Federated TinyOL (Ren et al.; DESIGN.md §6.1): the model minus its last layer is a frozen
feature extractor (in flash); each device trains only the output layer, one SGD step per arriving
sample (batch 1), ``passes`` times over its stream, keeping nothing but the layer, with
``edge.online_head.OnlineHead`` (numpy, the firmware's reference). The server averages the layers
(FedAvg of heads). The one algorithm an attached microcontroller runs itself (``on_device``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from fedsim.core.algorithms.base import Algorithm, Learner
from fedsim.core.specs import Epochs

if TYPE_CHECKING:
    from fedsim.core.fleet_spec import AttachedSpec

__all__ = ["TinyOL"]


class TinyOL(Algorithm):
    lr: float = Field(0.01, gt=0.0, description="per-sample SGD learning rate")
    passes: Epochs = Field(1, ge=1, description="passes over the device's stream per round")

    def learner(self) -> Learner:
        from fedsim.core.algorithms.local import OnlineHeadLearner

        return OnlineHeadLearner(self.lr, self.passes)

    @property
    def on_device(self) -> bool:
        return True

    def attached_learner(self, attached: AttachedSpec) -> Learner:
        from fedsim.core.algorithms.attached import BridgedHeadLearner

        return BridgedHeadLearner(self.lr, self.passes, attached=attached)

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def head_only(self) -> bool:
        return True

    def samples_processed(self, num_examples: int) -> int:
        return num_examples * self.passes
