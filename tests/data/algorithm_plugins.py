"""Users' algorithms as a test names them by dotted path (``tests.data.algorithm_plugins:X``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fedsim.core.algorithms import Algorithm, Learner, ServerRound, ServerState
from fedsim.core.algorithms.fedavg import SgdEpochs
from fedsim.core.reduce import Arrays
from fedsim.core.state import DeviceState


class HalfStep(SgdEpochs):
    """FedAvg whose server moves halfway to the mean (a server step and a key of its own)."""

    share: float = Field(0.5, gt=0.0, le=1.0)

    def server_lr(self, round_: int, rounds: int) -> float:
        return self.share


class NoLearner(Algorithm):
    """Forgets its device side."""

    batch_size: int = 1

    def samples_processed(self, num_examples: int) -> int:
        return num_examples


class NotAnAlgorithm:
    """Has the methods but not the base class."""

    def learner(self) -> Learner:
        raise NotImplementedError


class BadChecks(SgdEpochs):
    """Its own scenario checks fail."""

    def problems(self, scenario: object) -> list[tuple[str, str, str]]:
        raise RuntimeError("boom")


class OddChecks(SgdEpochs):
    """Its own scenario checks answer in another form."""

    def problems(self, scenario: object) -> list[tuple[str, str, str]]:
        return ["not a triple"]  # type: ignore[list-item]


class MissionsOnly(SgdEpochs):
    """Class-incremental data without saying what a mission's report takes."""

    def missions(self) -> tuple[int, int | None]:
        return (2, None)


@dataclass(frozen=True)
class _CountThenFail:
    """Counts its rounds in the device's state, then fails on even device ids."""

    stateful: ClassVar[bool] = True

    def train(
        self, model: Any, x: NDArray[np.float32], y: NDArray[Any], seed: int, state: DeviceState
    ) -> float:
        state["rounds"] = np.asarray(int(state.get("rounds", np.asarray(0))) + 1)
        if int(np.asarray(seed)) >= 0 and len(y) % 2 == 0:
            raise RuntimeError("fails after changing its state")
        return 0.0


class CountThenFail(SgdEpochs):
    """A stateful device step that fails after changing the device's state."""

    def learner(self) -> Learner:
        return _CountThenFail()


class ServerMomentum(SgdEpochs):
    """FedAvg with server momentum: server state that must survive a resume."""

    momentum: float = 0.9

    def server_step(
        self, global_arrays: Arrays, averaged: Arrays, info: ServerRound, state: ServerState
    ) -> Arrays:
        stepped = []
        for name, theta, mean in zip(info.names, global_arrays, averaged, strict=True):
            velocity = np.float32(self.momentum) * state.get(name, np.zeros_like(theta))
            state[name] = (velocity + (theta - mean)).astype(np.float32)
            stepped.append((theta - state[name]).astype(np.float32))
        return stepped


class Float64State(ServerMomentum):
    """Keeps its server state in float64, which a checkpoint would round."""

    def server_step(
        self, global_arrays: Arrays, averaged: Arrays, info: ServerRound, state: ServerState
    ) -> Arrays:
        state["steps"] = np.zeros(1, np.float64)  # type: ignore[assignment]
        return averaged
