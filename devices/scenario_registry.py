"""A scenario's registry: the installed catalog plus the Turtle files its ``registry.data`` names.

Both the fleet (device groups, registry queries) and the topology (gateways) read it, so it lives
here and neither imports the other for it. A device profile a user describes in ``registry.data``
is a profile like the catalog's: a group or a gateway may name it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fedsim.core.errors import FedsimError
from fedsim.core.scenario import Scenario
from ontology.fleet_registry import FleetRegistry
from ontology.registry import CATALOG_DIR, DeviceRegistry, default_registry
from ontology.store import open_store

__all__ = ["check_registry_data", "data_files", "open_registry", "scenario_profiles"]


def data_files(scenario: Scenario, base: Path | None) -> list[Path]:
    """``registry.data``'s files, each checked to be there."""
    assert scenario.registry is not None
    root = base or Path.cwd()
    for i, name in enumerate(scenario.registry.data):
        if not (root / name).is_file():
            raise FedsimError(
                f"registry.data[{i}]", f"no file {root / name}", "give a Turtle file's path"
            )
    return [root / name for name in scenario.registry.data]


def check_registry_data(scenario: Scenario, base: Path | None) -> None:
    """Parse ``registry.data`` alone (no catalog, no database): a located error if it is broken."""
    store = open_store("memory")
    try:
        store.load(data_files(scenario, base))  # UTF-8 and Turtle syntax, errors at file:line
    finally:
        store.close()


def open_registry(scenario: Scenario, base: Path | None) -> FleetRegistry:
    """The scenario's registry (catalog + ``registry.data``), or the catalog alone."""
    spec = scenario.registry
    if spec is None:
        return FleetRegistry.open()
    db = (base or Path.cwd()) / spec.db if spec.db is not None else None
    return FleetRegistry.open(data_files(scenario, base), spec.store, db)


def scenario_profiles(scenario: Scenario, base: Path | None) -> DeviceRegistry:
    """Device profiles and link types of the catalog and of ``registry.data``'s Turtle files (a
    profile described in both is an error naming the files); the catalog's alone without data."""
    if scenario.registry is None or not scenario.registry.data:
        return default_registry()
    files = data_files(scenario, base)
    return _profiles(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


@lru_cache(maxsize=4)
def _profiles(files: tuple[tuple[str, int, int], ...]) -> DeviceRegistry:
    """Read once per set of files and their versions (a changed file is read again)."""
    catalog = sorted(CATALOG_DIR.glob("*.ttl"))
    return DeviceRegistry.from_files([*catalog, *(Path(name) for name, _, _ in files)])
