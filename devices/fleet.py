"""Resolve a scenario's fleet: device ids, profiles from the registry, data partitions, faults.

Device ids are dense (0..N-1) in the order the groups are listed, and equal Flower's
``partition-id`` of the node that simulates the device in per-device mode.

A device's local data is either its share of a pooled dataset (indices fixed at resolution) or,
for a generated dataset, drawn from the seed and its id when it trains: resolving a fleet of
100,000 devices stores two integers per device.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import overload

import numpy as np
from numpy.typing import NDArray

from devices.availability import AlwaysOn, Availability, MarkovOnOff, TraceError, read_trace
from devices.cost import cost_model
from devices.fedscale import (
    FedScaleAvailability,
    client_index,
    on_grid,
    read_behaviour,
    read_capacity,
)
from devices.missions import RecurringMissions
from devices.scenario_registry import check_registry_data, open_registry, scenario_profiles
from devices.topology import Topology, resolve_topology
from fedsim.core.data import TaskData, load_task_data
from fedsim.core.errors import FedsimError, known_names
from fedsim.core.fleet_spec import FedScaleAvailability as FedScaleAvailabilitySpec
from fedsim.core.partition import partition_indices
from fedsim.core.profiles import DeviceProfile, LinkPower, LinkType
from fedsim.core.scenario import (
    AttachedSpec,
    DeviceGroup,
    DirichletPartition,
    MarkovAvailability,
    NaturalPartition,
    PartitionSpec,
    Scenario,
    TraceAvailability,
)
from fedsim.core.scenario_load import load_scenario, locate
from fedsim.core.seeds import derive_seed
from ontology.fleet_registry import query_path
from ontology.registry import DeviceRegistry

__all__ = [
    "Device",
    "Devices",
    "Fleet",
    "check_registry_data",
    "load_fleet",
    "open_registry",
    "resolve_fleet",
]


@dataclass(frozen=True)
class Device:
    device_id: int
    group: int
    profile: DeviceProfile
    crash_prob: float
    num_examples: int
    sample_indices: NDArray[np.int64] | None  # into a pooled dataset's training split
    link: LinkPower | None = None  # None: the device cannot communicate (not the case here)
    link_type: LinkType | None = None
    name: str | None = None  # its registry name and IRI, if its group selected registry devices
    iri: str | None = None
    sram_bytes: int | None = None  # free memory the registry gives it (else its profile's)
    flash_bytes: int | None = None
    attached: AttachedSpec | None = None  # a real device behind a serial bridge


DEFAULT_SAMPLES_PER_DEVICE = 32


class Devices(Sequence[Device]):
    """A fleet's devices in id order, by group: a group whose devices differ only in their id
    (one profile, generated data, no capacity trace) is one template ``Device``, and each of its
    devices is made when asked for. A million registered devices then cost no object each, where
    a ``Device`` object costs ~220 bytes; a round asks only for the devices it selected."""

    def __init__(self, blocks: Sequence[Device | list[Device]], counts: Sequence[int]) -> None:
        self._blocks = list(blocks)
        self._starts: list[int] = [0, *itertools.accumulate(counts)]
        self._made: dict[int, Device] = {}  # the devices made lately: a round asks each often

    def __len__(self) -> int:
        return int(self._starts[-1])

    @overload
    def __getitem__(self, index: int) -> Device: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Device]: ...
    def __getitem__(self, index: int | slice) -> Device | Sequence[Device]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        d = operator.index(index)
        if d < 0:
            d += len(self)
        if not 0 <= d < len(self):
            raise IndexError(f"device {index} is not in a fleet of {len(self)}")
        group = bisect.bisect_right(self._starts, d) - 1
        block = self._blocks[group]
        if isinstance(block, list):
            return block[d - self._starts[group]]
        device = self._made.get(d)
        if device is None:
            if len(self._made) >= MADE_DEVICES:
                self._made.clear()
            device = self._made[d] = replace(block, device_id=d)
        return device

    def __iter__(self) -> Iterator[Device]:
        for group, block in enumerate(self._blocks):
            if isinstance(block, list):
                yield from block
            else:
                starts = self._starts[group], self._starts[group + 1]
                yield from (replace(block, device_id=d) for d in range(*starts))  # not kept

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def alike(self) -> Iterator[tuple[Device, int]]:
        """Each device with the number of devices that differ from it only in their id (itself
        included): a template group is one entry, a listed device its own."""
        for group, block in enumerate(self._blocks):
            if isinstance(block, list):
                yield from ((device, 1) for device in block)
            else:
                start, end = self._starts[group], self._starts[group + 1]
                yield replace(block, device_id=start), end - start

    def by_profile(self) -> dict[str, int]:
        """Devices per profile name, in order of first appearance (templates not expanded)."""
        counts: dict[str, int] = {}
        for group, block in enumerate(self._blocks):
            if isinstance(block, list):
                for device in block:
                    counts[device.profile.name] = counts.get(device.profile.name, 0) + 1
            else:
                size = self._starts[group + 1] - self._starts[group]
                counts[block.profile.name] = counts.get(block.profile.name, 0) + size
        return counts


MADE_DEVICES = 1 << 16  # devices kept made (a cohort's worth); past it the cache starts afresh


@dataclass(frozen=True)
class Fleet:
    devices: Sequence[Device]
    data: TaskData
    seed: int
    partition: PartitionSpec
    availability: tuple[Availability, ...] = ()  # per group; empty: every device always on
    # class-incremental missions (classes per mission, samples per class or all): each round a
    # device learns new classes instead of revisiting its local data
    missions: tuple[int, int | None] | None = None
    topology: Topology | None = None  # gateways between devices and the server; None: a star
    # classes recur across devices and rounds (the reference environment's missions); None: every
    # class is dealt to one device once
    recurring: RecurringMissions | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, device_id: int) -> Device:
        return self.devices[device_id]

    def attach(self, device_id: int, spec: AttachedSpec) -> Fleet:
        """This fleet with device ``device_id`` on a serial bridge (a gateway's node config)."""
        devices = list(self.devices)
        devices[device_id] = replace(devices[device_id], attached=spec)
        return replace(self, devices=tuple(devices))

    def local_data(self, device_id: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The training samples ``(x, y)`` of one device, the same in every process."""
        device = self.devices[device_id]
        if device.sample_indices is not None:
            return self.data.x_train[device.sample_indices], self.data.y_train[
                device.sample_indices
            ]
        assert self.data.generate is not None
        probs = None
        if isinstance(self.partition, DirichletPartition):  # this device's label mixture
            rng = np.random.default_rng(derive_seed(self.seed, "labels", device_id))
            probs = rng.dirichlet(np.full(self.data.num_classes, self.partition.alpha))
        return self.data.generate(
            derive_seed(self.seed, "local-data", device_id), device.num_examples, probs
        )

    def round_data(
        self, device_id: int, round_: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """What the device learns from in ``round_``: its local data, or its mission's samples."""
        if self.missions is None:
            return self.local_data(device_id)
        return self.mission_data(device_id, round_)

    def mission_classes(self, device_id: int, round_: int) -> NDArray[np.int64]:
        """The classes of the device's mission in ``round_``: the classes are dealt out once
        (seeded), device i owning every N-th of them, and its mission in round r is its r-th slice
        of k classes (the slices of rounds it sits out are never learned). Empty when its classes
        are used up. With ``recurring`` missions: the classes its drawn samples belong to."""
        assert self.missions is not None
        if self.recurring is not None:
            rows = self.recurring.rows(device_id, round_)
            return np.unique(self.data.y_train[rows]).astype(np.int64)
        per = self.missions[0]
        order = np.random.default_rng(derive_seed(self.seed, "mission-classes")).permutation(
            self.data.num_classes
        )
        owned = order[device_id :: len(self.devices)]
        return np.sort(owned[(round_ - 1) * per : round_ * per]).astype(np.int64)

    def mission_rows(self, device_id: int, round_: int) -> NDArray[np.int64]:
        """Training rows of the device's mission: ``samples_per_class`` (or all) samples of each
        of its classes, drawn without replacement (seeded by class and device). With a natural
        partition a device learns from its own samples (its speaker saying the new word), else
        from the pool."""
        assert self.missions is not None
        if self.recurring is not None:
            return self.recurring.rows(device_id, round_)
        limit = self.missions[1]
        own = self.devices[device_id].sample_indices
        natural = isinstance(self.partition, NaturalPartition) and own is not None
        pool = own if natural and own is not None else np.arange(len(self.data.y_train))
        rows = []
        for c in self.mission_classes(device_id, round_).tolist():
            mine = pool[self.data.y_train[pool] == c]
            if limit is not None and limit < len(mine):
                rng = np.random.default_rng(derive_seed(self.seed, "mission-samples", c, device_id))
                mine = np.sort(rng.choice(mine, limit, replace=False))
            rows.append(mine)
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)

    def mission_data(
        self, device_id: int, round_: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The mission's labelled samples (``mission_rows``)."""
        index = self.mission_rows(device_id, round_)
        return self.data.x_train[index], self.data.y_train[index]

    def by_profile(self) -> dict[str, int]:
        if isinstance(self.devices, Devices):
            return self.devices.by_profile()
        counts: dict[str, int] = {}
        for device in self.devices:
            counts[device.profile.name] = counts.get(device.profile.name, 0) + 1
        return counts


def resolve_fleet(
    scenario: Scenario, registry: DeviceRegistry | None = None, base: Path | None = None
) -> Fleet:
    """Expand the scenario's device groups; raise ``FedsimError`` (dotted path) on bad names.

    ``base`` is the scenario file's folder, against which trace files are read."""
    registry = registry or scenario_profiles(scenario, base)
    members = _members(scenario, registry, base)  # per group: (registry name, profile) each
    links: dict[tuple[int, str], tuple[LinkPower, LinkType]] = {}
    for i, group in enumerate(scenario.fleet.groups):
        for m in members[i]:  # a profile group is one member repeated: resolved once
            if (i, m.profile.name) not in links:
                links[i, m.profile.name] = _link(
                    registry, group, m.profile, f"fleet.groups[{i}].link"
                )
    cost_model(scenario.fleet.cost_model)  # resolved and checked here, so validate catches it
    data = load_task_data(scenario.task.dataset, scenario.seed)
    size, per_device = scenario.fleet.size, scenario.fleet.samples_per_device
    parts: tuple[NDArray[np.int64] | None, ...]
    if data.generated:
        parts = (None,) * size
        sizes = [per_device or DEFAULT_SAMPLES_PER_DEVICE] * size
    elif per_device is not None:
        raise FedsimError(
            "fleet.samples_per_device",
            f"'{data.name}' is a pooled dataset: fleet.partition divides it among the devices",
            "remove samples_per_device (it applies to generated datasets such as 'blobs-784')",
        )
    else:
        parts = partition_indices(
            scenario.task.dataset, scenario.seed, scenario.fleet.partition, size
        )
        sizes = [len(p) for p in parts if p is not None]
    blocks: list[Device | list[Device]] = []
    availability: list[Availability] = []
    first = 0
    for i, group in enumerate(scenario.fleet.groups):
        availability.append(
            _availability(scenario, group, range(first, first + group.count), base, i)
        )
        capacity = _capacity(scenario, group, base, i)
        if group.profile is not None and capacity is None and data.generated:
            # every device alike but its id: one template stands for the whole group
            m = members[i][0]
            power, link_type = links[i, m.profile.name]
            template = Device(first, i, m.profile, group.faults.crash_prob, sizes[first], None)
            blocks.append(
                replace(template, link=power, link_type=link_type, attached=group.attached)
            )
            first += group.count
            continue
        block: list[Device] = []
        for local, m in enumerate(members[i]):
            d = first + local
            profile, (power, link_type) = m.profile, links[i, m.profile.name]
            if capacity is not None:
                profile, link_type = capacity(local, profile, link_type)
            block.append(
                Device(
                    d,
                    i,
                    profile,
                    group.faults.crash_prob,
                    sizes[d],
                    parts[d],
                    power,
                    link_type,
                    name=m.name,
                    iri=m.iri,
                    sram_bytes=m.sram_bytes,
                    flash_bytes=m.flash_bytes,
                    attached=group.attached,
                )
            )
        blocks.append(block)
        first += group.count
    devices = Devices(blocks, [g.count for g in scenario.fleet.groups])
    empty = [d for d, n in enumerate(sizes) if n == 0]
    if empty:
        raise FedsimError(
            "fleet.partition",
            f"{len(empty)} devices get no training samples (e.g. device {empty[0]})",
            "raise alpha or min_partition_size, or use fewer devices",
        )
    always = all(isinstance(a, AlwaysOn) for a in availability)
    topology = None
    if scenario.topology is not None:
        topology = resolve_topology(
            scenario, [d.group for d in devices], [d.name for d in devices], registry, base
        )
    return Fleet(
        devices,
        data,
        scenario.seed,
        scenario.fleet.partition,
        () if always else tuple(availability),
        scenario.algorithm.missions(),
        topology,
        _recurring(scenario, data, len(devices)),
    )


def _recurring(scenario: Scenario, data: TaskData, devices: int) -> RecurringMissions | None:
    """The reference environment's missions, if the algorithm asks for them."""
    missions = scenario.algorithm.missions()
    if missions is None or not scenario.algorithm.recurring_missions():
        return None
    per, limit = missions
    assert limit is not None  # the algorithm refuses recurring missions without a sample count
    return RecurringMissions(data.y_train, devices, per, limit, scenario.seed)


@dataclass(frozen=True)
class _Member:
    name: str | None
    iri: str | None
    profile: DeviceProfile
    sram_bytes: int | None = None
    flash_bytes: int | None = None


def _members(
    scenario: Scenario, registry: DeviceRegistry, base: Path | None
) -> list[list[_Member]]:
    """Each group's devices: ``count`` of its profile (unnamed), or ``count`` registry devices
    drawn with the seed from those its query returns, in name order."""
    members: list[list[_Member]] = []
    fleet_registry = None
    try:
        for i, group in enumerate(scenario.fleet.groups):
            if group.profile is not None:
                profile = registry.profile(group.profile, f"fleet.groups[{i}].profile")
                members.append([_Member(None, None, profile)] * group.count)
                continue
            assert group.query is not None
            if fleet_registry is None:
                fleet_registry = open_registry(scenario, base)
            where = f"fleet.groups[{i}].query"
            try:
                path = query_path(group.query, base)
            except FedsimError as exc:
                raise FedsimError(where, exc.what, exc.fix) from None
            rows = fleet_registry.query(path, group.bind, f"fleet.groups[{i}].bind")
            by_name = {str(r["name"]): r for r in rows if "name" in r}
            found = [by_name[name] for name in sorted(by_name)]
            if len(found) < group.count:
                raise FedsimError(
                    where,
                    f"'{group.query}' {group.bind or ''} selects {len(found)} registry devices, "
                    f"the group asks for {group.count}",
                    "lower count, or register more devices (registry.data)",
                )
            rng = np.random.default_rng(derive_seed(scenario.seed, "group", i))
            chosen = sorted(rng.choice(len(found), size=group.count, replace=False).tolist())
            members.append(
                [
                    _Member(
                        str(found[c]["name"]),
                        found[c].get("device"),
                        registry.profile(str(found[c]["profile"]), where),
                        found[c].get("ram"),
                        found[c].get("flash"),
                    )
                    for c in chosen
                ]
            )
    finally:
        if fleet_registry is not None:
            fleet_registry.close()
    if fleet_registry is None and scenario.registry is not None and scenario.registry.data:
        check_registry_data(scenario, base)  # no group reads it: a broken file must still fail
    return members


def _link(
    registry: DeviceRegistry, group: DeviceGroup, profile: DeviceProfile, where: str
) -> tuple[LinkPower, LinkType]:
    """The group's link: the one it names, or the profile's preferred one."""
    power = profile.link(group.link)
    if power is None:
        if group.link is None:
            raise FedsimError(
                where, f"profile '{profile.name}' has no link in the catalog", "add one to it"
            )
        raise FedsimError(
            where, known_names(f"link of '{profile.name}'", group.link, profile.radios)
        )
    return power, registry.link_type(power.kind, where)


def _availability(
    scenario: Scenario, group: DeviceGroup, devices: range, base: Path | None, i: int
) -> Availability:
    spec = group.availability
    if isinstance(spec, MarkovAvailability):
        return MarkovOnOff(scenario.seed, spec.mean_on_s, spec.mean_off_s, devices)
    if isinstance(spec, TraceAvailability):
        path = (base or Path.cwd()) / spec.file
        return read_trace(path, f"fleet.groups[{i}].availability.file", devices)
    if isinstance(spec, FedScaleAvailabilitySpec):
        where = f"fleet.groups[{i}].availability.file"
        trace = read_behaviour((base or Path.cwd()) / spec.file, where)
        return FedScaleAvailability(trace, devices.start, spec.assign, scenario.seed, spec.start_s)
    return AlwaysOn()


_Derive = Callable[[int, DeviceProfile, LinkType], tuple[DeviceProfile, LinkType]]


def _capacity(scenario: Scenario, group: DeviceGroup, base: Path | None, i: int) -> _Derive | None:
    """The group's per-device profile and link from a FedScale capacity trace: device i gets
    trace client i's compute factor (its clock divided by it, so compute time scales by it) and
    bandwidth. Values are rounded to a 0.5 % grid (``on_grid``), and a derived profile or link is
    made once per grid value and shared by its devices: a few thousand objects for any fleet."""
    spec = group.capacity
    if spec is None:
        return None
    trace = read_capacity((base or Path.cwd()) / spec.file, f"fleet.groups[{i}].capacity.file")
    (speed, factor), (width, bps) = on_grid(trace.compute_factor()), on_grid(trace.throughput_bps())
    clients = client_index(
        np.arange(group.count), len(trace), spec.assign, scenario.seed, "capacity"
    )
    profiles: dict[tuple[int, str], DeviceProfile] = {}
    links: dict[tuple[int, str], LinkType] = {}

    def derive(
        local: int, profile: DeviceProfile, link: LinkType
    ) -> tuple[DeviceProfile, LinkType]:
        c = int(clients[local])
        p, k = (int(speed[c]), profile.name), (int(width[c]), link.kind)
        if p not in profiles:
            clock = profile.clock_mhz / float(factor[c])
            profiles[p] = profile.model_copy(update={"clock_mhz": clock})
        if k not in links:
            links[k] = link.model_copy(update={"throughput_bps": float(bps[c])})
        return profiles[p], links[k]

    return derive


@lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[int, int]) -> tuple[Scenario, Fleet]:
    scenario = load_scenario(path)  # errors carry the file, line and key
    try:
        return scenario, resolve_fleet(scenario, base=Path(path).parent)
    except TraceError:  # already names the trace file and line
        raise
    except FedsimError as exc:  # these carry a dotted path into the scenario only
        raise locate(path, exc) from None


def load_fleet(path: str | Path) -> tuple[Scenario, Fleet]:
    """The validated scenario at ``path`` and its resolved fleet (``fedsim validate``'s check).

    Every error names the file, line and key. Cached per process until the file changes: the
    ServerApp and every ClientApp (one per message) need them, and Ray actors live long.
    """
    try:
        stat = Path(path).stat()
    except OSError:
        load_scenario(path)  # raises the located "no such file" error
        raise
    return _load(str(path), (stat.st_mtime_ns, stat.st_size))
