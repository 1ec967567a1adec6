"""TinyReptile (Ren et al.; design §6.2): federated Reptile with online learning.

A device starts from θ and takes ``steps`` SGD steps of ``batch_size`` samples from its stream
(batch 1 = online: each sample seen once, then dropped); the server moves θ a fraction ε_t of the
way to the mean of what devices return: θ ← θ + ε_t·mean(φᵢ − θ). ε_t goes from ``epsilon`` to
``epsilon_end`` over the run (``schedule``). ``clients_per_round: 1`` is the paper's serial
processing; ``schedule: constant`` with ``epsilon: 1`` and one device per round is sequential
fine-tuning (θ becomes each device's φ in turn).

The default ε0 is Reptile's: its reference code takes ε0 = 1 only with a meta-batch of 5 tasks; with
one task per meta-step (serial processing) ε0 = 1 makes the early rounds sequential fine-tuning.
Unset, ε0 = min(1, ``SERIAL_EPSILON`` × the devices averaged that round): 0.25 serial (the best of
0.1-1.0 on omniglot-5way, docs/reproductions/meta.md), 1 from 4 devices a round on. It is a
default, not a law: 3,000 serial rounds on sine waves do better from ε0 = 1 (sine-tinyreptile.yaml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from fedsim.core.algorithms.base import (
    Algorithm,
    Learner,
    Problem,
    ServerRound,
    ServerState,
    schedule,
    step_toward,
)
from fedsim.core.reduce import Arrays
from fedsim.core.specs import BatchSize, Steps

if TYPE_CHECKING:
    from fedsim.core.scenario import Scenario

__all__ = ["SERIAL_EPSILON", "OnlineReptile", "TinyReptile"]

# ε0 for one device per round when the scenario sets none (measured: docs/reproductions/meta.md)
SERIAL_EPSILON = 0.25


class OnlineReptile(Algorithm):
    """Online steps on the device, a Reptile step on the server."""

    lr: float = Field(0.02, gt=0.0, description="device (inner) SGD learning rate")
    batch_size: BatchSize = Field(1, ge=1, description="samples per online step (1: one at a time)")
    steps: Steps = Field(5, ge=1, description="online SGD steps per device round")
    epsilon: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="server step size ε at round 1 (default: 0.25 per device averaged, at most 1)",
    )
    epsilon_end: float = Field(0.0, ge=0.0, le=1.0, description="ε approached at the end")
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="how ε goes from epsilon to epsilon_end over the rounds"
    )

    def learner(self) -> Learner:
        from fedsim.core.algorithms.local import OnlineSteps

        return OnlineSteps(self.lr, self.steps, self.batch_size)

    def samples_processed(self, num_examples: int) -> int:
        return self.steps * self.batch_size

    def update_weight(self, num_examples: int) -> int:
        """Samples processed, the same for every device: Reptile's mean over devices is uniform."""
        return self.samples_processed(num_examples)

    def start_epsilon(self, tasks: int) -> float:
        """ε0 for a round that averages ``tasks`` devices: ``epsilon``, else Reptile's choice (a
        mean over more tasks is a less noisy meta-gradient, so it may take a longer step)."""
        if self.epsilon is not None:
            return self.epsilon
        return min(1.0, SERIAL_EPSILON * max(tasks, 1))

    def server_lr(self, round_: int, rounds: int, tasks: int = 1) -> float:
        return schedule(self.start_epsilon(tasks), self.epsilon_end, self.schedule, round_, rounds)

    def server_step(
        self, global_arrays: Arrays, averaged: Arrays, info: ServerRound, state: ServerState
    ) -> Arrays:
        epsilon = self.server_lr(info.round, info.rounds, info.delivered)
        return step_toward(global_arrays, averaged, epsilon)


class TinyReptile(OnlineReptile):
    """TinyReptile: φ replaces θ in place on the device, which sends φ."""

    asynchronous: ClassVar[bool] = True  # FedBuff / FedAsync may replace its server step

    def problems(self, scenario: Scenario) -> list[Problem]:
        if scenario.asynchrony is not None and self.epsilon is not None:
            return [
                (
                    "algorithm.epsilon",
                    "under asynchrony the server step is FedBuff's or FedAsync's: epsilon (and "
                    "its schedule) would be ignored",
                    "set the server's step as asynchrony.server_lr and remove epsilon",
                )
            ]
        return []
