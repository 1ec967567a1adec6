"""FedProx (Li et al., 2020): FedAvg whose devices minimise CE(w) + mu/2·‖w − w_t‖², w_t the global
model received this round, which keeps heterogeneous devices from drifting far from it. The server
averages as FedAvg does."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fedsim.core.algorithms.base import Learner
from fedsim.core.algorithms.fedavg import SgdEpochs

__all__ = ["FedProx"]


class FedProx(SgdEpochs):
    asynchronous: ClassVar[bool] = True  # FedBuff / FedAsync may replace its server step
    mu: float = Field(0.01, ge=0.0, description="weight of the proximal term mu/2·||w - w_t||²")

    def learner(self) -> Learner:
        from fedsim.core.algorithms.local import LocalSgd

        return LocalSgd(self.lr, self.local_epochs, self.batch_size, mu=self.mu)

    @property
    def state_copies(self) -> int:
        return 1 if self.mu > 0 else 0  # the anchor w_t
