"""What a device sends after its round: which tensors, in the payload's format, checked finite.

One definition for every path that trains a device (``clients.work``: alone, in a cohort one by
one, or vectorised), so that each sends the same update: the same tensors (``sent_tensors``), the
same codec, the same weight, and never a NaN or inf that the server would average in.
"""

from __future__ import annotations

from torch import nn

from fedsim.core.algorithms import DeviceUpdate, NonFiniteUpdateError
from fedsim.core.models import head_parameters
from fedsim.core.payload import non_finite, sent_mask
from fedsim.core.reduce import Arrays
from fedsim.core.scenario import Scenario

__all__ = [
    "DeviceUpdate",
    "NonFiniteUpdateError",
    "check_finite",
    "device_update",
    "sent_tensors",
]


def sent_tensors(scenario: Scenario, model: nn.Module, head_only: bool) -> tuple[bool, ...]:
    """Which of the model's tensors a device uploads (``fedsim.core.payload.sent_mask``)."""
    head = head_parameters(model)
    names = list(model.state_dict())
    frozen = [scenario.algorithm.frozen(name) for name in names]
    heads = [name in head for name in names]
    return sent_mask(heads, head_only, scenario.algorithm.local_head, frozen)


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
