"""The traps a new user hit (issue 26, item 7), each pinned: validate's warnings, the run folder's
copy of its scenario, the report's final metrics and comparison page, bands and ticks of the
plots, the device timeline, and Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedsim.cli.run import check
from fedsim.core.errors import ExitCode
from tests.conftest import SCENARIOS
from tests.test_cli import fedsim

Write = Callable[..., Path]


def _skipping_fleet(write_scenario: Write) -> Path:
    """The heterogeneous fleet with ``memory_policy: skip``: 16 of 40 devices cannot train."""
    shipped = SCENARIOS / "heterogeneous-fleet.yaml"
    return write_scenario(f"extends: {shipped}\nfleet:\n  memory_policy: skip\n")


def test_validate_warns_of_groups_that_never_train(write_scenario: Write) -> None:
    _, warnings = check(_skipping_fleet(write_scenario))

    assert [w.split(": ")[1] for w in warnings] == [
        "fleet.groups[0] (nano33-ble-sense)",
        "fleet.groups[1] (pico)",
    ]
    assert all("8 of 40 devices will never train" in w for w in warnings)
    assert "training footprint (305 KB)" in warnings[0]


def test_validate_warns_of_groups_the_deadline_always_cuts() -> None:
    _, warnings = check(SCENARIOS / "heterogeneous-fleet.yaml")  # head-only: they train

    cut = [w for w in warnings if "always cut" in w]
    assert cut
    assert "fleet.groups[0] (nano33-ble-sense): 8 of 40 devices are always cut" in cut[0]
    assert "past the deadline (12 s)" in cut[0]


def test_validate_prints_warnings_on_stderr_and_strict_fails_on_them(
    write_scenario: Write,
) -> None:
    path = _skipping_fleet(write_scenario)

    lenient, strict = fedsim("validate", path), fedsim("validate", "--strict", path)
    clean = fedsim("validate", "--strict", SCENARIOS / "quickstart.yaml")

    assert lenient.returncode == 0
    assert lenient.stdout.startswith(f"{path}: ok")
    warned = lenient.stderr.splitlines()
    assert warned
    assert all(line.startswith("warning: ") for line in warned)
    assert "will never train" in lenient.stderr
    assert strict.returncode == ExitCode.BAD_INPUT
    assert strict.stderr == lenient.stderr
    assert clean.returncode == 0, clean.stderr
    assert clean.stderr == ""
