"""The plugin's algorithms, run by fedsim as a user would: through the installed entry points and
through dotted paths, in both execution modes, with fedsim's pytest plugin (``fedsim_run``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from custom_algorithms.fedavgm import FedAvgM

from fedsim.core.algorithms import ALGORITHMS, ServerRound
from fedsim.core.state import STATE_FILE, DeviceStateStore
from fedsim.pytest_plugin import FedsimRun, assert_converges, assert_same_run

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
SCENARIOS = Path(__file__).parents[1] / "scenarios"
Run = Callable[..., FedsimRun]
COHORT = {"execution.vectorize": False, "execution.actors": 2}


def test_the_installed_entry_points_are_found() -> None:
    assert {"fedavgm", "scaffold"} <= set(ALGORITHMS.names())


@pytest.mark.parametrize("name", ["fedavgm", "scaffold"])
def test_both_execution_modes_give_the_same_run_bit_for_bit(name: str, fedsim_run: Run) -> None:
    scenario = SCENARIOS / f"{name}.yaml"
    alone = fedsim_run(scenario, mode="per-device", rounds=4)
    cohort = fedsim_run(scenario, mode="cohort", rounds=4, changes=COHORT)
    assert_same_run(alone, cohort)  # rtol 0: identical rounds, devices.csv and model


def test_a_dotted_path_runs_the_same_algorithm_as_its_entry_point(fedsim_run: Run) -> None:
    scenario = SCENARIOS / "fedavgm.yaml"
    by_name = fedsim_run(scenario, rounds=2)
    by_path = fedsim_run(scenario, rounds=2, algorithm__kind="custom_algorithms.fedavgm:FedAvgM")
    assert_same_run(by_name, by_path)


def test_fedavgm_without_momentum_is_fedavg(fedsim_run: Run) -> None:
    scenario = SCENARIOS / "fedavgm.yaml"
    fedavgm = fedsim_run(scenario, rounds=3, algorithm__momentum=0.0, algorithm__eta=1.0)
    fedavg = fedsim_run(
        scenario,
        rounds=3,
        changes={"algorithm": {"kind": "fedavg", "lr": 0.1, "local_epochs": 2, "batch_size": 16}},
    )
    # θ − (θ − mean) is the mean to float32 rounding, not bit for bit
    assert_same_run(fedavgm, fedavg, rtol=1e-5, atol=1e-6)


def test_momentum_changes_the_model_and_its_server_step_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    theta = [rng.normal(size=(3, 2)).astype(np.float32)]
    means = [[rng.normal(size=(3, 2)).astype(np.float32)] for _ in range(3)]
    algorithm = FedAvgM.model_validate({"kind": "fedavgm", "eta": 0.5, "momentum": 0.9})
    state: dict[str, Any] = {}
    velocity = np.zeros((3, 2))
    expected = theta[0].astype(np.float64)
    for r, mean in enumerate(means, start=1):
        theta = algorithm.server_step(theta, mean, ServerRound(r, 3, 5, 10, ("w",)), state)
        velocity = 0.9 * velocity + (expected - mean[0])
        expected = expected - 0.5 * velocity
    np.testing.assert_allclose(theta[0], expected, rtol=1e-5)
    assert set(state) == {"velocity.w"}


def test_fedavgm_learns(fedsim_run: Run) -> None:
    assert_converges(fedsim_run(SCENARIOS / "fedavgm.yaml"), above=0.6, within=8)


def test_scaffold_learns_and_keeps_each_device_control_variate(fedsim_run: Run) -> None:
    run = fedsim_run(SCENARIOS / "scaffold.yaml", clients_per_round=10)
    assert_converges(run, above=0.6, within=8)
    with DeviceStateStore(Path(run.out) / STATE_FILE) as store:
        kept = store.get_many(list(range(10)))
    assert sorted(kept) == list(range(10))  # every device's cᵢ survived its rounds
    # full participation (|S|/N = 1) from c = cᵢ = 0: each round adds mean Δcᵢ to c, so the
    # server's c stays the mean of the devices' cᵢ
    controls = {k: v for k, v in run.model.items() if k.startswith("control.")}
    assert len(controls) == 4  # the mlp's two weights and two biases
    for i in range(4):
        mean = np.mean([kept[d][f"c{i}"] for d in range(10)], axis=0)
        assert np.abs(mean).max() > 0
        np.testing.assert_allclose(controls[f"control.c{i}"], mean, rtol=1e-3, atol=1e-5)


def test_the_scenarios_validate_against_the_schema_with_the_plugins_kinds() -> None:
    """The example's scenarios point editors at scenario.schema.json (fedsim schema --plugins, made
    with this plugin installed): it knows fedavgm's and scaffold's keys, and is up to date."""
    import json

    import jsonschema
    import yaml

    from fedsim.schema import scenario_json_schema

    committed = json.loads((SCENARIOS / "scenario.schema.json").read_text("utf-8"))
    fresh = scenario_json_schema(plugins={"fedavgm", "scaffold"})  # whatever else is installed
    fix = "regenerate: fedsim schema --plugins -o scenarios/scenario.schema.json (in the example)"
    assert committed == fresh, fix
    for path in sorted(SCENARIOS.glob("*.yaml")):
        assert path.read_text("utf-8").startswith(
            "# yaml-language-server: $schema=scenario.schema.json"
        )
        jsonschema.Draft202012Validator(committed).validate(yaml.safe_load(path.read_text("utf-8")))
    typo = {**yaml.safe_load((SCENARIOS / "fedavgm.yaml").read_text("utf-8"))}
    typo["algorithm"] = {**typo["algorithm"], "momentun": 0.9}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(committed).validate(typo)
