"""A round's plan and cost along an edge topology (``devices.topology``, design §5.1).

``plan_tiered`` extends the flat round plan (``devices.clock``) along the tree; a star is the
one-tier case (``one_tier``: no gateways, every device on the server), planned and costed as
``FleetCosts.plan`` and ``FleetCosts.finish`` would. The model goes down
each gateway's uplink; each device behind it then runs ``local_rounds`` device rounds (its own link
and compute, ``local_rounds`` times); the gateway's partial is ready when its last delivering
device is done, and goes up the uplink. A gateway's availability is its uplink's: offline when the
round starts, its devices cannot be reached (``gateway-down``); offline when its partial is ready,
the partial waits and goes up when the gateway reconnects (``late``), or is lost if that is after
the deadline (``gateway-lost``: its devices trained for nothing). Everything follows from the
scenario, never from wall time, so both execution modes plan the same round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from devices.clock import EMPTY_ROUND_S, DevicePlan, FleetCosts, stop_plan
from devices.cost import Activity
from devices.topology import Topology
from fedsim.core.hierarchy import WEIGHT_BYTES, tier_name
from fedsim.core.payload import payload_bytes

__all__ = [
    "GatewayRound",
    "TieredCost",
    "TieredPlan",
    "finish_tiered",
    "one_tier",
    "plan_tiered",
    "topology_summary",
]

GatewayStatus = Literal["up", "late", "lost", "down", "empty"]


def one_tier() -> Topology:
    """A star as a topology: no gateways, every device on the server directly."""
    return Topology(gateways=(), local_rounds=1, gateway_of={}, availability=())


@dataclass(frozen=True)
class GatewayRound:
    """One gateway in one round (times in seconds from the round's start)."""

    index: int
    status: GatewayStatus
    start_s: float = 0.0  # the model reached it
    down_s: float = 0.0  # the model's time on its uplink
    ready_s: float = 0.0  # its partial was ready
    up_s: float = 0.0  # its partial's time on its uplink
    arrive_s: float = math.inf  # its partial reached its parent
    bytes_down: int = 0
    bytes_up: int = 0  # planned (the partial of the devices planned to deliver)


@dataclass(frozen=True)
class TieredPlan:
    plans: list[DevicePlan]
    gateways: dict[int, GatewayRound]  # the gateways with selected devices below them


def _partial_bytes(costs: FleetCosts, device_ids: Sequence[int]) -> int:
    """A partial's bytes on an uplink: the tensors any of these devices sends, each as a mean in
    the payload's format with a float64 weight (``fedsim.core.hierarchy.uplink``)."""
    if not device_ids:
        return 0
    masks = [costs.sent(d) for d in device_ids]
    union = tuple(any(m[i] for m in masks) for i in range(len(masks[0])))
    return payload_bytes(costs.shapes, costs.scenario.fleet.payload_dtype, union) + WEIGHT_BYTES * (
        sum(union) + 1
    )


def plan_tiered(
    costs: FleetCosts, topology: Topology, selected: list[int], t: float, round_: int
) -> TieredPlan:
    """Each selected device's fate and each involved gateway's timeline, for the round at ``t``."""
    k, deadline = topology.local_rounds, costs.scenario.deadline_s
    model = costs.model.link
    below: dict[int, list[int]] = {}
    direct = []
    for d in selected:
        g = topology.gateway_of.get(d)
        if g is None:
            direct.append(d)
            continue
        for ancestor in topology.chain(g):
            below.setdefault(ancestor, []).append(d)
    start: dict[int, float] = {}
    reachable: dict[int, bool] = {}
    down: dict[int, float] = {}
    for g in topology.top_down():
        if g not in below:
            continue
        gateway = topology.gateways[g]
        parent = gateway.parent
        on, change = topology.availability[g].spell(g, t)
        down[g] = model.seconds(gateway.link_type, costs.bytes_down)
        start[g] = (0.0 if parent is None else start[parent]) + down[g]
        ok = parent is None or reachable[parent]
        reachable[g] = ok and on and change - t >= start[g]
    plans = {p.device_id: p for p in costs.plan(direct, t, round_)}
    device_until = costs.until(selected, t) if len(direct) < len(selected) else {}
    for d in selected:
        g = topology.gateway_of.get(d)
        if g is None:
            continue
        if not reachable[g]:
            plans[d] = DevicePlan(d, "gateway-down", costs.scope(d), 0, 0, 0.0, 0.0, 0.0)
            continue
        plan = costs.nominal(d, round_)
        if plan.fate != "train":
            plans[d] = plan
            continue
        plan = replace(
            plan,
            bytes_down=plan.bytes_down * k,
            bytes_up=plan.bytes_up * k,
            down_s=plan.down_s * k,
            compute_s=plan.compute_s * k,
            up_s=plan.up_s * k,
            start_s=start[g],
        )
        off = device_until.get(d, math.inf) - t
        if off < start[g] + plan.busy_s and (deadline is None or off < deadline):
            plan = stop_plan(plan, "dropout", max(0.0, off - start[g]))
        elif deadline is not None and start[g] + plan.busy_s > deadline:
            plan = stop_plan(plan, "straggler", max(0.0, deadline - start[g]))
        plans[d] = plan
    rounds: dict[int, GatewayRound] = {}
    for g in reversed(topology.top_down()):
        if g not in below:
            continue
        gateway = topology.gateways[g]
        if not reachable[g]:
            rounds[g] = GatewayRound(g, "down")
            continue
        if gateway.devices:
            going = [d for d in below[g] if plans[d].fate == "train"]
            ready = max((start[g] + plans[d].busy_s for d in going), default=None)
            nbytes = (
                sum(plans[d].bytes_up // k for d in going)
                if costs.fleet.missions is not None
                else _partial_bytes(costs, going)
            )
        else:
            arrived = [rounds[c] for c in gateway.children if rounds.get(c) and _sent(rounds[c])]
            ready = max((c.arrive_s for c in arrived), default=None)
            nbytes = (
                sum(c.bytes_up for c in arrived)
                if costs.fleet.missions is not None
                else _partial_bytes(costs, [d for d in below[g] if plans[d].fate == "train"])
            )
        base = GatewayRound(g, "empty", start[g], down[g], bytes_down=costs.bytes_down)
        if ready is None:  # nothing to send up
            rounds[g] = base
            continue
        up = model.seconds(gateway.link_type, nbytes)
        arrive, status = _upload(topology, g, t, ready, up, deadline)
        rounds[g] = replace(
            base, status=status, ready_s=ready, up_s=up, arrive_s=arrive, bytes_up=nbytes
        )
    for g in rounds:  # a lost partial loses everything below it
        if any(rounds[a].status == "lost" for a in topology.chain(g)):
            for d in below[g]:
                if plans[d].fate == "train":
                    plans[d] = replace(plans[d], fate="gateway-lost")
    return TieredPlan([plans[d] for d in selected], rounds)


MAX_SPELLS = 10_000  # outages an upload may wait through before the partial counts as lost


def _upload(
    topology: Topology, g: int, t: float, ready: float, up: float, deadline: float | None
) -> tuple[float, GatewayStatus]:
    """When gateway ``g``'s partial, ready ``ready`` s into the round at ``t``, is through its
    uplink (``up`` s): in the first online spell from then that holds the whole upload (an upload
    an outage cuts starts again). ``late`` if it waited for an outage; ``lost`` (inf) if it would
    arrive after the deadline."""
    start = ready
    for _ in range(MAX_SPELLS):
        if deadline is not None and start + up > deadline:
            break
        on, change = topology.availability[g].spell(g, t + start)
        if on and change - t >= start + up:
            return start + up, "late" if start > ready else "up"
        start = change - t  # offline: wait until it is back; cut mid-upload: wait for the next
    return math.inf, "lost"


def _sent(r: GatewayRound) -> bool:
    return r.status in ("up", "late")


@dataclass(frozen=True)
class TieredCost:
    round_s: float
    energy_mj: dict[int, float]
    busy_s: dict[int, float]
    gateway_energy_mj: float
    tiers: list[dict[str, float | int | str]]


def finish_tiered(
    costs: FleetCosts,
    topology: Topology,
    tiered: TieredPlan,
    delivered: set[int],
    uplink_bytes: dict[int, int],
) -> TieredCost:
    """The round's simulated duration, every device's and gateway's energy, and per tier its bytes
    and its share of the round's slowest branch. ``uplink_bytes``: what each gateway's partial
    actually took (none: it had nothing to send)."""
    deadline = costs.scenario.deadline_s
    plans = tiered.plans
    direct = [p for p in plans if p.device_id not in topology.gateway_of]
    # the branches the server waits for: every direct device that took part (as in a star,
    # a failed one too: the server cannot tell before its time is up) and every gateway under
    # the server whose partial goes up (even if all its devices failed)
    branches: list[tuple[float, list[tuple[int, float]]]] = []
    for p in direct:
        if p.fate not in ("memory-skip", "gateway-down"):
            branches.append((p.busy_s, [(1, p.busy_s)]))
    for g, r in tiered.gateways.items():
        if topology.gateways[g].parent is None and _sent(r):
            branches.append((r.arrive_s, _critical(topology, tiered, g)))
    took_part = [p for p in plans if p.fate not in ("memory-skip", "gateway-down")]
    missed = any(p.device_id not in delivered for p in took_part)
    if deadline is not None and (missed or not branches):
        round_s = deadline
    elif branches:
        round_s = max(b[0] for b in branches)
    else:
        round_s = EMPTY_ROUND_S
    energy, busy = {}, {}
    for p in plans:
        ok = p.device_id in delivered or p.fate == "gateway-lost"  # it worked in vain
        activity = p.activity(round_s, ok)
        device = costs.fleet[p.device_id]
        energy[p.device_id] = costs.model.energy.millijoules(device.profile, device.link, activity)
        busy[p.device_id] = activity.compute_s + activity.down_s + activity.up_s
    gateway_mj = 0.0
    params = sum(int(np.prod(s)) for s in costs.shapes)
    for gateway in topology.gateways:  # powered, whether or not the round needs it
        g = gateway.index
        r = tiered.gateways.get(g, GatewayRound(g, "empty"))
        updates = sum(1 for d in delivered if topology.gateway_of.get(d) == g)
        compute = costs.model.compute.seconds(
            gateway.profile, params * updates * topology.local_rounds
        )
        up = r.up_s if uplink_bytes.get(g) else 0.0
        idle = max(0.0, round_s - r.down_s - up - compute)
        activity = Activity(compute, r.down_s, up, idle)
        gateway_mj += costs.model.energy.millijoules(gateway.profile, gateway.link, activity)
    tiers: list[dict[str, float | int | str]] = []
    slowest = max(branches, default=(0.0, []))[1]
    for tier in range(1, topology.tiers + 1):
        if tier == 1:
            down = sum(p.bytes_down for p in plans)
            up = sum(
                p.bytes_up for p in plans if p.device_id in delivered or p.fate == "gateway-lost"
            )
            star = down + up
        else:
            level = [g for g in tiered.gateways if topology.gateways[g].tier == tier]
            down = sum(tiered.gateways[g].bytes_down for g in level)
            up = sum(uplink_bytes.get(g, 0) for g in level if _sent(tiered.gateways[g]))
            # a star through forwarding gateways: every device's own bytes cross this tier
            star = sum(
                p.bytes_down + (p.bytes_up if p.device_id in delivered else 0)
                for p in plans
                if tier in _tiers_above(topology, p.device_id)
            )
        seconds = sum(s for t, s in slowest if t == tier)
        tiers.append(
            {
                "tier": tier_name(tier),
                "bytes_down": down,
                "bytes_up": up,
                "star_bytes": star,
                "s": float(seconds),
            }
        )
    return TieredCost(round_s, energy, busy, gateway_mj, tiers)


def _tiers_above(topology: Topology, device_id: int) -> set[int]:
    g = topology.gateway_of.get(device_id)
    return set() if g is None else {topology.gateways[a].tier for a in topology.chain(g)}


def topology_summary(
    topology: Topology, rounds: Sequence[Sequence[dict[str, Any]]]
) -> dict[str, Any]:
    """The run's topology and, per tier, its bytes and time over ``rounds`` (each round's
    ``tiers``), with the backhaul (every tier above the devices) against a star's."""
    totals: dict[str, dict[str, float]] = {}
    for tiers in rounds:
        for t in tiers:
            into = totals.setdefault(
                str(t["tier"]), dict.fromkeys(("bytes_down", "bytes_up", "star_bytes", "s"), 0.0)
            )
            for key in into:
                into[key] += float(t[key])
    backhaul = sum(v["bytes_down"] + v["bytes_up"] for k, v in totals.items() if k != tier_name(1))
    star = sum(v["star_bytes"] for k, v in totals.items() if k != tier_name(1))
    return {
        "local_rounds": topology.local_rounds,
        "gateways": [
            {
                "name": g.name,
                "profile": g.profile.name,
                "link": g.link_type.kind,
                "tier": tier_name(g.tier),
                "parent": None if g.parent is None else topology.gateways[g.parent].name,
                "devices": len(g.devices),
            }
            for g in topology.gateways
        ],
        "tiers": {
            k: {key: (int(v) if key != "s" else float(f"{v:.9g}")) for key, v in into.items()}
            for k, into in totals.items()
        },
        "backhaul_bytes": int(backhaul),
        "backhaul_bytes_star": int(star),
        "backhaul_vs_star": float(f"{backhaul / star:.4g}") if star else None,
    }


def _critical(topology: Topology, tiered: TieredPlan, g: int) -> list[tuple[int, float]]:
    """(tier, seconds) along the slowest path below gateway ``g``: each gateway's uplink time
    (model down, partial up, and any wait for reconnection) and its devices' local rounds."""
    r = tiered.gateways[g]
    gateway = topology.gateways[g]
    own = (gateway.tier, r.down_s + (r.arrive_s - r.ready_s))
    if gateway.devices:
        return [own, (1, r.ready_s - r.start_s)]
    children = [c for c in gateway.children if c in tiered.gateways and _sent(tiered.gateways[c])]
    if not children:
        return [own]
    slowest = max(children, key=lambda c: tiered.gateways[c].arrive_s)  # it was ready then
    return [own, *_critical(topology, tiered, slowest)]
