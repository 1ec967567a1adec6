"""Resolve a scenario's fleet: device ids, profiles from the registry, data partitions, faults.

Device ids are dense (0..N-1) in the order the groups are listed, and equal Flower's
``partition-id`` of the node that simulates the device in per-device mode.

A device's local data is either its share of a pooled dataset (indices fixed at resolution) or,
for a generated dataset, drawn from the seed and its id when it trains: resolving a fleet of
100,000 devices stores two integers per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from devices.availability import AlwaysOn, Availability, MarkovOnOff, TraceError, read_trace
from devices.cost import COST_MODELS
from fedsim.core.data import TaskData, load_task_data
from fedsim.core.errors import FedsimError, known_names
from fedsim.core.partition import partition_indices
from fedsim.core.profiles import DeviceProfile, LinkPower, LinkType
from fedsim.core.scenario import (
    DeviceGroup,
    DirichletPartition,
    MarkovAvailability,
    PartitionSpec,
    Scenario,
    TraceAvailability,
)
from fedsim.core.scenario_load import load_scenario, locate
from fedsim.core.seeds import derive_seed
from ontology.registry import DeviceRegistry, default_registry

__all__ = ["Device", "Fleet", "load_fleet", "resolve_fleet"]


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


DEFAULT_SAMPLES_PER_DEVICE = 32


@dataclass(frozen=True)
class Fleet:
    devices: tuple[Device, ...]
    data: TaskData
    seed: int
    partition: PartitionSpec
    availability: tuple[Availability, ...] = ()  # per group; empty: every device always on

    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, device_id: int) -> Device:
        return self.devices[device_id]

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

    def by_profile(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for device in self.devices:
            counts[device.profile.name] = counts.get(device.profile.name, 0) + 1
        return counts


def resolve_fleet(
    scenario: Scenario, registry: DeviceRegistry | None = None, base: Path | None = None
) -> Fleet:
    """Expand the scenario's device groups; raise ``FedsimError`` (dotted path) on bad names.

    ``base`` is the scenario file's folder, against which trace files are read."""
    registry = registry or default_registry()
    profiles = [
        registry.profile(group.profile, f"fleet.groups[{i}].profile")
        for i, group in enumerate(scenario.fleet.groups)
    ]
    links = [
        _link(registry, group, profile, f"fleet.groups[{i}].link")
        for i, (group, profile) in enumerate(zip(scenario.fleet.groups, profiles, strict=True))
    ]
    if scenario.fleet.cost_model not in COST_MODELS:
        raise FedsimError(
            "fleet.cost_model", known_names("cost model", scenario.fleet.cost_model, COST_MODELS)
        )
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
    devices: list[Device] = []
    availability: list[Availability] = []
    for i, group in enumerate(scenario.fleet.groups):
        first = len(devices)
        availability.append(
            _availability(scenario, group, range(first, first + group.count), base, i)
        )
        for _ in range(group.count):
            d = len(devices)
            devices.append(
                Device(d, i, profiles[i], group.faults.crash_prob, sizes[d], parts[d], *links[i])
            )
    empty = [d.device_id for d in devices if d.num_examples == 0]
    if empty:
        raise FedsimError(
            "fleet.partition",
            f"{len(empty)} devices get no training samples (e.g. device {empty[0]})",
            "raise alpha or min_partition_size, or use fewer devices",
        )
    always = all(isinstance(a, AlwaysOn) for a in availability)
    return Fleet(
        tuple(devices),
        data,
        scenario.seed,
        scenario.fleet.partition,
        () if always else tuple(availability),
    )


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
        return MarkovOnOff(scenario.seed, spec.mean_on_s, spec.mean_off_s)
    if isinstance(spec, TraceAvailability):
        path = (base or Path.cwd()) / spec.file
        return read_trace(path, f"fleet.groups[{i}].availability.file", devices)
    return AlwaysOn()


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
