"""Check everything a run needs without running it: scenario, fleet, profiles, data split."""

from __future__ import annotations

from pathlib import Path

from devices.fleet import Fleet, resolve_fleet
from fedsim.core.errors import FedsimError
from fedsim.core.scenario import Scenario
from fedsim.core.scenario_load import load_scenario, locate

__all__ = ["plan"]


def plan(scenario_path: str | Path) -> tuple[Scenario, Fleet]:
    """The validated scenario and its resolved fleet; every error names file, line and key."""
    scenario = load_scenario(scenario_path)  # errors carry the file, line and key
    try:
        return scenario, resolve_fleet(scenario)
    except FedsimError as exc:  # these carry a dotted path into the scenario only
        raise locate(scenario_path, exc) from None
