"""FedAvg (McMahan et al., 2017): each device runs mini-batch SGD epochs from the global model; the
server takes the example-weighted mean. With ``batch_size`` ≥ a device's samples and one epoch,
each device takes one full-batch gradient step per round: FedSGD, the jointly trained model."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fedsim.core.algorithms.base import Algorithm, Learner
from fedsim.core.specs import BatchSize, Epochs

__all__ = ["FedAvg", "SgdEpochs"]


class SgdEpochs(Algorithm):
    """Devices run ``local_epochs`` passes of mini-batch SGD (FedAvg's device side)."""

    lr: float = Field(0.1, gt=0.0, description="device SGD learning rate")
    local_epochs: Epochs = Field(1, ge=1, description="passes over the device's data per round")
    batch_size: BatchSize = Field(16, ge=1, description="samples per SGD step")

    def learner(self) -> Learner:
        from fedsim.core.algorithms.local import LocalSgd

        return LocalSgd(self.lr, self.local_epochs, self.batch_size)

    def samples_processed(self, num_examples: int) -> int:
        return num_examples * self.local_epochs


class FedAvg(SgdEpochs):
    """FedAvg: ``SgdEpochs`` on the device, the weighted mean on the server (the defaults)."""

    asynchronous: ClassVar[bool] = True  # FedBuff / FedAsync may replace its server step
