"""fedsim's CLI with a stateful learner whose state changes its training (a test driver)."""

import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import clients.work
from fedsim.core.algorithms.local import LocalSgd


@dataclass(frozen=True)
class DecayingSgd(LocalSgd):
    stateful: ClassVar[bool] = True

    def train(self, model, x, y, seed, state=None):
        seen = int(state.get("rounds", 0)) if state is not None else 0
        lr = self.lr / (1 + seen)  # a device's own schedule: wrong state, different training
        loss = LocalSgd(lr, self.epochs, self.batch_size).train(model, x, y, seed)
        if state is not None:
            state["rounds"] = np.asarray(seen + 1)
        return loss


clients.work._learner = lambda scenario: DecayingSgd(0.2, 1, 16)
from fedsim.cli import main  # noqa: E402

sys.argv[0] = "fedsim"
main()
