"""A round through the run's topology (design §5.1): devices behind gateways, partials up.

A star is the one-tier topology (``devices.tiers.one_tier``): every device on the server, reduced
in blocks (``server.dispatch``), nothing more. Devices on the server directly are reduced so in
any topology. Each gateway with devices sent work runs
``fedsim.core.hierarchy.gateway_rounds``: in cohort mode on a worker node (the gateway is a Flower
node whose ClientApp fans out to its devices), in per-device mode here, one message per device
and local round (the server plays the gateway). Either way the leaf partials are the same; here
they go up the tree, each rounded on its uplink (``uplink``), edge servers merging their children
in gateway order, and the server merges its direct devices' partial, then its gateways' partials
in gateway order.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flwr.app import ArrayRecord

from fedsim.core.cohort import CohortOrder, DeviceOutcome
from fedsim.core.hierarchy import gateway_rounds, uplink
from fedsim.core.payload import round_trip, to_wire
from fedsim.core.reduce import Arrays, merge_blocks, reduce_blocks
from server.dispatch import (
    RoundContext,
    Work,
    collect,
    per_device_round,
    send_orders,
    send_per_device,
    worker_orders,
)

__all__ = ["tiered_round"]


def tiered_round(ctx: RoundContext, work: Work) -> tuple[Any, list[DeviceOutcome], dict[int, int]]:
    """The server's partial, every device's outcome, and each gateway's uplink bytes."""
    topology = ctx.topology
    aggregator, dtype = ctx.aggregator, ctx.scenario.fleet.payload_dtype
    direct = [d for d in work.devices if d not in topology.gateway_of]
    units: dict[int, list[int]] = {}  # leaf gateway → its devices sent work, ascending
    for d in work.devices:
        if (g := topology.gateway_of.get(d)) is not None:
            units.setdefault(g, []).append(d)
    run = _cohort if ctx.workers else _per_device
    root, leaves, outcomes = run(ctx, work, direct, dict(sorted(units.items())))
    arrived: dict[int, Any] = {}
    nbytes: dict[int, int] = {}
    for g in reversed(topology.top_down()):  # children before parents
        gateway = topology.gateways[g]
        if gateway.devices:
            if g not in leaves:
                continue
            partial = leaves[g]
        else:
            children = [c for c in gateway.children if c in arrived]
            if not children:
                continue
            partial = aggregator.zero()
            for c in children:
                partial = aggregator.merge(partial, arrived[c])
        arrived[g], nbytes[g] = uplink(partial, dtype)
    for gateway in topology.gateways:
        if gateway.parent is None and gateway.index in arrived:
            root = aggregator.merge(root, arrived[gateway.index])
    return root, outcomes, nbytes


def _per_device(
    ctx: RoundContext, work: Work, direct: list[int], units: dict[int, list[int]]
) -> tuple[Any, dict[int, Any], list[DeviceOutcome]]:
    """The server plays every gateway: one message per device and local round."""
    scenario = ctx.scenario
    dtype, upload = scenario.fleet.payload_dtype, scenario.upload
    root, outcomes = per_device_round(ctx, replace(work, devices=direct))
    if not units:  # a star: nobody behind a gateway
        return root, {}, outcomes
    k = scenario.local_rounds
    received = round_trip(ctx.global_arrays, dtype)
    node_to_device = ctx.node_to_device
    leaves = {}
    for g, ids in units.items():
        position = {d: i for i, d in enumerate(ids)}

        def train(
            step: int,
            arrays: Arrays,
            active: list[int],
            block: int,
            position: dict[int, int] = position,
        ) -> tuple[dict[int, Any], list[DeviceOutcome]]:
            each = {d: work.bytes_up[d] // k for d in active}  # planned for all k rounds
            payload = ArrayRecord(to_wire(arrays, dtype))
            local = replace(work, devices=active, bytes_up=each, payload=payload)
            replies = send_per_device(ctx, local, step)
            updates, done = collect(
                replies, node_to_device, local, arrays, upload, ctx.scenario.algorithm
            )
            placed = [(position[active[p]], u) for p, u in updates]
            return reduce_blocks(ctx.aggregator, placed, block), done

        leaves[g], done = gateway_rounds(ctx.aggregator, received, ids, k, dtype, train)
        outcomes += done
    return root, leaves, outcomes


def _cohort(
    ctx: RoundContext, work: Work, direct: list[int], units: dict[int, list[int]]
) -> tuple[Any, dict[int, Any], list[DeviceOutcome]]:
    """Direct devices in reduction blocks as in a star; each gateway on one worker: the node that
    plays it (node config ``gateway``), else the other workers round-robin (all of them if every
    node plays a gateway)."""
    played = set(ctx.gateway_nodes.values())  # a gateway's node runs that gateway only
    workers = [w for w in ctx.workers if w not in played] or ctx.workers
    direct_orders = (
        worker_orders(work.round, direct, len(workers), work.head_only) if direct else []
    )
    orders = dict(zip(workers, direct_orders, strict=False))
    shares: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    spread = 0
    for g, ids in units.items():
        node = ctx.gateway_nodes.get(g)
        if node is None:
            node, spread = workers[spread % len(workers)], spread + 1
        shares.setdefault(node, []).append((g, tuple(ids)))
    for node, share in shares.items():
        order = orders.get(node) or CohortOrder(work.round, [], 0, 1)
        heads = work.head_only.intersection(d for _, ids in share for d in ids)
        orders[node] = replace(order, gateways=tuple(share), head_only=order.head_only | heads)
    partials, leaves, outcomes = send_orders(ctx, sorted(orders.items()))
    return merge_blocks(ctx.aggregator, partials), leaves, outcomes
