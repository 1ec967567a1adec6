"""``fedsim new``: a scenario that validates (with the schema beside it for editors), and an
algorithm plugin package from the shipped template."""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.cli import new as new_cli
from fedsim.cli.new import ScenarioChoices, new_algorithm, new_scenario
from fedsim.core.algorithms import ALGORITHMS
from fedsim.core.errors import FedsimError
from fedsim.core.scenario_load import ScenarioError, load_scenario, with_changes
from fedsim.schema import schema_comment
from tests.conftest import ROOT


def fedsim(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, never at a terminal (no questions asked)."""
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def _choices(**changes: object) -> ScenarioChoices:
    values: dict[str, object] = {
        "name": "lab",
        "dataset": "digits",
        "model": "mlp",
        "algorithm": "fedavg",
        "profiles": ["rpi4:3", "pico:2"],
        "rounds": 4,
    }
    values.update(changes)
    return ScenarioChoices(**values)  # type: ignore[arg-type]


def test_new_scenario_writes_a_valid_commented_scenario_and_its_schema(tmp_path: Path) -> None:
    folder = tmp_path / "lab" / "fleets"  # made, parents and all, as run --out makes its folder
    proc = fedsim(
        "new", "scenario", "my-fleet", "--profile", "rpi4:3", "--profile", "pico:2",
        "--rounds", "4", "--out", folder,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    path = folder / "my-fleet.yaml"
    text = path.read_text("utf-8")
    assert text.splitlines()[0] == schema_comment("scenario.schema.json")
    scenario = load_scenario(path)
    assert [(g.profile, g.count) for g in scenario.fleet.groups] == [("rpi4", 3), ("pico", 2)]
    assert (scenario.rounds, scenario.algorithm.kind, scenario.task.dataset) == (
        4,
        "fedavg",
        "digits",
    )
    schema = json.loads((folder / "scenario.schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(text))
    assert f"fedsim validate {path}" in proc.stdout
    assert f"fedsim run {path}" in proc.stdout


@pytest.mark.parametrize("kind", ALGORITHMS.builtins())
def test_every_built_in_algorithm_gets_a_valid_scenario_or_says_which_option_to_change(
    tmp_path: Path, kind: str
) -> None:
    refused: ScenarioError | None = None
    try:
        path = new_scenario(_choices(algorithm=kind), tmp_path)
    except ScenarioError as exc:  # prototypes and fedins need their own dataset or model
        refused = exc
    if refused is not None:
        wrong = [
            e.line() for e in refused.errors if not e.where.startswith(("--dataset ", "--model "))
        ]
        assert wrong == []
        assert list(tmp_path.iterdir()) == []  # nothing written, no draft left behind
        return
    assert load_scenario(path).algorithm.kind == kind
    commented = [line for line in path.read_text().splitlines() if line.startswith("  # ")]
    fields = set(ALGORITHMS.get(kind).model_fields)
    assert all(line.split()[1].rstrip(":") in fields for line in commented)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"profiles": ["esp32-s4:2"]}, r"^--profile esp32-s4:2: unknown profile .*'esp32-s3'"),
        ({"profiles": ["rpi4"]}, r"^--profile rpi4: expected PROFILE:COUNT; e\.g\."),
        ({"profiles": ["rpi4:0"]}, r"^--profile rpi4:0: expected PROFILE:COUNT"),
        ({"name": "my fleet"}, r"^NAME 'my fleet': a scenario name becomes its results folder"),
        ({"name": ".."}, r"^NAME '\.\.'"),
        ({"dataset": "digitz"}, r"^--dataset: unknown dataset 'digitz'.*did you mean 'digits'"),
        ({"model": "mlpp"}, r"^--model: unknown model 'mlpp'"),
        ({"algorithm": "fedvag"}, r"^--algorithm: unknown algorithm 'fedvag'.*'fedavg'"),
        ({"rounds": 0}, r"^--rounds 0: a run has at least one round"),
    ],
)
def test_bad_input_is_one_located_error(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(FedsimError, match=message):
        new_scenario(_choices(**changes), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_scenario_is_kept_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text("mine\n")

    with pytest.raises(FedsimError, match=r"lab\.yaml: already exists; .* --force"):
        new_scenario(_choices(), tmp_path)
    assert (tmp_path / "lab.yaml").read_text() == "mine\n"

    new_scenario(_choices(), tmp_path, force=True)
    assert load_scenario(tmp_path / "lab.yaml").name == "lab"


def test_the_cli_exits_2_with_the_error_line(tmp_path: Path) -> None:
    proc = fedsim("new", "scenario", "x", "--profile", "esp32-s4:1", "--out", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --profile esp32-s4:1: unknown profile 'esp32-s4'")


def test_at_a_terminal_missing_values_are_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(new_cli, "_interactive", lambda: True)
    answers = "\n".join(["rpi4:2, esp32-s3:1", "", "", "fedprox", "3"]) + "\n"

    result = CliRunner().invoke(app, ["new", "scenario", "asked", "--out", str(tmp_path)], answers)

    assert result.exit_code == 0, result.output
    scenario = load_scenario(tmp_path / "asked.yaml")
    assert (scenario.fleet.size, scenario.algorithm.kind, scenario.rounds) == (3, "fedprox", 3)
    assert scenario.task.dataset == "digits"  # the default, taken with Enter


def test_new_algorithm_writes_a_package_whose_algorithm_loads_and_whose_scenario_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "fed-mom"

    written = new_algorithm("fed-mom", folder)

    assert {p.relative_to(folder).as_posix() for p in written} == {
        "README.md",
        "pyproject.toml",
        "fed_mom/__init__.py",
        "fed_mom/algorithm.py",
        "scenarios/fed-mom.yaml",
        "scenarios/scenario.schema.json",
        "tests/test_fed_mom.py",
    }
    text = "".join(p.read_text() for p in written)
    assert "{{" not in text
    assert 'fed-mom = "fed_mom.algorithm:FedMom"' in (folder / "pyproject.toml").read_text()
    for path in folder.rglob("*.py"):
        py_compile.compile(str(path), doraise=True)
    # the scenario as written passes the schema beside it (its kind is not installed yet)
    scenario = yaml.safe_load((folder / "scenarios" / "fed-mom.yaml").read_text())
    schema = json.loads((folder / "scenarios" / "scenario.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(scenario)
    # and fedsim runs its class by dotted path, before any install
    monkeypatch.syspath_prepend(str(folder))
    dotted = with_changes(scenario, {"algorithm.kind": "fed_mom.algorithm:FedMom"})
    path = tmp_path / "dotted.yaml"
    path.write_text(yaml.safe_dump(dotted))
    loaded = load_scenario(path)
    assert type(loaded.algorithm).__name__ == "FedMom"
    assert loaded.algorithm.server_lr(1, 8) == 0.5


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("FedMom", r"^NAME 'FedMom': an algorithm name is its kind"),
        ("9lives", r"^NAME '9lives'"),
        ("fedavg", r"^NAME 'fedavg': is a built-in algorithm"),
    ],
)
def test_new_algorithm_refuses_a_bad_name(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(FedsimError, match=message):
        new_algorithm(name, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_new_algorithm_keeps_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("mine")
    with pytest.raises(FedsimError, match=r"exists and is not empty; use --out, or --force"):
        new_algorithm("fedmom", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.slow
def test_the_scaffold_installs_and_its_own_tests_pass(tmp_path: Path) -> None:
    """As a user would: pip install it (into a folder of its own, not this environment), then
    run its tests with fedsim's pytest plugin."""
    folder, site = tmp_path / "fedmom", tmp_path / "site"
    new_algorithm("fedmom", folder)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(folder)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "FLWR_TELEMETRY_ENABLED": "0"}

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 passed" in proc.stdout


def test_new_algorithm_into_a_file_is_one_located_line(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    proc = fedsim("new", "algorithm", "fedmom", "--out", taken)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --out {taken}: is a file, not a folder; give a folder path (new or existing)"
    ]
