"""FedAvgM (Hsu, Qi and Brown, 2019, "Measuring the effects of non-identical data distribution").

Devices train as in FedAvg. The server treats Δ = θ − mean(θᵢ) as a pseudo-gradient and steps with
momentum: v ← β·v + Δ, θ ← θ − η·v. With β = 0 and η = 1 it is FedAvg (to float32 rounding:
θ − (θ − mean) is not the mean bit for bit; the test checks it). v is server state: fedsim keeps
it between rounds and in checkpoints.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedsim.core.algorithms import ServerRound, ServerState
from fedsim.core.algorithms.fedavg import SgdEpochs
from fedsim.core.reduce import Arrays

__all__ = ["FedAvgM"]


class FedAvgM(SgdEpochs):
    """FedAvgM (Hsu et al., 2019). Scenario keys: FedAvg's (``lr``, ``local_epochs``,
    ``batch_size``) plus ``eta`` and ``momentum``."""

    eta: float = Field(1.0, gt=0.0, description="server learning rate η")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="server momentum β")

    def server_step(
        self, global_arrays: Arrays, averaged: Arrays, info: ServerRound, state: ServerState
    ) -> Arrays:
        beta, eta = np.float32(self.momentum), np.float32(self.eta)
        stepped = []
        for name, theta, mean in zip(info.names, global_arrays, averaged, strict=True):
            key = f"velocity.{name}"
            velocity = beta * state.get(key, np.zeros_like(theta)) + (theta - mean)
            state[key] = velocity.astype(np.float32)
            stepped.append((theta - eta * state[key]).astype(np.float32))
        return stepped
