"""Every shipped scenario, cut short, still writes its golden rounds.jsonl, devices.csv and model
in both execution modes (issue 22). A failure means results changed: find out why before
re-recording (``python -m tests.golden record CASE``; see tests/golden.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden import CASES, MODES, SCENARIOS, Mode, differences, read_golden, run_case

# The slowest cases (10-15 s a mode on 2 busy cores) whose algorithm and code paths a faster case in
# the gate already covers: every algorithm kind and the gateway topology stay in the gate.
SLOW = {
    "omniglot-tinyreptile",  # kanjivg-tinyreptile: the same scenario on other characters
    "sine-tinyreptile",  # har-, kanjivg-, kws-, presence-tinyreptile
    "omniglot-prototypes",  # kanjivg-prototypes: the same Conv-4 encoder path
    "mnist-mixed-20-clients",  # mnist-mixed-fedins with more clients
}


def _params() -> list[object]:
    marks = {name: [pytest.mark.slow] if name in SLOW else [] for name in CASES}
    return [
        pytest.param(name, mode, id=f"{name}-{mode}", marks=marks[name])
        for name in CASES
        for mode in MODES
    ]


def test_every_shipped_scenario_has_a_golden_case() -> None:
    shipped = {p.relative_to(SCENARIOS).as_posix() for p in SCENARIOS.rglob("*.yaml")}
    assert shipped == {case.scenario for case in CASES.values()}


@pytest.mark.parametrize(("name", "mode"), _params())
def test_a_shipped_scenario_writes_its_golden_files(name: str, mode: Mode, tmp_path: Path) -> None:
    golden = read_golden(name, mode)
    assert golden, f"no goldens for {name}: python -m tests.golden record {name}"

    now = run_case(name, mode, tmp_path)

    problems = differences(golden, now)
    assert not problems, f"{name} [{mode}] differs from tests/golden/{name}:\n" + "\n".join(
        problems
    )


def test_a_changed_run_is_reported_file_by_file(tmp_path: Path) -> None:
    golden = read_golden("quickstart", "cohort")

    now = run_case("quickstart", "cohort", tmp_path, seed=43)

    problems = "\n".join(differences(golden, now))
    assert "rounds.jsonl: line 1 differs" in problems
    assert "devices.csv: line 2 differs" in problems
    assert "\n  golden: {" in problems
    assert "\n  now:    {" in problems
    assert "model.sha256.json: tensors changed ['1.bias', '1.weight', '3.bias'" in problems
