"""TinyReptile (Ren et al.; DESIGN.md §6.2): federated Reptile with online learning.

A device starts from θ and takes ``steps`` SGD steps of ``batch_size`` samples from its stream
(batch 1 = online: each sample seen once, then dropped); the server moves θ a fraction ε_t of the
way to the mean of what devices return: θ ← θ + ε_t·mean(φᵢ − θ). ε_t goes from ``epsilon`` to
``epsilon_end`` over the run (``schedule``). ``clients_per_round: 1`` is the paper's serial
processing; ``schedule: constant`` with ``epsilon: 1`` and one device per round is sequential
fine-tuning (θ becomes each device's φ in turn).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedsim.core.algorithms.base import Algorithm, Learner, schedule
from fedsim.core.specs import BatchSize, Steps

__all__ = ["OnlineReptile", "TinyReptile"]


class OnlineReptile(Algorithm):
    """Online steps on the device, a Reptile step on the server."""

    lr: float = Field(0.02, gt=0.0, description="device (inner) SGD learning rate")
    batch_size: BatchSize = Field(1, ge=1, description="samples per online step (1: one at a time)")
    steps: Steps = Field(5, ge=1, description="online SGD steps per device round")
    epsilon: float = Field(1.0, gt=0.0, le=1.0, description="server step size ε at round 1")
    epsilon_end: float = Field(0.0, ge=0.0, le=1.0, description="ε approached at the end")
    schedule: Literal["linear", "cosine", "constant"] = "linear"

    def learner(self) -> Learner:
        from fedsim.core.algorithms.local import OnlineSteps

        return OnlineSteps(self.lr, self.steps, self.batch_size)

    def samples_processed(self, num_examples: int) -> int:
        return self.steps * self.batch_size

    def update_weight(self, num_examples: int) -> int:
        """Samples processed, the same for every device: Reptile's mean over devices is uniform."""
        return self.samples_processed(num_examples)

    def server_lr(self, round_: int, rounds: int) -> float:
        return schedule(self.epsilon, self.epsilon_end, self.schedule, round_, rounds)


class TinyReptile(OnlineReptile):
    """TinyReptile: φ replaces θ in place on the device, which sends φ."""
