"""Resolve a scenario's fleet: device ids, profiles from the registry, data partitions, faults.

Device ids are dense (0..N-1) in the order the groups are listed, and equal Flower's
``partition-id`` of the node that simulates the device in per-device mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedsim.core.errors import FedsimError
from fedsim.core.partition import partition_indices
from fedsim.core.profiles import DeviceProfile
from fedsim.core.scenario import Scenario
from fedsim.core.scenario_load import load_scenario, locate
from ontology.registry import DeviceRegistry, default_registry

__all__ = ["Device", "Fleet", "load_fleet", "resolve_fleet"]


@dataclass(frozen=True)
class Device:
    device_id: int
    group: int
    profile: DeviceProfile
    crash_prob: float
    sample_indices: NDArray[np.int64]  # into the dataset's training split

    @property
    def num_examples(self) -> int:
        return len(self.sample_indices)


@dataclass(frozen=True)
class Fleet:
    devices: tuple[Device, ...]

    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, device_id: int) -> Device:
        return self.devices[device_id]

    def by_profile(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for device in self.devices:
            counts[device.profile.name] = counts.get(device.profile.name, 0) + 1
        return counts


def resolve_fleet(scenario: Scenario, registry: DeviceRegistry | None = None) -> Fleet:
    """Expand the scenario's device groups; raise ``FedsimError`` (dotted path) on bad names."""
    registry = registry or default_registry()
    profiles = [
        registry.profile(group.profile, f"fleet.groups[{i}].profile")
        for i, group in enumerate(scenario.fleet.groups)
    ]
    parts = partition_indices(
        scenario.task.dataset, scenario.seed, scenario.fleet.partition, scenario.fleet.size
    )
    devices: list[Device] = []
    for i, group in enumerate(scenario.fleet.groups):
        for _ in range(group.count):
            device_id = len(devices)
            devices.append(
                Device(device_id, i, profiles[i], group.faults.crash_prob, parts[device_id])
            )
    empty = [d.device_id for d in devices if d.num_examples == 0]
    if empty:
        raise FedsimError(
            "fleet.partition",
            f"{len(empty)} devices get no training samples (e.g. device {empty[0]})",
            "raise alpha or min_partition_size, or use fewer devices",
        )
    return Fleet(tuple(devices))


@lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[int, int]) -> tuple[Scenario, Fleet]:
    scenario = load_scenario(path)  # errors carry the file, line and key
    try:
        return scenario, resolve_fleet(scenario)
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
