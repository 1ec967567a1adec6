"""Hierarchical aggregation: what a gateway does with its devices' updates (design §5.1).

A gateway is a server for its devices. Each global round it receives the global arrays, runs
``local_rounds`` device rounds (after each but the last it finalizes its devices' partial into its
own model, which its devices start the next one from), and sends the partial of its last local
round up: the same associative reduce as the server's, so a gateway's partial merges at its parent
exactly as a block partial does. With one local round a two-tier run differs from the flat star
only by how the partial is rounded on the uplink (``uplink``).

The grouping is fixed as everywhere else (``fedsim.core.reduce``): a gateway reduces its devices in
ascending id order, in ``block_size(len(devices))`` blocks; a parent merges its children's
partials in gateway order. Both execution modes call ``gateway_rounds`` (per-device mode from the
server, cohort mode on the worker that plays the gateway), so they give the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from fedsim.core.cohort import DeviceOutcome
from fedsim.core.payload import PayloadDtype, round_trip
from fedsim.core.reduce import WEIGHT_BYTES, Aggregator, Arrays, block_size, merge_blocks

__all__ = [
    "TIER_NAMES",
    "WEIGHT_BYTES",
    "LocalTrain",
    "combine_outcomes",
    "gateway_rounds",
    "tier_name",
    "uplink",
]

TIER_NAMES = {1: "device", 2: "gateway", 3: "edge"}


def tier_name(tier: int) -> str:
    """Tier 1: devices' own links; 2: gateways above devices; 3: edge servers above gateways."""
    return TIER_NAMES.get(tier, f"tier-{tier}")


# One local round at a gateway: (step, the arrays its devices receive, the devices still in,
# the reduction block size) → (block partials, blocks numbered by position in the gateway's
# device list // block size; one outcome per device).
LocalTrain = Callable[[int, Arrays, list[int], int], tuple[dict[int, Any], list[DeviceOutcome]]]


def gateway_rounds(
    aggregator: Aggregator[Any, Any, Arrays],
    received: Arrays,
    devices: Sequence[int],
    local_rounds: int,
    dtype: PayloadDtype,
    train: LocalTrain,
) -> tuple[Any, list[DeviceOutcome]]:
    """The partial a gateway sends up, and one outcome per device (in ``devices`` order).

    ``received``: the global arrays as the gateway received them. A device that fails in a local
    round sits out the rest of this global round; its outcome is the failure.
    """
    block = block_size(len(devices))
    arrays, active = received, list(devices)
    history: dict[int, list[DeviceOutcome]] = {d: [] for d in devices}
    partial = aggregator.zero()
    for step in range(1, local_rounds + 1):
        sent = received if step == 1 else round_trip(arrays, dtype)
        partials, outcomes = train(step, sent, active, block)
        partial = merge_blocks(aggregator, partials)
        for outcome in outcomes:
            history[outcome.device_id].append(outcome)
        active = [d for d in active if history[d] and history[d][-1].status == "ok"]
        if step < local_rounds:
            arrays = aggregator.finalize(arrays, partial)
    return partial, [combine_outcomes(d, history[d]) for d in devices]


def combine_outcomes(device_id: int, steps: Sequence[DeviceOutcome]) -> DeviceOutcome:
    """A device's global round from its local rounds: its first failure, or ``ok`` with the
    examples of every local round and the last round's loss and measurements."""
    if not steps:
        return DeviceOutcome(device_id, "no-reply")
    for outcome in steps:
        if outcome.status != "ok":
            return outcome
    if len(steps) == 1:
        return steps[0]
    return replace(steps[-1], num_examples=sum(o.num_examples for o in steps))


def uplink(partial: Any, dtype: PayloadDtype) -> tuple[Any, int]:
    """The partial as the parent receives it, and the bytes it takes on the uplink: the
    aggregator's partial encodes itself (``uplink(dtype)``: a weighted sum as per-tensor means,
    prototype reports as the devices sent them)."""
    encode = getattr(partial, "uplink", None)
    if encode is None:
        raise TypeError(
            f"a {type(partial).__name__} partial has no uplink(dtype) encoding, so it cannot "
            "cross a gateway: give the aggregator's partial one, or run without topology"
        )
    sent: tuple[Any, int] = encode(dtype)
    return sent
