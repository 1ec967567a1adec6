"""Edge topologies (design §5.1): devices behind gateways, gateways behind edge servers.

``resolve_topology`` turns the scenario's ``topology`` into a ``Topology``: each gateway's profile,
uplink (its link power from the profile, its link technology from the catalog), parent, devices
(by count, fleet group, id, registry name or registry query) and availability. Devices behind no
gateway reach the server directly.

A gateway's availability is its uplink's (``devices.tiers`` plans rounds with it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from devices.availability import MarkovOnOff
from devices.scenario_registry import open_registry
from fedsim.core.errors import FedsimError, known_names
from fedsim.core.hierarchy import tier_name
from fedsim.core.profiles import DeviceProfile, LinkPower, LinkType
from fedsim.core.scenario import GatewaySpec, MarkovAvailability, Outages, Scenario
from fedsim.core.seeds import derive_seed
from ontology.fleet_registry import FleetRegistry, query_path
from ontology.registry import DeviceRegistry

__all__ = ["Gateway", "GatewayAvailability", "Topology", "resolve_topology"]


class GatewayAvailability(Protocol):
    def spell(self, gateway: int, t: float) -> tuple[bool, float]:
        """Whether the gateway is online at ``t``, and when that changes (inf: never)."""
        ...


class _Always:
    def spell(self, gateway: int, t: float) -> tuple[bool, float]:
        return True, math.inf


class _Markov:
    def __init__(self, chain: MarkovOnOff) -> None:
        self.chain = chain

    def spell(self, gateway: int, t: float) -> tuple[bool, float]:
        on, end = self.chain.spell(np.array([gateway], np.int64), t)
        return bool(on[0]), float(end[0])


class _Outages:
    def __init__(self, spells: Sequence[tuple[float, float]]) -> None:
        self.spells = sorted(spells)

    def spell(self, gateway: int, t: float) -> tuple[bool, float]:
        for start, end in self.spells:
            if start <= t < end:
                return False, end
        later = [start for start, _ in self.spells if start > t]
        return True, min(later, default=math.inf)


@dataclass(frozen=True)
class Gateway:
    index: int
    name: str
    profile: DeviceProfile
    link: LinkPower
    link_type: LinkType
    parent: int | None  # a gateway index, or None: the server
    devices: tuple[int, ...]  # ascending device ids (a leaf gateway)
    children: tuple[int, ...]  # gateway indices (an edge server)
    tier: int  # of its uplink: 2 above devices, 3 above gateways, ...


@dataclass(frozen=True)
class Topology:
    gateways: tuple[Gateway, ...]
    local_rounds: int
    gateway_of: dict[int, int]  # device id → its gateway (absent: on the server directly)
    availability: tuple[GatewayAvailability, ...]

    @property
    def tiers(self) -> int:
        return max((g.tier for g in self.gateways), default=1)

    def top_down(self) -> list[int]:
        """Gateway indices, every parent before its children."""
        order: list[int] = []
        stack = [g.index for g in reversed(self.gateways) if g.parent is None]
        while stack:
            g = stack.pop()
            order.append(g)
            stack += reversed(self.gateways[g].children)
        return order

    def chain(self, g: int) -> list[int]:
        """``g`` and the gateways above it, up to the one under the server."""
        out = [g]
        while (parent := self.gateways[out[-1]].parent) is not None:
            out.append(parent)
        return out

    def describe(self) -> list[str]:
        """One line per gateway: what is below it, where it reports, over which link."""
        lines = []
        for g in self.gateways:
            below = f"{len(g.devices)} devices" if g.devices else f"{len(g.children)} gateways"
            above = "the server" if g.parent is None else self.gateways[g.parent].name
            lines.append(
                f"gateway {g.name} ({g.profile.name}): {below} → {above} over "
                f"{g.link_type.kind} ({tier_name(g.tier)} tier)"
            )
        if self.local_rounds > 1:
            lines.append(f"gateways aggregate {self.local_rounds} local rounds per global round")
        return lines


def _availability(scenario: Scenario, spec: GatewaySpec) -> GatewayAvailability:
    a = spec.availability
    if isinstance(a, MarkovAvailability):
        seed = derive_seed(scenario.seed, "gateway-availability")
        return _Markov(MarkovOnOff(seed, a.mean_on_s, a.mean_off_s))
    if isinstance(a, Outages):
        return _Outages([(s.start_s, s.end_s) for s in a.spells])
    return _Always()


def _members(
    scenario: Scenario,
    spec: GatewaySpec,
    where: str,
    groups: Sequence[int],
    names: Sequence[str | None],
    taken: dict[int, str],
    base: Path | None,
    fleet_registry: FleetRegistry | None,
) -> tuple[int, ...]:
    """The fleet devices ``spec.devices`` selects (``groups``/``names``: per device id)."""
    how = spec.devices
    assert how is not None
    if how.count is not None:
        free = [d for d in range(len(groups)) if d not in taken]
        if how.count > len(free):
            raise FedsimError(
                f"{where}.count",
                f"{how.count} devices asked for, {len(free)} are behind no gateway yet",
                "lower count, or add devices to fleet.groups",
            )
        return tuple(free[: how.count])
    if how.groups is not None:
        return tuple(d for d, g in enumerate(groups) if g in set(how.groups))
    if how.ids is not None:
        return tuple(sorted(set(how.ids)))
    by_name = {n: d for d, n in enumerate(names) if n is not None}
    if how.names is not None:
        unknown = [n for n in how.names if n not in by_name]
        if unknown:
            raise FedsimError(
                f"{where}.names",
                known_names("fleet device", unknown[0], by_name)
                if by_name
                else f"no fleet device is named '{unknown[0]}' (only registry groups name them)",
                "name devices a fleet group selected from the registry (a query group)",
            )
        return tuple(sorted(by_name[n] for n in how.names))
    assert how.query is not None
    assert fleet_registry is not None
    try:
        path = query_path(how.query, base)
    except FedsimError as exc:
        raise FedsimError(f"{where}.query", exc.what, exc.fix) from None
    rows = fleet_registry.query(path, how.bind, f"{where}.bind")
    found = sorted(by_name[str(r["name"])] for r in rows if str(r.get("name")) in by_name)
    if not found:
        raise FedsimError(
            f"{where}.query",
            f"'{how.query}' {how.bind or ''} selects no device of this fleet",
            "check the query's bindings, or select the fleet's devices from the registry",
        )
    return tuple(found)


def resolve_topology(
    scenario: Scenario,
    groups: Sequence[int],
    names: Sequence[str | None],
    registry: DeviceRegistry,
    base: Path | None = None,
) -> Topology | None:
    """The scenario's topology over a fleet whose devices have these groups and registry names;
    None without a ``topology`` section. Errors name the dotted path."""
    spec = scenario.topology
    if spec is None:
        return None
    # the scenario's registry, read once: for devices selected by query, and for the profile and
    # uplink of a gateway that gives none (the registry's Gateway of the same name)
    queried = any(g.devices is not None and g.devices.query for g in spec.gateways)
    unstated = scenario.registry is not None and any(
        not (g.profile and g.link) for g in spec.gateways
    )
    with ExitStack() as stack:
        fleet_registry = None
        known: dict[str, dict[str, str]] = {}
        if queried or unstated:
            fleet_registry = stack.enter_context(open_registry(scenario, base))
        if unstated and fleet_registry is not None:
            rows = fleet_registry.query("gateways")
            known = {str(r["name"]): {k: str(v) for k, v in r.items()} for r in rows}
        return _resolve(scenario, groups, names, registry, base, fleet_registry, known)


def _resolve(
    scenario: Scenario,
    groups: Sequence[int],
    names: Sequence[str | None],
    registry: DeviceRegistry,
    base: Path | None,
    fleet_registry: FleetRegistry | None,
    known: dict[str, dict[str, str]],
) -> Topology:
    spec = scenario.topology
    assert spec is not None
    taken: dict[int, str] = {}
    members: list[tuple[int, ...]] = []
    links: list[tuple[DeviceProfile, LinkPower, LinkType]] = []
    for i, g in enumerate(spec.gateways):
        where = f"topology.gateways[{i}]"
        listed = known.get(g.name, {})
        profile = registry.profile(g.profile or listed.get("profile") or "rpi4", f"{where}.profile")
        link = g.link or listed.get("uplink")
        power = profile.link(link)
        if power is None:
            raise FedsimError(
                f"{where}.link",
                known_names(f"link of '{profile.name}'", link or "", profile.radios)
                if link
                else f"profile '{profile.name}' has no link",
                "name one of its links, or another profile",
            )
        links.append((profile, power, registry.link_type(power.kind, f"{where}.link")))
        ids: tuple[int, ...] = ()
        if g.devices is not None:
            where_d = f"{where}.devices"
            ids = _members(scenario, g, where_d, groups, names, taken, base, fleet_registry)
            for d in ids:
                if d in taken:
                    raise FedsimError(
                        f"{where}.devices",
                        f"device {d} is already behind gateway '{taken[d]}'",
                        "attach each device to one gateway",
                    )
                taken[d] = g.name
            if not ids:
                raise FedsimError(
                    f"{where}.devices", f"selects no device for '{g.name}'", "select some"
                )
        members.append(ids)
    index = {g.name: i for i, g in enumerate(spec.gateways)}
    parents = [None if g.parent is None else index[g.parent] for g in spec.gateways]
    children = [tuple(c for c, p in enumerate(parents) if p == i) for i in range(len(parents))]

    order, stack = [], [i for i, p in enumerate(parents) if p is None]  # a tree (validated)
    while stack:
        order.append(stack.pop())
        stack += children[order[-1]]
    tiers: dict[int, int] = {}
    for i in reversed(order):  # children first: 2 above devices, one more per level of gateways
        tiers[i] = 2 if not children[i] else 1 + max(tiers[c] for c in children[i])
    gateways = tuple(
        Gateway(i, g.name, *links[i], parents[i], members[i], children[i], tiers[i])
        for i, g in enumerate(spec.gateways)
    )
    gateway_of = {d: i for i, ids in enumerate(members) for d in ids}
    availability = tuple(_availability(scenario, g) for g in spec.gateways)
    return Topology(gateways, spec.local_rounds, gateway_of, availability)
