"""Users' algorithms as a test names them by dotted path (``tests.data.algorithm_plugins:X``)."""

from __future__ import annotations

from pydantic import Field

from fedsim.core.algorithms import Algorithm, Learner
from fedsim.core.algorithms.fedavg import SgdEpochs


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
