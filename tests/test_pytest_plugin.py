"""fedsim's pytest plugin (fedsim/pytest_plugin.py), tested as users meet it: test files run by
pytest in a fresh process, with the plugin loaded from its entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedsim.pytest_plugin import FedsimRun, assert_converges, small_scenario, with_changes
from tests.conftest import ROOT

HEADER = "from fedsim.pytest_plugin import assert_converges, assert_same_run, small_scenario\n"


GUIDE = ROOT / "docs" / "how-to" / "test-with-pytest.md"


def _guide_example() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(r"```python\n(# test_my_fleet\.py.*?)```", text, re.S)
    assert match, f"{GUIDE}: the example test file (```python # test_my_fleet.py) is missing"
    return match[1]


def test_the_guides_example_passes_as_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_my_fleet=_guide_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4)


def test_a_curve_that_never_gets_there_fails_with_the_curve(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + """
def test_too_ambitious(fedsim_run):
    run = fedsim_run(small_scenario(rounds=2), algorithm__lr=0.001)
    assert_converges(run, above=0.99, within=2)
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*accuracy never rose above 0.99 within 2 rounds*curve 1: *2: *"])


def test_runs_that_differ_are_told_apart_where_they_differ(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + """
def test_seeds(fedsim_run):
    assert_same_run(fedsim_run(small_scenario(seed=1)), fedsim_run(small_scenario(seed=2)))
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: round 1: *"])


def test_quick_deselects_slow_and_firmware_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest

@pytest.mark.slow
def test_slow(): pass

@pytest.mark.firmware
def test_firmware(): pass

def test_quick(): pass
"""
    )
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")  # the markers are registered
    assert pytester.runpytest_subprocess("-q").ret == 0
    result = pytester.runpytest_subprocess("-q", "--fedsim-quick")
    result.assert_outcomes(passed=1, deselected=2)


def test_a_scenario_file_with_changes_and_extends(fedsim_scenario, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    base = fedsim_scenario(small_scenario(), rounds=2)
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {base.name}\nseed: 9\n", encoding="utf-8")
    written = yaml.safe_load(fedsim_scenario(child, {"algorithm.lr": 0.5}).read_text())
    assert "extends" not in written  # merged: the copy in tmp stands alone
    assert (written["seed"], written["rounds"]) == (9, 2)
    assert written["algorithm"] == {**small_scenario()["algorithm"], "lr": 0.5}


def test_with_changes_refuses_a_path_through_a_value() -> None:
    with pytest.raises(KeyError, match=r"rounds\.x\.y: 'rounds' is not a mapping"):
        with_changes(small_scenario(), {"rounds.x.y": 1})


def test_the_fixture_runs_both_modes_to_the_same_run(fedsim_run) -> None:  # type: ignore[no-untyped-def]
    cohort: FedsimRun = fedsim_run(mode="cohort", rounds=2)
    per_device: FedsimRun = fedsim_run(mode="per-device", rounds=2)
    assert cohort.out != per_device.out
    assert cohort.rounds == per_device.rounds
    assert len(cohort.devices) == 2 * 5
    assert_converges(cohort, above=0.0)
    assert cohort.device_rows(0)[0]["device_id"] == "0"
