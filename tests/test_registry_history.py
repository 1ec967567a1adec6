"""``fedsim registry history --run ID``: a run the registry does not hold is an error that names
the runs it holds, not an empty answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

RUNS = """\
@prefix fedsim: <https://w3id.org/fedsim/vocab#> .
@prefix run: <https://w3id.org/fedsim/run/> .
run:lab-1 a fedsim:Run ; fedsim:runId "lab-1" .
run:lab-2 a fedsim:Run ; fedsim:runId "lab-2" .
"""


def _history(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    return run_cli(capsys, "registry", "history", *args)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    path = tmp_path / "runs.ttl"
    path.write_text(RUNS, encoding="utf-8")
    return path


def test_an_unknown_run_names_the_known_ones(
    capsys: pytest.CaptureFixture[str], runs: Path
) -> None:
    code, out, err = _history(capsys, "--run", "lab-3", "--data", runs)

    assert code == 2
    assert out == ""
    assert err.strip() == (
        "error: --run lab-3: no such run in the registry (2 runs: lab-1, lab-2) "
        "(did you mean 'lab-2'?); give one of these run ids (a run folder's name)"
    )


def test_a_registry_without_runs_says_how_to_give_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _history(capsys, "--run", "lab-1")

    assert code == 2
    assert "--run lab-1: the registry holds no runs; give --data RUN_DIR/participation.ttl" in err


def test_a_known_run_that_saw_no_devices_is_an_answer(
    capsys: pytest.CaptureFixture[str], runs: Path
) -> None:
    code, out, err = _history(capsys, "--run", "lab-1", "--data", runs, "--format", "json")

    assert code == 0, err
    assert out.strip() == "[]"
