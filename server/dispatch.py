"""Sending a round's work and collecting it: one message per device (per-device mode) or one
``CohortOrder`` per worker (cohort mode), and the replies reduced into the round's partial.

The round's tree (gateways, partials up) is ``server.tiers``; this module is its two transports.
Per-device mode sends one message per device to that device's node. Cohort mode cuts the round's
sorted cohort into reduction blocks (``fedsim.core.reduce``), gives each worker node a contiguous
run of whole blocks, and merges the block partials the workers return. Either way the global model
is the same: same blocks, same order. A failed device in a cohort fails alone; a worker that fails
or does not reply takes down only the devices it was running.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from numpy.typing import NDArray
from torch import nn

from devices.clock import FleetCosts
from devices.fleet import Fleet
from devices.topology import Topology
from fedsim.core.algorithms import Algorithm, ModelAggregator, Received, ServerState
from fedsim.core.cohort import CohortOrder, CohortReply, DeviceOutcome
from fedsim.core.data import TaskData
from fedsim.core.payload import Upload, round_trip, to_wire
from fedsim.core.records import (
    ARRAYS,
    CONFIG,
    HEAD_ONLY,
    LOCAL_ROUND,
    MEASURED_MJ,
    MEASURED_S,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TRAIN_LOSS,
    DeviceStatus,
)
from fedsim.core.reduce import (
    Arrays,
    block_size,
    merge_blocks,
    reduce_blocks,
)
from fedsim.core.scenario import Scenario
from server.adapt import AdaptResult, HeldOutDevice

__all__ = [
    "NO_REPLY",
    "RoundContext",
    "Work",
    "collect",
    "per_device_round",
    "send_orders",
    "send_per_device",
    "worker_orders",
]


def collect(
    replies: Iterable[Message],
    node_to_device: dict[int, int],
    work: Work,
    base: Arrays,
    upload: Upload,
    algorithm: Algorithm,
) -> tuple[list[tuple[int, Any]], list[DeviceOutcome]]:
    """``(position, update)`` pairs in cohort order, and one outcome per device sent work.

    ``base``: the global arrays as devices received them (what sparse changes are added to);
    ``algorithm.decode_update`` makes each payload its update, or refuses it whole."""
    got: dict[int, Message] = {node_to_device[r.metadata.src_node_id]: r for r in replies}
    updates: list[tuple[int, Any]] = []
    outcomes = []
    for position, device_id in enumerate(work.devices):
        reply = got.get(device_id)
        if reply is None:
            outcomes.append(DeviceOutcome(device_id, "no-reply", error=NO_REPLY))
        elif reply.has_error():
            outcomes.append(DeviceOutcome(device_id, "failed", error=error_reason(reply)))
        else:
            record: ArrayRecord = reply.content[ARRAYS]  # type: ignore[assignment]
            wire = {k: a.numpy() for k, a in record.items()}
            size, planned = sum(a.nbytes for a in wire.values()), work.bytes_up[device_id]
            if size != planned:  # not what this round asked of it: refused, the device failed
                error = f"sent {size} bytes where the round planned {planned}: update refused"
                outcomes.append(DeviceOutcome(device_id, "failed", error=error))
                continue
            metrics = reply.content[METRICS]
            n = int(metrics[NUM_EXAMPLES])  # type: ignore[arg-type]
            loss = float(metrics[TRAIN_LOSS])  # type: ignore[arg-type]
            received = Received(f"{device_id}:{work.round}", n, loss, work.sent[device_id])
            try:
                update = algorithm.decode_update(wire, received, base, upload)
            except ValueError as exc:  # malformed or not finite: refused whole, the device failed
                outcomes.append(DeviceOutcome(device_id, "failed", error=str(exc)[:200]))
                continue
            updates.append((position, update))
            measured = [_optional(metrics.get(k)) for k in (MEASURED_S, MEASURED_MJ)]
            outcomes.append(DeviceOutcome(device_id, "ok", n, loss, "", *measured))
    return updates, outcomes


NO_REPLY = "no reply before round_timeout_s"


@dataclass
class RoundContext:
    """What every round of one run needs; ``global_arrays`` and ``clock`` change each round."""

    grid: Grid
    scenario: Scenario
    fleet: Fleet
    model: nn.Module
    data: TaskData
    aggregator: ModelAggregator
    costs: FleetCosts
    device_to_node: dict[int, int]  # per-device mode
    workers: list[int]  # cohort mode
    topology: Topology  # a star is the one-tier topology (``devices.tiers.one_tier``)
    global_arrays: Arrays
    clock: float = 0.0  # simulated seconds since the run started
    held_out: list[HeldOutDevice] = field(default_factory=list)  # evaluation.adapt
    adaptation: AdaptResult | None = None  # the latest one
    base_classes: NDArray[np.bool_] | None = None  # prototype averaging: the first seen classes
    server_state: ServerState = field(default_factory=dict)  # the algorithm's own, e.g. momentum
    gateway_nodes: dict[int, int] = field(default_factory=dict)  # cohort: gateway → its own node

    @property
    def node_to_device(self) -> dict[int, int]:
        return {n: d for d, n in self.device_to_node.items()}


@dataclass(frozen=True)
class Work:
    """The devices sent work this round (ascending) and what they were sent."""

    round: int
    devices: list[int]
    head_only: frozenset[int]
    payload: ArrayRecord
    bytes_up: dict[int, int]
    sent: dict[int, tuple[bool, ...]]  # which tensors each device uploads (changes of)


def _optional(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def per_device_round(ctx: RoundContext, work: Work) -> tuple[Any, list[DeviceOutcome]]:
    replies = send_per_device(ctx, work)
    upload = ctx.scenario.upload
    base = round_trip(ctx.global_arrays, upload.dtype)
    updates, outcomes = collect(
        replies, ctx.node_to_device, work, base, upload, ctx.scenario.algorithm
    )
    partials = reduce_blocks(ctx.aggregator, updates, block_size(len(work.devices)))
    return merge_blocks(ctx.aggregator, partials), outcomes


def send_per_device(ctx: RoundContext, work: Work, step: int = 0) -> Iterable[Message]:
    """One message per device of ``work``, to its node; the replies. ``step``: behind a
    gateway, which of its local rounds (0: none, a star's round)."""
    messages = []
    for d in work.devices:
        config = ConfigRecord({SERVER_ROUND: work.round, HEAD_ONLY: d in work.head_only})
        if step:
            config[LOCAL_ROUND] = step
        messages.append(
            Message(
                RecordDict({ARRAYS: work.payload, CONFIG: config}),
                dst_node_id=ctx.device_to_node[d],
                message_type=MessageType.TRAIN,
            )
        )
    return ctx.grid.send_and_receive(messages, timeout=ctx.scenario.execution.round_timeout_s)


def worker_orders(
    round_: int, selected: list[int], workers: int, head_only: frozenset[int] = frozenset()
) -> list[CohortOrder]:
    """Contiguous runs of whole reduction blocks, one per worker (fewer if blocks are few)."""
    block = block_size(len(selected))
    blocks = -(-len(selected) // block)
    orders = []
    for share in np.array_split(np.arange(blocks), min(workers, blocks)):
        first, end = int(share[0]) * block, min((int(share[-1]) + 1) * block, len(selected))
        ids = selected[first:end]
        orders.append(CohortOrder(round_, ids, first, block, head_only.intersection(ids)))
    return orders


def send_orders(
    ctx: RoundContext, orders: list[tuple[int, CohortOrder]]
) -> tuple[dict[int, Any], dict[int, Any], list[DeviceOutcome]]:
    """One order per worker node; the block partials, the gateway partials and the outcomes they
    reply with. A worker that fails or does not reply fails its devices."""
    if not orders:  # nobody was sent work: nothing to wait for
        return {}, {}, []
    payload = work_payload(ctx)
    messages = [
        Message(
            RecordDict({ARRAYS: payload, CONFIG: order.config()}),
            dst_node_id=worker,
            message_type=MessageType.TRAIN,
        )
        for worker, order in orders
    ]
    by_worker = dict(orders)
    replies = ctx.grid.send_and_receive(messages, timeout=ctx.scenario.execution.round_timeout_s)
    got = {r.metadata.src_node_id: r for r in replies}
    partials: dict[int, Any] = {}
    gateways: dict[int, Any] = {}
    outcomes: list[DeviceOutcome] = []
    for worker, order in by_worker.items():
        reply = got.get(worker)
        if reply is None or reply.has_error():  # the worker's devices share its fate
            status: DeviceStatus = "no-reply" if reply is None else "failed"
            reason = NO_REPLY if reply is None else error_reason(reply)
            devices = [*order.device_ids, *(d for _, ids in order.gateways for d in ids)]
            outcomes += [DeviceOutcome(d, status, error=reason) for d in devices]
            continue
        result = CohortReply.from_content(reply.content, ctx.aggregator)
        partials |= result.partials
        gateways |= result.gateway_partials
        outcomes += result.outcomes
    return partials, gateways, outcomes


def work_payload(ctx: RoundContext) -> ArrayRecord:
    """The global arrays as devices (and gateways) receive them."""
    return ArrayRecord(to_wire(ctx.global_arrays, ctx.scenario.fleet.payload_dtype))


def error_reason(reply: Message) -> str:
    return reply.error.reason.strip().splitlines()[-1][:200] if reply.error.reason else ""
