"""Scenario loading: every shipped scenario validates; bad input gives pinned, located messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from devices.fleet import load_fleet as plan
from fedsim.core.errors import FedsimError
from fedsim.core.scenario import DirichletPartition, FedProxSpec
from fedsim.core.scenario_load import ScenarioError, load_scenario
from tests.conftest import SCENARIOS, tiny_scenario

Write = Callable[..., Path]


@pytest.mark.parametrize("path", sorted(SCENARIOS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    scenario, fleet = plan(path)

    assert len(fleet) == scenario.fleet.size > 0
    assert all(d.num_examples > 0 for d in fleet.devices)


def test_extends_merges_child_over_base() -> None:
    scenario = load_scenario(SCENARIOS / "quickstart-fedprox.yaml")
    base = load_scenario(SCENARIOS / "quickstart.yaml")

    assert isinstance(scenario.algorithm, FedProxSpec)
    assert scenario.algorithm.mu == 0.05
    assert scenario.algorithm.lr == base.algorithm.lr  # inherited
    assert scenario.fleet == base.fleet
    assert scenario.digest() != base.digest()


def test_digest_ignores_key_order_and_defaults(write_scenario: Write) -> None:
    data = tiny_scenario()
    reordered = dict(reversed(list(data.items())))
    explicit = tiny_scenario(evaluation={"every": 1})

    digests = {
        load_scenario(write_scenario(d, f"{i}.yaml")).digest()
        for i, d in enumerate((data, reordered, explicit))
    }

    assert len(digests) == 1


def _error_lines(path: Path) -> list[str]:
    with pytest.raises(FedsimError) as info:
        plan(path)
    return info.value.lines()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"roundz": 3},
            r"s\.yaml:\d+: roundz: unknown key 'roundz' \(did you mean 'rounds'\?\); known keys: "
            r"algorithm, clients_per_round, .*rounds, seed, task, topology$",
        ),
        (
            {"algorithm": {"kind": "fedavg", "lrr": 0.1}},
            r"s\.yaml:\d+: algorithm\.lrr: unknown key 'lrr' \(did you mean 'lr'\?\); "
            r"known keys: batch_size, kind, local_epochs, lr$",
        ),
        (
            {"rounds": "ten"},
            r"s\.yaml:\d+: rounds: expected an integer, got 'ten' \(str\); write a whole number",
        ),
        (
            {"rounds": "3"},  # strict: a quoted number is a string, not silently an int
            r"rounds: expected an integer, got '3' \(str\)",
        ),
        (
            {"algorithm": {"kind": "fedavgg"}},
            r"algorithm: unknown kind 'fedavgg' \(did you mean 'fedavg'\?\); "
            r"known kinds: fedavg, fedprox, tinyreptile, tinymetafed, tinyol, prototypes, fedins$",
        ),
        (
            {"task": {"dataset": "digit"}},
            r"task\.dataset: unknown dataset 'digit'; known: (\S+, )*digits, (\S+, )*\S+ "
            r"\(did you mean 'digits'\?\)$",
        ),
        (
            {"task": {"model": "mpl"}},
            r"task\.model: unknown model 'mpl'; known: conv4, conv4-proto, logreg, mlp, mlp-100, "
            r"mlp-proto, ssf-vit, tanh-64x2 "
            r"\(did you mean 'mlp'\?\)$",
        ),
        (
            {
                "fleet": {
                    "groups": [{"profile": "rpi4", "count": 2}, {"profile": "esp32-s4", "count": 1}]
                }
            },
            r"s\.yaml:\d+: fleet\.groups\[1\]\.profile: unknown profile 'esp32-s4'; "
            r"known: esp32-s3, .*\(did you mean 'esp32-s3'\?\)$",
        ),
        (
            {"fleet": {"groups": [{"profile": "rpi4", "count": 0}]}},
            r"fleet\.groups\[0\]\.count: must be at least 1, got 0 \(int\); "
            r"use a value at least 1$",
        ),
        (
            {"clients_per_round": 50},
            r"s\.yaml:\d+: clients_per_round: 50 devices per round, but the fleet has only 5; "
            r"set it to at most 5",
        ),
        (
            {"execution": {"engine": "rai"}},
            r"execution\.engine: 'rai' is not allowed \(did you mean 'ray'\?\); "
            r"use 'auto', 'ray' or 'inline'$",
        ),
        (
            {
                "fleet": {
                    "groups": [{"profile": "rpi4", "count": 5}],
                    "partition": {"kind": "dirichlet", "alpha": -1},
                }
            },
            r"fleet\.partition\.alpha: must be greater than 0\.0, got -1 \(int\)",
        ),
    ],
)
def test_bad_input_is_one_located_line(write_scenario: Write, change: dict, expected: str) -> None:
    path = write_scenario(tiny_scenario(**change), "s.yaml")

    lines = _error_lines(path)

    assert len(lines) == 1, lines
    assert lines[0].startswith(str(path))
    assert re.search(expected, lines[0]), lines[0]


def test_line_numbers_point_at_the_key(write_scenario: Write) -> None:
    path = write_scenario(
        "name: t\nfleet:\n  groups:\n    - profile: rpi4\n      count: x\n"
        "algorithm: {kind: fedavg}\nrounds: 1\n"
    )

    lines = _error_lines(path)

    assert lines == [
        f"{path}:5: fleet.groups[0].count: expected an integer, got 'x' (str); "
        "write a whole number, e.g. 10"
    ]


def test_several_problems_are_all_reported(write_scenario: Write) -> None:
    data = tiny_scenario(seed="x")
    del data["rounds"]
    path = write_scenario(data)

    lines = _error_lines(path)

    assert len(lines) == 2
    assert any("rounds: required key is missing; add 'rounds'" in line for line in lines)
    assert any("seed: expected an integer, got 'x'" in line for line in lines)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FedsimError, match=r"nope\.yaml: no such file; check the path"):
        plan(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(write_scenario: Write) -> None:
    path = write_scenario("name: x\nfleet: [\n")

    with pytest.raises(FedsimError, match=rf"{path}:3: invalid YAML: .*; fix the syntax"):
        load_scenario(path)


def test_top_level_must_be_a_mapping(write_scenario: Write) -> None:
    with pytest.raises(FedsimError, match=r"scenario\.yaml:1: expected a scenario: a mapping of keys, got list"):
        load_scenario(write_scenario("- 1\n"))


def test_extends_cycle_is_an_error(write_scenario: Write) -> None:
    write_scenario("extends: b.yaml\n", "a.yaml")
    path = write_scenario("extends: a.yaml\n", "b.yaml")

    with pytest.raises(FedsimError, match=r"extends: cycle back to"):
        load_scenario(path)


def test_extends_reports_errors_in_the_base_file(write_scenario: Write) -> None:
    write_scenario(tiny_scenario(rounds="many"), "base.yaml")
    child = write_scenario({"extends": "base.yaml", "name": "child"}, "child.yaml")

    with pytest.raises(ScenarioError, match=r"base\.yaml:\d+: rounds: expected an integer"):
        load_scenario(child)


def test_impossible_dirichlet_split_is_explained(write_scenario: Write) -> None:
    fleet = {
        "groups": [{"profile": "pico", "count": 100}],
        "partition": {"kind": "dirichlet", "alpha": 0.01, "min_partition_size": 10},
    }
    path = write_scenario(tiny_scenario(fleet=fleet))

    with pytest.raises(FedsimError, match=r"fleet\.partition: Dirichlet\(alpha=0\.01\) could not"):
        plan(path)


def test_partition_spec_is_typed(write_scenario: Write) -> None:
    scenario = load_scenario(write_scenario(tiny_scenario()))

    assert isinstance(scenario.fleet.partition, DirichletPartition)
    assert scenario.fleet.partition.alpha == 1.0
