"""What a device sends after its round: which tensors, in the payload's format, checked finite.

One definition for every path that trains a device (``clients.work``: alone, in a cohort one by
one, or vectorised), so that each sends the same update: the same tensors (``sent_tensors``), the
same codec, the same weight, and never a NaN or inf that the server would average in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from torch import nn

from devices.footprint import head_parameters
from fedsim.core.cohort import DeviceOutcome
from fedsim.core.payload import non_finite, sent_mask
from fedsim.core.prototypes import ClassSums
from fedsim.core.reduce import Arrays, ModelUpdate
from fedsim.core.scenario import Scenario

__all__ = [
    "DeviceUpdate",
    "NonFiniteUpdateError",
    "check_finite",
    "device_update",
    "sent_tensors",
]


@dataclass(frozen=True)
class DeviceUpdate:
    arrays: Arrays  # as the server receives them (rounded to the payload's number format)
    num_examples: int
    train_loss: float
    trained: tuple[bool, ...] | None = None  # which tensors trained (None: all)
    wire: dict[str, NDArray[np.generic]] | None = None  # what it sends (``Scenario.upload``)
    report: ClassSums | None = None  # prototype averaging: its mission's per-class sums
    measured_s: float | None = None  # an attached device's own measurements of its training
    measured_mj: float | None = None

    def outcome(self, device_id: int) -> DeviceOutcome:
        return DeviceOutcome(
            device_id,
            "ok",
            self.num_examples,
            self.train_loss,
            "",
            self.measured_s,
            self.measured_mj,
        )

    def update(self, mission: str = "") -> ModelUpdate | ClassSums:
        """What the aggregator accumulates; ``mission`` names a report ("device:round")."""
        if self.report is not None:
            return replace(self.report, mission=mission)
        if self.trained is None:
            return (self.arrays, self.num_examples)
        return (self.arrays, self.num_examples, self.trained)


def sent_tensors(scenario: Scenario, model: nn.Module, head_only: bool) -> tuple[bool, ...]:
    """Which of the model's tensors a device uploads (``fedsim.core.payload.sent_mask``)."""
    head = head_parameters(model)
    names = list(model.state_dict())
    frozen = [scenario.algorithm.frozen(name) for name in names]
    heads = [name in head for name in names]
    return sent_mask(heads, head_only, scenario.algorithm.local_head, frozen)


class NonFiniteUpdateError(ValueError):
    """A device's training diverged (NaN or inf in its loss or its model): the device fails."""


def check_finite(
    scenario: Scenario, model: nn.Module, trained: Arrays, sent_arrays: Arrays, loss: float
) -> None:
    """Raise ``NonFiniteUpdateError`` when the update diverged, or when it is finite but not in
    the payload's number format (float16 holds at most 65504): the server would average inf."""
    names = list(model.state_dict())
    problem = non_finite(names, trained, loss)
    if problem:
        fix = "the local training diverged: lower algorithm.lr (or check the data for NaN)"
        raise NonFiniteUpdateError(f"{problem}; {fix}")
    problem = non_finite(names, sent_arrays, loss)
    if problem:
        dtype = scenario.fleet.payload_dtype
        raise NonFiniteUpdateError(
            f"{problem} as sent in {dtype}: the update exceeds {dtype}'s range; "
            "use fleet.payload_dtype: float32, or lower algorithm.lr"
        )


def device_update(
    scenario: Scenario,
    model: nn.Module,
    trained: Arrays,
    global_arrays: Arrays,
    sent: tuple[bool, ...],
    num_examples: int,
    loss: float,
    measured: tuple[float | None, float | None] = (None, None),
) -> DeviceUpdate:
    """What a device that trained ``trained`` from ``global_arrays`` sends, as the server will
    decode it: one definition for the sequential and the vectorised path."""
    wire = scenario.upload.encode(trained, global_arrays, sent)
    arrays = scenario.upload.decode(wire, global_arrays, sent)
    check_finite(scenario, model, trained, arrays, loss)
    weight = scenario.algorithm.update_weight(num_examples)
    mask = None if all(sent) else sent
    return DeviceUpdate(arrays, weight, loss, mask, wire, None, *measured)
